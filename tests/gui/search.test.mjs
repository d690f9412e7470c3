// tests/gui/search.test.mjs — the search box of the top bar in a real browser (Debian's chromium via
// playwright-core) against a real mbyted with the search module, started by
// tests/integration/test_gui_search.py. Env as for gui.test.mjs: MBYTE_URL, MBYTE_ADMIN_USER,
// MBYTE_ADMIN_PASSWORD, MBYTE_ARTIFACTS.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { URL, USER, PASS, ART, checkEnv, launchBrowser, newPage } from './browser.mjs';

checkEnv('tests/integration/test_gui_search.py');

let browser, page, token, sid;

async function call(method, path, body, type = 'application/octet-stream') {
    const r = await fetch(URL + '/api/v1' + path, { method, body, headers: { Authorization: 'Bearer ' + token, 'Content-Type': type } });
    return { status: r.status, body: r.headers.get('content-type')?.includes('json') ? await r.json() : await r.text() };
}

before(async () => {
    const login = await fetch(URL + '/api/v1/auth/login', { method: 'POST', body: JSON.stringify({ username: USER, password: PASS }) });
    token = (await login.json()).token;
    sid = (await call('GET', '/stores')).body[0].id;
    for (const [path, text] of [['travel/notes/itinerary.txt', 'Day two: the narwhal excursion leaves at dawn.'],
        ['travel/other.txt', 'Nothing to see here.'], ['recipes/soup.txt', 'Carrot soup with ginger.']]) {
        const r = await call('PUT', `/stores/${sid}/files/${path}?parents=true`, text);
        assert.ok(r.status === 201 || r.status === 200, JSON.stringify(r));
    }
    // indexing is asynchronous: wait until the API finds the file before the browser looks
    for (let i = 0; ; i++) {
        const r = await call('GET', '/search?q=narwhal');
        if (r.status === 200 && r.body.hits.length === 1) break;
        assert.ok(i < 300, 'the file was never indexed: ' + JSON.stringify(r));
        await new Promise(res => setTimeout(res, 100));
    }
    browser = await launchBrowser();
    ({ page } = await newPage(browser));
});

after(async () => { await browser?.close(); });

async function signIn(p, user = USER, pass = PASS) {
    await p.goto(URL + '/');
    await p.getByLabel('Username').fill(user);
    await p.getByLabel('Password').fill(pass);
    await p.getByRole('button', { name: 'Sign in' }).click();
    const box = p.getByRole('combobox', { name: 'Search files' });
    await box.waitFor();
    return box;
}

test('typing in the search box shows the hit with its snippet; a click opens its folder with it selected', async () => {
    const box = await signIn(page);
    await box.pressSequentially('narw', { delay: 40 }); // results as you type: a prefix is enough...
    await box.pressSequentially('hal', { delay: 40 });   // ...and the last request wins
    const hit = page.locator('.search-hit[data-path="travel/notes/itinerary.txt"]');
    await hit.waitFor();
    assert.equal(await page.locator('.search-hit').count(), 1);
    assert.equal(await hit.locator('mark').first().textContent(), 'narwhal');
    assert.match(await hit.locator('.search-hit-snippet').textContent(), /Day two: the narwhal excursion/);
    await page.screenshot({ path: join(ART, 'search-results.png') });
    // the type filter narrows: this file is text, not a PDF
    await page.getByRole('combobox', { name: 'Type' }).selectOption('pdf');
    await page.locator('.search-note', { hasText: 'No file matches.' }).waitFor();
    await page.getByRole('combobox', { name: 'Type' }).selectOption('');
    await hit.waitFor();
    await hit.click();
    const row = page.locator('table.files tbody tr[data-path="travel/notes/itinerary.txt"]');
    await row.waitFor();
    assert.match(await row.getAttribute('class'), /\bselected\b/);
    assert.equal(await page.evaluate(() => decodeURIComponent(location.hash)), `#/files/${sid}/travel/notes`);
    assert.equal(await page.locator('.search-panel').isVisible(), false);
    await page.screenshot({ path: join(ART, 'search-opened.png') });
});

test('at phone width the search box fits the top bar and its results span the screen', async () => {
    const ctx = await browser.newContext({ viewport: { width: 390, height: 844 }, deviceScaleFactor: 2, hasTouch: true });
    const p = await ctx.newPage();
    const box = await signIn(p);
    assert.ok(await p.evaluate(() => document.documentElement.scrollWidth <= window.innerWidth + 1), 'the top bar sticks out');
    assert.ok(await p.getByRole('button', { name: /^Account: / }).isVisible());
    await box.fill('narwhal');
    const hit = p.locator('.search-hit[data-path="travel/notes/itinerary.txt"]');
    await hit.waitFor();
    const r = await p.locator('.search-panel').boundingBox();
    assert.ok(r.x >= 0 && r.x + r.width <= 390, JSON.stringify(r));
    await p.screenshot({ path: join(ART, 'search-phone.png') });
    await ctx.close();
});

test('a hit found through a share opens through the share, at its folder with the file marked', async () => {
    const r = await call('POST', '/admin/users', JSON.stringify({ username: 'gina', password: 'gina-password-1', role: 'user' }),
        'application/json');
    assert.equal(r.status, 201, JSON.stringify(r));
    const sh = await call('POST', `/stores/${sid}/shares`, JSON.stringify({ type: 'user', user: 'gina', path: 'travel', permission: 'view' }),
        'application/json');
    assert.equal(sh.status, 201, JSON.stringify(sh));
    const ctx = await browser.newContext({ viewport: { width: 1366, height: 860 } });
    const p = await ctx.newPage();
    p.on('pageerror', e => console.log('# page error:', e.message));
    const box = await signIn(p, 'gina', 'gina-password-1');
    await box.fill('narwhal');
    const hit = p.locator('.search-hit[data-path="travel/notes/itinerary.txt"]');
    await hit.waitFor();
    assert.match(await hit.locator('.search-hit-where').textContent(), /^shared · /);
    const before = await p.evaluate(() => location.hash);
    await hit.click();
    const dlg = p.getByRole('dialog', { name: 'Shared with me' });
    const row = dlg.locator('table.share-listing tbody tr[data-path="notes/itinerary.txt"]');
    await row.waitFor();
    assert.match(await row.getAttribute('class'), /\bselected\b/);
    assert.equal(await dlg.locator('[aria-current="page"]').textContent(), 'notes');
    assert.equal(await dlg.locator('.error-state').count(), 0);
    assert.equal(await p.evaluate(() => location.hash), before); // not the owner's store, which gina cannot open
    await p.screenshot({ path: join(ART, 'search-shared-opened.png') });
    await ctx.close();
});
