// tests/gui/migrate.test.mjs — storage backends and a store's placement in the web page, in a real
// browser (Debian's chromium via playwright-core), against a real mbyted with one WebDAV backend
// "dav", started by tests/integration/test_gui_migrate.py. Administration > Storage lists local; the
// admin declares dav there ("Add a backend": a typed-in password is refused, a reference taken), and
// it is listed with its type, state, objects and stores; the store
// settings say where the files are kept; "Move the store" to dav shows a task toast, then a
// success toast, and the reopened settings, the API and every file agree. Env as for gui.test.mjs.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { URL, USER, PASS, ART, checkEnv, launchBrowser, newPage, signIn, until } from './browser.mjs';

checkEnv('tests/integration/test_gui_migrate.py');

let browser, page, token, sid;
const files = {};

async function call(method, path, body, type = 'application/json') {
    const r = await fetch(URL + '/api/v1' + path, { method, body, headers: { Authorization: 'Bearer ' + token, 'Content-Type': type } });
    return { status: r.status, body: r.headers.get('content-type')?.includes('json') ? await r.json() : Buffer.from(await r.arrayBuffer()) };
}

const random = n => { const b = Buffer.alloc(n); for (let i = 0; i < n; i++) b[i] = (i * 7919 + n) % 251; return b; };

before(async () => {
    const login = await fetch(URL + '/api/v1/auth/login', { method: 'POST', body: JSON.stringify({ username: USER, password: PASS }) });
    token = (await login.json()).token;
    const r = await call('POST', '/stores', JSON.stringify({ name: 'Photos' }));
    assert.equal(r.status, 202, JSON.stringify(r.body));
    sid = r.body.store;
    await until(async () => (await call('GET', '/tasks/' + r.body.task)).body.state === 'done', 'the store', 600);
    for (const [name, n] of [['a.bin', 300000], ['b.bin', 310000], ['c.bin', 5 * 1024 * 1024], ['small.txt', 40]]) {
        files[name] = random(n);
        assert.equal((await call('PUT', `/stores/${sid}/files/${name}`, files[name], 'application/octet-stream')).status, 201);
    }
    browser = await launchBrowser();
    ({ page } = await newPage(browser));
});

after(async () => { await browser?.close(); });

test('the admin sees the backends; a store is moved to WebDAV from its settings', async () => {
    await signIn(page);

    // Administration > Storage: only local at first; "Add a backend" declares dav, the WebDAV server
    await page.goto(URL + '/#/admin/backends');
    const table = page.getByRole('table', { name: 'Storage backends' });
    await table.waitFor();
    const local = table.locator('tr[data-backend="local"]'), dav = table.locator('tr[data-backend="dav"]');
    assert.equal(await dav.count(), 0, 'no backend but local before one is declared');
    await page.getByRole('button', { name: 'Add a backend' }).click();
    const add = page.getByRole('dialog', { name: 'Add a backend' });
    await add.getByLabel('Name').fill('dav');
    assert.equal(await add.getByLabel('Type').inputValue(), 'webdav', 'the loaded backend module is offered first');
    await add.getByLabel('URL').fill(process.env.MBYTE_TEST_DAV_URL);
    await add.getByLabel('User').fill(process.env.MBYTE_TEST_DAV_USER);
    await add.getByLabel('Password').fill('the-password-itself');
    await add.getByLabel('Prefix').fill(process.env.MBYTE_TEST_DAV_PREFIX || '');
    await add.getByRole('button', { name: 'Add backend' }).click();
    // a secret typed in is refused on its field: the page keeps references only
    const perr = add.locator('.field-error');
    await perr.waitFor();
    assert.match(await perr.textContent(), /settings\.password: a reference/);
    assert.equal(await add.getByLabel('Password').getAttribute('aria-invalid'), 'true');
    await page.screenshot({ path: join(ART, 'backend-add-refused.png') });
    await add.getByLabel('Password').fill('env:MBYTE_TEST_DAV_PASSWORD');
    await add.getByRole('button', { name: 'Add backend' }).click();
    await page.locator('.toast-success', { hasText: 'Backend dav was added.' }).waitFor();
    await add.waitFor({ state: 'detached' });
    await dav.waitFor();
    assert.match(await dav.textContent(), /declared here/);
    assert.equal(await dav.getByRole('button', { name: 'Remove dav' }).count(), 1, 'an empty backend of the page can go');
    const listed = (await call('GET', '/admin/backends')).body.find(b => b.name === 'dav');
    assert.deepEqual([listed.type, listed.state, listed.declared], ['webdav', 'up', 'page']);
    assert.match(await local.textContent(), /local.*up/);
    assert.match(await dav.textContent(), /webdav/);
    assert.equal(await dav.locator('.badge').textContent(), 'up');
    assert.equal((await dav.locator('td').nth(6).textContent()).trim(), '0', 'no store on dav yet');
    assert.match(await page.locator('.backends-note').textContent(), /webdav\.yaml.*backends:/);
    await page.screenshot({ path: join(ART, 'migrate-backends.png') });

    // the store's settings: where its files are kept, and the move
    await page.goto(URL + `/#/files/${sid}`);
    await page.getByRole('button', { name: 'Store settings' }).click();
    const dlg = page.getByRole('dialog', { name: 'Settings of Photos' });
    const now = dlg.locator('.placement-now');
    assert.equal(await now.textContent(), 'the local disk, not encrypted');
    const target = dlg.getByLabel('Move to');
    await until(async () => (await target.locator('option').count()) === 2, 'the backends in the list', 600);
    assert.deepEqual(await target.locator('option').allTextContents(), ['local disk', 'dav (webdav)']);
    await target.selectOption('dav');
    await dlg.getByRole('button', { name: 'Move the store' }).click();
    // a task toast follows the migration; then the success toast
    await page.locator('.toast-success', { hasText: 'Photos was moved to dav, not encrypted.' }).waitFor({ timeout: 60000 });
    assert.equal(await now.textContent(), 'dav, not encrypted');
    await dlg.locator('.placement-moving').waitFor({ state: 'detached' });
    await page.screenshot({ path: join(ART, 'migrate-moved.png') });
    await dlg.getByRole('button', { name: 'Cancel' }).click();
    await dlg.waitFor({ state: 'detached' });

    // reopened: the settings say dav and nothing is moving; the API and the files agree
    await page.getByRole('button', { name: 'Store settings' }).click();
    assert.equal(await dlg.locator('.placement-now').textContent(), 'dav, not encrypted');
    assert.equal(await dlg.locator('.placement-moving').count(), 0);
    await dlg.getByRole('button', { name: 'Cancel' }).click();
    const cfg = await call('GET', `/stores/${sid}/config`);
    assert.deepEqual(cfg.body.placement, { backend: 'dav', encrypt: false });
    for (const [name, data] of Object.entries(files)) {
        const r = await call('GET', `/stores/${sid}/files/${name}`);
        assert.equal(r.status, 200, name);
        assert.ok(Buffer.compare(r.body, data) === 0, name + ' reads back identical');
    }
    // the Storage tab now counts the store on dav and its objects
    await page.goto(URL + '/#/admin/backends');
    await table.waitFor();
    await until(async () => (await dav.locator('td').nth(6).textContent()).trim() === '1', 'one store on dav', 600);
    assert.ok(Number(await dav.locator('td').nth(3).textContent()) >= 4, 'dav holds the chunks');
    assert.equal(await dav.getByRole('button', { name: 'Remove dav' }).count(), 0, 'a backend holding a store stays');
    const gone = await call('DELETE', '/admin/backends/dav');
    assert.equal(gone.status, 409);
    assert.match(gone.body.detail, /1 store\(s\) keep files on backend 'dav'/);
});

test('a user sees where the files of a store are kept, and cannot move it', async () => {
    const u = await call('POST', '/admin/users', JSON.stringify({ username: 'ann', password: 'ann-password-1', role: 'user' }));
    assert.ok(u.status === 201 || u.status === 200, JSON.stringify(u.body));
    const { context, page: p } = await newPage(browser);
    await signIn(p, 'ann', 'ann-password-1');
    await p.getByRole('button', { name: 'Store settings' }).click();
    const dlg = p.getByRole('dialog', { name: /^Settings of/ });
    assert.equal(await dlg.locator('.placement-now').textContent(), 'the local disk, not encrypted');
    assert.equal(await dlg.getByRole('button', { name: 'Move the store' }).count(), 0);
    await context.close();
});
