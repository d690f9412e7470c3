// tests/gui/scale.test.mjs — a folder of 20,000 files in the web page (issue 27), in a real browser
// (Debian's chromium via playwright-core) against a real mbyted started by
// tests/integration/test_gui_scale.py. Env as for gui.test.mjs: MBYTE_URL, MBYTE_ADMIN_USER,
// MBYTE_ADMIN_PASSWORD, MBYTE_ARTIFACTS. What a person sees: the first rows at once, the rows of
// wherever they scroll to (pages fetched on the way), and never more than a bounded number of rows
// in the page; "select all" counts the whole folder.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { URL, USER, PASS, ART, checkEnv, launchBrowser, newPage } from './browser.mjs';

checkEnv('tests/integration/test_gui_scale.py');

const N = 20000, ROWS_BOUND = 200;
const name = i => 'f' + String(i).padStart(5, '0') + '.txt';
let browser, page, token, sid;

async function call(method, path, body) {
    const r = await fetch(URL + '/api/v1' + path, { method, body, headers: { Authorization: 'Bearer ' + token } });
    return { status: r.status, body: r.headers.get('content-type')?.includes('json') ? await r.json() : await r.text() };
}

before(async () => {
    const login = await fetch(URL + '/api/v1/auth/login', { method: 'POST', body: JSON.stringify({ username: USER, password: PASS }) });
    token = (await login.json()).token;
    sid = (await call('GET', '/stores')).body[0].id;
    let next = 0;
    const worker = async () => {
        for (let i; (i = next++) < N;) {
            const r = await call('PUT', `/stores/${sid}/files/big/${name(i)}?parents=true`, 'x' + i);
            assert.ok(r.status === 201, JSON.stringify(r));
        }
    };
    await Promise.all(Array.from({ length: 16 }, worker));
    assert.equal((await call('GET', `/stores/${sid}/list/big?limit=1`)).body.total, N);
    browser = await launchBrowser();
    ({ page } = await newPage(browser, { timeout: 30000 }));
});

after(async () => { await browser?.close(); });

const rows = () => page.locator('table.files tbody tr[data-path]').count();
const row = i => page.locator(`table.files tbody tr[data-path="big/${name(i)}"]`);

test('a folder of 20,000 files scrolls through every part with a bounded number of rows', async () => {
    await page.goto(URL + '/');
    await page.getByLabel('Username').fill(USER);
    await page.getByLabel('Password').fill(PASS);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.locator('table.files').waitFor();
    await page.goto(`${URL}/#/files/${sid}/big`);
    await row(0).waitFor();
    assert.ok(await rows() <= ROWS_BOUND, `rows at the top: ${await rows()}`);
    // the scroll bar stands for the whole folder: the page is about N rows high
    const height = await page.evaluate(() => document.documentElement.scrollHeight);
    assert.ok(height > N * 30, 'page height ' + height);
    // a jump down the scroll bar fetches what it needs in one request, not every page on the way
    let lists = 0;
    page.on('request', r => { if (r.url().includes('/list/big')) lists++; });
    // the middle: rows there appear (their page fetched), and only a window of them exists
    await page.evaluate(() => window.scrollTo(0, document.documentElement.scrollHeight / 2));
    const shownIndex = () => page.evaluate(() => {
        const r = document.querySelector('table.files tbody tr[data-path]');
        return r ? Number(/f(\d+)\.txt$/.exec(r.dataset.path)[1]) : -1;
    });
    await page.waitForFunction(() => {
        const r = document.querySelector('table.files tbody tr[data-path]');
        return r && Number(/f(\d+)\.txt$/.exec(r.dataset.path)[1]) > 5000;
    });
    const mid = await shownIndex();
    assert.ok(mid > 5000 && mid < 15000, 'the rows shown in the middle start at ' + mid);
    assert.ok(lists <= 2, `listing requests to reach the middle: ${lists}`);
    // and the row at the viewport's middle is really on screen
    const y = await page.locator('table.files tbody tr[data-path]').nth(40).evaluate(el => el.getBoundingClientRect().top);
    assert.ok(y > -200 && y < 1060, 'a rendered row is near the viewport: ' + y);
    assert.ok(await rows() <= ROWS_BOUND, `rows in the middle: ${await rows()}`);
    assert.equal(await row(0).count(), 0, 'the first row left the page');
    await page.screenshot({ path: join(ART, 'scale-middle.png') });
    // "select all" is the whole folder, not the rows loaded so far; sorting a folder loaded in part
    // by size is refused in the page (name order stays)
    assert.equal(await page.locator('th[data-key="size"] button').isDisabled(), true);
    await page.getByRole('checkbox', { name: 'Select all' }).check();
    await page.locator('.sel-count', { hasText: 'All 20,000 selected' }).waitFor();
    // drawn again, the page keeps the whole folder's height at once (an empty table until the next
    // frame shrank it, and a scroll then threw the reader back to the top)
    const heightNow = await page.getByRole('button', { name: 'Clear selection' })
        .evaluate(b => { b.click(); return document.documentElement.scrollHeight; });
    assert.ok(heightNow > N * 30, 'page height right after drawing again: ' + heightNow);
    // the end: the last file shows up, still in a bounded page
    lists = 0;
    await page.evaluate(() => window.scrollTo(0, document.documentElement.scrollHeight));
    await row(N - 1).waitFor();
    assert.ok(lists <= 2, `listing requests to reach the end: ${lists}`);
    await page.evaluate(() => window.scrollTo(0, document.documentElement.scrollHeight)); // after the last page
    assert.ok(await rows() <= ROWS_BOUND, `rows at the end: ${await rows()}`);
    assert.equal(await page.locator('table.files tbody tr').count() <= ROWS_BOUND + 2, true);
    await page.screenshot({ path: join(ART, 'scale-end.png') });
});

test('"select all" then Delete is one request, and the task puts the whole folder in the trash', async () => {
    let bulk = 0, deletes = 0, sent = null;
    page.on('request', r => {
        if (r.method() === 'POST' && r.url().endsWith(`/stores/${sid}/bulk`)) { bulk++; sent = r.postDataJSON(); }
        if (r.method() === 'DELETE') deletes++;
    });
    await page.reload(); // loaded in part again: only the first page is in the page
    await row(0).waitFor();
    await page.getByRole('checkbox', { name: 'Select all' }).check();
    await page.locator('.sel-count', { hasText: 'All 20,000 selected' }).waitFor();
    await page.getByRole('toolbar', { name: 'Selected items' }).getByRole('button', { name: 'Delete' }).click();
    await page.getByRole('dialog').getByRole('button', { name: 'Move to trash' }).click();
    // a task toast with its progress, then the end of the task
    await page.locator('.toast-task', { hasText: 'Deleted 20,000 items' }).waitFor();
    await page.locator('.toast', { hasText: 'Deleted 20,000 items.' }).waitFor({ timeout: 400000 });
    assert.equal(bulk, 1, 'bulk requests');
    assert.deepEqual(sent, { op: 'delete', folder: 'big', except: [] });
    assert.equal(deletes, 0, 'one DELETE per entry was sent');
    await page.getByText('This folder is empty').waitFor();
    await page.screenshot({ path: join(ART, 'scale-deleted.png') });
    assert.equal((await call('GET', `/stores/${sid}/list/big?limit=1`)).body.total, 0);
    const trash = (await call('GET', `/stores/${sid}/trash`)).body.items;
    assert.equal(trash.length, N);
    assert.ok(trash.some(t => t.path === `big/${name(12345)}`));
});
