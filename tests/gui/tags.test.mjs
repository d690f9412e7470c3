// tests/gui/tags.test.mjs — tags in the web page in a real browser (Debian's chromium via
// playwright-core) against a real mbyted with the tags module, started by
// tests/integration/test_gui_tags.py: chips on the rows, filtering by a chip and by typed names
// (AND, NOT), "Tags…" on several selected files, a suggestion accepted in the tags & rules dialog,
// and a rule saved, tested and dry-run there. Env as for gui.test.mjs.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { URL, USER, PASS, ART, checkEnv, launchBrowser, newPage, until } from './browser.mjs';

checkEnv('tests/integration/test_gui_tags.py');

let browser, page, token, sid;

async function call(method, path, body, type = 'application/json') {
    const r = await fetch(URL + '/api/v1' + path, { method, body, headers: { Authorization: 'Bearer ' + token, 'Content-Type': type } });
    return { status: r.status, body: r.headers.get('content-type')?.includes('json') ? await r.json() : await r.text() };
}

const tagsOf = async path => (await call('GET', `/stores/${sid}/tags/${path}`)).body.tags;

before(async () => {
    const login = await fetch(URL + '/api/v1/auth/login', { method: 'POST', body: JSON.stringify({ username: USER, password: PASS }) });
    token = (await login.json()).token;
    sid = (await call('GET', '/stores')).body[0].id;
    for (const name of ['a.txt', 'b.txt', 'c.txt']) {
        const r = await call('PUT', `/stores/${sid}/files/box/${name}?parents=true`, 'text of ' + name, 'application/octet-stream');
        assert.ok(r.status === 201 || r.status === 200, JSON.stringify(r));
    }
    assert.equal((await call('POST', `/stores/${sid}/tags/box/a.txt`, JSON.stringify({ add: ['red'] }))).status, 200);
    assert.equal((await call('POST', `/stores/${sid}/tags/box/b.txt`, JSON.stringify({ add: ['red', 'blue'] }))).status, 200);
    // a rule that suggests "report" for files named report*, then such a file
    const rule = 'function rule(f) if f.name:find("^report") then return {suggest = {{tag = "report", reason = "named report"}}} end end';
    assert.equal((await call('PUT', `/stores/${sid}/rules/reports`, rule, 'text/x-lua')).status, 201);
    await call('PUT', `/stores/${sid}/files/box/report.txt`, 'quarterly', 'application/octet-stream');
    await until(async () => (await call('GET', `/stores/${sid}/suggestions`)).body.length === 1, 'the suggestion');
    browser = await launchBrowser();
    ({ page } = await newPage(browser));
});

after(async () => { await browser?.close(); });

const rows = async () => (await page.locator('table.files tbody tr[data-path]').evaluateAll(trs => trs.map(t => t.dataset.path))).sort();

test('chips, filters, tagging several files, a suggestion and a rule in a real browser', async () => {
    await page.goto(URL + '/');
    await page.getByLabel('Username').fill(USER);
    await page.getByLabel('Password').fill(PASS);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.goto(URL + `/#/files/${sid}/box`);
    const rowB = page.locator('tr[data-path="box/b.txt"]');
    await rowB.locator('.tag-chip[data-tag="blue"]').waitFor();
    assert.deepEqual(await rowB.locator('.tag-chip').allTextContents(), ['red', 'blue']);
    assert.deepEqual(await page.locator('tr[data-path="box/a.txt"] .tag-chip').allTextContents(), ['red']);
    await page.screenshot({ path: join(ART, 'tags-chips.png') });

    // a click on a chip filters by it
    await rowB.locator('.tag-chip[data-tag="blue"]').click();
    await until(async () => JSON.stringify(await rows()) === JSON.stringify(['box/b.txt']), 'the blue filter');
    await page.getByRole('button', { name: 'Remove filter blue' }).click();
    await until(async () => (await rows()).length === 4, 'the filter removed');
    // typed: red AND NOT blue
    const input = page.getByLabel('Filter by tag');
    await input.fill('red');
    await input.press('Enter');
    await until(async () => JSON.stringify(await rows()) === JSON.stringify(['box/a.txt', 'box/b.txt']), 'red');
    await page.getByLabel('Filter by tag').fill('-blue');
    await page.getByLabel('Filter by tag').press('Enter');
    await until(async () => JSON.stringify(await rows()) === JSON.stringify(['box/a.txt']), 'red and not blue');
    await page.screenshot({ path: join(ART, 'tags-filter.png') });
    await page.getByRole('button', { name: 'Remove filter red' }).click();
    await page.getByRole('button', { name: 'Remove filter blue' }).click();
    await until(async () => (await rows()).length === 4, 'no filter');

    // "Tags…" on two selected files
    await page.getByLabel('Select a.txt').check();
    await page.getByLabel('Select c.txt').check();
    await page.getByRole('button', { name: 'Tags…' }).click();
    await page.getByLabel('Add tags').fill('green, Urgent');
    await page.getByRole('button', { name: 'Apply' }).click();
    await page.locator('tr[data-path="box/c.txt"] .tag-chip[data-tag="Urgent"]').waitFor();
    assert.deepEqual(await tagsOf('box/a.txt'), ['red', 'green', 'Urgent']);
    assert.deepEqual(await tagsOf('box/c.txt'), ['green', 'Urgent']);
    assert.deepEqual(await tagsOf('box/b.txt'), ['red', 'blue']);

    // the details panel: remove one tag, add another
    await page.locator('tr[data-path="box/c.txt"] .name-link').click();
    await page.getByRole('button', { name: 'Remove tag green' }).click();
    await until(async () => JSON.stringify(await tagsOf('box/c.txt')) === JSON.stringify(['Urgent']), 'green removed');
    await page.getByLabel('Add a tag to c.txt').fill('later');
    await page.getByLabel('Add a tag to c.txt').press('Enter');
    await until(async () => JSON.stringify(await tagsOf('box/c.txt')) === JSON.stringify(['Urgent', 'later']), 'later added');
    await page.locator('tr[data-path="box/c.txt"] .tag-chip[data-tag="later"]').waitFor();
    await page.getByRole('button', { name: 'Close details' }).click();

    // the suggestion, accepted in the dialog
    await page.getByRole('button', { name: 'Tags & rules' }).click();
    const sug = page.locator('.tag-suggestion[data-path="box/report.txt"]');
    await sug.waitFor();
    assert.match(await sug.textContent(), /reports: named report/);
    await sug.getByRole('button', { name: 'Accept' }).click();
    await page.locator('.tags-pane', { hasText: 'No suggestions.' }).waitFor();
    assert.deepEqual(await tagsOf('box/report.txt'), ['report']);

    // a rule: a syntax error is shown with its line, then saved, tested and dry-run
    await page.getByRole('tab', { name: 'Rules' }).click();
    await page.getByLabel('Rule name').fill('texts');
    await page.getByLabel('Rule source (Lua)').fill('function rule(f)\n  return {apply = {"text"}\n');
    await page.getByRole('button', { name: 'Save rule' }).click();
    await page.locator('.rule-output', { hasText: 'texts.lua:3:' }).waitFor();
    await page.getByLabel('Rule source (Lua)').fill('function rule(f)\n  if f.extension == "txt" then return {apply = {"text"}} end\nend\n');
    await page.getByRole('button', { name: 'Save rule' }).click();
    await page.locator('tr[data-rule="texts"]').waitFor();
    assert.match(await page.getByLabel('Rule source (Lua)').inputValue(), /f.extension == "txt"/); // what was saved stays
    await page.getByLabel('File to test on').fill('box/a.txt');
    await page.getByRole('button', { name: 'Test' }).click();
    await page.locator('.rule-output .tag-chip', { hasText: 'text' }).waitFor();
    await page.getByRole('button', { name: 'Dry run on /box' }).click();
    await page.locator('.rule-output', { hasText: 'Dry run: 4 files, 4 with tags.' }).waitFor();
    await page.screenshot({ path: join(ART, 'tags-rules.png') });
    assert.deepEqual(await tagsOf('box/c.txt'), ['Urgent', 'later']); // the dry run changed nothing
});
