// tests/gui/gui.test.mjs — MByte's web page in a real browser (Debian's chromium, headless,
// driven by playwright-core) against a real mbyted started by tests/integration/test_gui.py.
//
// Env: MBYTE_URL, MBYTE_ADMIN_USER, MBYTE_ADMIN_PASSWORD, MBYTE_ARTIFACTS (screenshots go there).
// Each scenario is what a person does and sees: the assertions read the page (rows, progress bars,
// messages) and the bytes a download hands back. Scenarios for modules this server does not have
// are not registered at all; the run prints which ones ran.
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { launchBrowser } from './browser.mjs';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, writeFileSync, readFileSync, rmSync, mkdirSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PARTS } from '../../web/js/modules.js';

const URL = process.env.MBYTE_URL;
const USER = process.env.MBYTE_ADMIN_USER || 'admin';
const PASS = process.env.MBYTE_ADMIN_PASSWORD;
const ART = process.env.MBYTE_ARTIFACTS || join(tmpdir(), 'mbyte-gui-artifacts');
assert.ok(URL && PASS, 'MBYTE_URL and MBYTE_ADMIN_PASSWORD must be set (tests/integration/test_gui.py does)');
mkdirSync(ART, { recursive: true });

const sha256 = buf => createHash('sha256').update(buf).digest('hex');
const tmp = mkdtempSync(join(tmpdir(), 'mbyte-gui-'));

// ------------------------------------------------------------ what the server has ---
// Asked before the scenarios are registered, so only what the server supports is tested.
async function probe() {
    // Strangers learn only that the server is up; the admin's health names the modules.
    const anon = await (await fetch(URL + '/api/v1/health')).json();
    assert.deepEqual(anon, { status: 'ok' }, 'the public health says no more than that');
    const login = await fetch(URL + '/api/v1/auth/login', {
        method: 'POST', body: JSON.stringify({ username: USER, password: PASS }),
    });
    const { token } = await login.json();
    const health = await (await fetch(URL + '/api/v1/health', { headers: { Authorization: 'Bearer ' + token } })).json();
    const active = new Set(health.modules.filter(m => m.state === 'active').map(m => m.name));
    const auth = { Authorization: 'Bearer ' + token };
    const status = async (method, path) => (await fetch(URL + path, { method, headers: auth })).status;
    const caps = {
        token, active,
        files: (await status('GET', '/api/v1/stores')) === 200,
        tus: (await status('OPTIONS', '/api/v1/uploads')) < 300,
        moduleAdmin: (await status('GET', '/api/v1/admin/modules')) === 200,
        partOn: part => PARTS[part].every(m => active.has(m)),
    };
    return caps;
}
const caps = await probe();
const ran = [];

// Scenarios are registered only for what the server has, so a module that failed to load would
// silently take its scenarios with it. The shipped configuration (conf.d/<module>.yaml for each
// module in modules/, and the modules conf.d/mbyte.yaml turns on) must therefore all be active.
function shippedModules() {
    const root = new globalThis.URL('../../', import.meta.url).pathname;
    const mods = new Set(readdirSync(join(root, 'modules'), { withFileTypes: true })
        .filter(d => d.isDirectory()).map(d => d.name));
    const out = new Set(readdirSync(join(root, 'conf.d')).filter(f => f.endsWith('.yaml'))
        .map(f => f.slice(0, -5)).filter(n => mods.has(n)));
    const lines = readFileSync(join(root, 'conf.d', 'mbyte.yaml'), 'utf8').split('\n');
    let i = lines.findIndex(l => /^modules:/.test(l)) + 1;
    for (; i > 0 && i < lines.length && /^(\s|#|$)/.test(lines[i]); i++) { // the indented block under modules:
        const m = /^\s+([a-z0-9_-]+):\s*true\b/.exec(lines[i]);
        if (m) out.add(m[1]);
        // off because it needs a service outside the machine (vault: a Vault server): not expected here
        const off = /^\s+([a-z0-9_-]+):\s*false\b.*#.*\bneeds\b/.exec(lines[i]);
        if (off) out.delete(off[1]);
    }
    return [...out].sort();
}

test('every module of the shipped configuration (conf.d) is active', () => {
    const shipped = shippedModules();
    assert.ok(shipped.length > 0, 'found no module in conf.d');
    const missing = shipped.filter(m => !caps.active.has(m));
    assert.deepEqual(missing, [], 'modules of the shipped configuration that are not active (their scenarios would ' +
        'be skipped): ' + missing.join(', '));
});
console.log('# server capabilities:', JSON.stringify({ files: caps.files, tus: caps.tus, moduleAdmin: caps.moduleAdmin, modules: [...caps.active] }));

let browser, context, page, cdp;

async function shot(name) {
    await page.screenshot({ path: join(ART, name + '.png') });
}

const launch = launchBrowser; // tests/gui/browser.mjs

// A row of the file table by its store path.
const row = path => page.locator(`table.files tbody tr[data-path="${path}"]`);

async function rowAction(path, label) {
    await row(path).getByRole('button', { name: 'Actions for ' + path.split('/').pop() }).click();
    await page.getByRole('menuitem', { name: label }).click();
}

async function signIn(p, user, pass) {
    await p.goto(URL + '/');
    await p.getByLabel('Username').fill(user);
    await p.getByLabel('Password').fill(pass);
    await p.getByRole('button', { name: 'Sign in' }).click();
}

async function goFiles() {
    await page.getByRole('link', { name: 'Files' }).click();
    await page.locator('.files-view').waitFor();
}

before(async () => {
    browser = await launch();
    context = await browser.newContext({ viewport: { width: 1366, height: 860 }, acceptDownloads: true });
    context.setDefaultTimeout(15000);
    page = await context.newPage();
    page.on('pageerror', e => console.log('# page error:', e.message));
    cdp = await context.newCDPSession(page);
    await cdp.send('Network.enable');
});

after(async () => {
    await browser?.close();
    rmSync(tmp, { recursive: true, force: true });
    console.log('# scenarios that ran: ' + ran.join(', '));
});

function scenario(name, fn) {
    test(name, async () => { await fn(); ran.push(name); });
}

describe('signing in', () => {
    scenario('a wrong password shows the reason under the form', async () => {
        await page.goto(URL + '/');
        await page.getByRole('heading', { name: 'Sign in' }).waitFor();
        await shot('login');
        await signIn(page, USER, 'not-the-password');
        const err = page.locator('#login-error');
        await err.waitFor({ state: 'visible' });
        assert.match(await err.textContent(), /do not match/);
        await shot('login-error');
    });

    scenario('the administrator signs in and sees the store page', async () => {
        await signIn(page, USER, PASS);
        await page.getByRole('navigation', { name: 'Main' }).waitFor();
        await page.getByRole('button', { name: /^Account: / }).waitFor();
        assert.equal(await page.getByRole('link', { name: 'Administration' }).count(), 1);
    });
});

if (caps.files) describe('files', () => {
    const big = randomBytes(20 * 1024 * 1024);
    const bigPath = join(tmp, 'big.bin');
    writeFileSync(bigPath, big);

    scenario('new folder', async () => {
        await goFiles();
        await page.getByRole('button', { name: 'New folder' }).click();
        await page.getByRole('dialog').getByLabel('Folder name').fill('Projects');
        await page.getByRole('dialog').getByRole('button', { name: 'Create' }).click();
        await row('Projects').waitFor();
        assert.equal(await row('Projects').getAttribute('data-type'), 'folder');
    });

    scenario('a folder name the server refuses shows its reason under the field', async () => {
        await page.getByRole('button', { name: 'New folder' }).click();
        const dlg = page.getByRole('dialog');
        await dlg.getByLabel('Folder name').fill('Projects'); // exists
        await dlg.getByRole('button', { name: 'Create' }).click();
        await dlg.locator('.field-error').waitFor();
        assert.ok((await dlg.locator('.field-error').textContent()).length > 5);
        await page.keyboard.press('Escape');
        await dlg.waitFor({ state: 'detached' });
    });

    scenario('upload a 20 MiB file: the progress reaches 100% and the file is listed', async () => {
        // Slow the upload down so the page can be seen (and photographed) while it runs.
        await cdp.send('Network.emulateNetworkConditions',
            { offline: false, latency: 0, downloadThroughput: -1, uploadThroughput: 6 * 1024 * 1024 });
        await page.locator('.files-view input[type=file]:not([webkitdirectory])').setInputFiles(bigPath);
        const overall = page.getByRole('progressbar', { name: 'Overall upload progress' });
        await overall.waitFor();
        await page.waitForFunction(() => {
            const v = Number(document.querySelector('.uploads .progress')?.getAttribute('aria-valuenow'));
            return v > 5 && v < 100;
        });
        await shot('upload-in-progress');
        await cdp.send('Network.emulateNetworkConditions',
            { offline: false, latency: 0, downloadThroughput: -1, uploadThroughput: -1 });
        await page.waitForFunction(() =>
            document.querySelector('.uploads .progress')?.getAttribute('aria-valuenow') === '100', null, { timeout: 120000 });
        await row('big.bin').waitFor();
        assert.match(await row('big.bin').locator('.col-size').textContent(), /20\.0 MB|20 MB/);
        await page.locator('.uploads').getByRole('button', { name: 'Clear' }).click();
    });

    scenario('download it: the bytes are the ones uploaded', async () => {
        const [dl] = await Promise.all([page.waitForEvent('download'), rowAction('big.bin', 'Download')]);
        const got = readFileSync(await dl.path());
        assert.equal(got.length, big.length);
        assert.equal(sha256(got), sha256(big));
        assert.equal(dl.suggestedFilename(), 'big.bin');
    });

    if (caps.tus) scenario('an upload survives a broken connection and resumes where it stopped', async () => {
        const data = randomBytes(24 * 1024 * 1024);
        const p = join(tmp, 'resume.bin');
        writeFileSync(p, data);
        await cdp.send('Network.emulateNetworkConditions',
            { offline: false, latency: 0, downloadThroughput: -1, uploadThroughput: 6 * 1024 * 1024 });
        await page.locator('.files-view input[type=file]:not([webkitdirectory])').setInputFiles(p);
        const bar = page.getByRole('progressbar', { name: 'resume.bin' });
        await page.waitForFunction(() => Number(document.querySelector('.upload-item [role=progressbar]')
            ?.getAttribute('aria-valuenow')) > 40, null, { timeout: 60000 });
        await cdp.send('Network.emulateNetworkConditions',
            { offline: true, latency: 0, downloadThroughput: -1, uploadThroughput: -1 });
        await page.locator('.upload-status', { hasText: 'Connection lost' }).waitFor();
        await cdp.send('Network.emulateNetworkConditions',
            { offline: false, latency: 0, downloadThroughput: -1, uploadThroughput: -1 });
        await page.waitForFunction(() =>
            document.querySelector('.upload-item [role=progressbar]')?.getAttribute('aria-valuenow') === '100', null, { timeout: 120000 });
        assert.equal(await bar.getAttribute('aria-valuenow'), '100');
        await row('resume.bin').waitFor();
        const [dl] = await Promise.all([page.waitForEvent('download'), rowAction('resume.bin', 'Download')]);
        assert.equal(sha256(readFileSync(await dl.path())), sha256(data));
        await page.locator('.uploads').getByRole('button', { name: 'Clear' }).click();
        await rowAction('resume.bin', 'Delete');
        await page.getByRole('dialog').locator('button.danger').click();
        await row('resume.bin').waitFor({ state: 'detached' });
    });

    scenario("the file list, and a file's details in the side panel", async () => {
        await shot('files');
        await row('big.bin').getByRole('button', { name: 'big.bin', exact: true }).click();
        const panel = page.getByRole('complementary', { name: 'Details' });
        await panel.getByText('20,971,520 bytes', { exact: false }).waitFor();
        await shot('details');
        await page.keyboard.press('Escape');
        await panel.waitFor({ state: 'hidden' });
    });

    scenario('rename', async () => {
        await rowAction('big.bin', 'Rename…');
        const input = page.getByRole('dialog').getByLabel('New name');
        await input.fill('renamed.bin');
        await page.getByRole('dialog').getByRole('button', { name: 'Rename' }).click();
        await row('renamed.bin').waitFor();
        assert.equal(await row('big.bin').count(), 0);
    });

    scenario('move into a folder chosen in the folder dialog', async () => {
        await rowAction('renamed.bin', 'Move…');
        const dlg = page.getByRole('dialog');
        await dlg.getByRole('button', { name: 'Projects' }).click();
        await dlg.locator('[aria-current=location]', { hasText: 'Projects' }).waitFor();
        await dlg.getByRole('button', { name: 'Move here' }).click();
        await row('renamed.bin').waitFor({ state: 'detached' });
        await row('Projects').getByRole('link', { name: 'Projects' }).click();
        await row('Projects/renamed.bin').waitFor();
        await page.getByRole('navigation', { name: 'Folder path' }).locator('[aria-current=page]', { hasText: 'Projects' }).waitFor();
    });

    scenario('select several with shift-click and delete them', async () => {
        for (const n of ['a.txt', 'b.txt', 'c.txt']) writeFileSync(join(tmp, n), 'file ' + n);
        await page.locator('.files-view input[type=file]:not([webkitdirectory])')
            .setInputFiles(['a.txt', 'b.txt', 'c.txt'].map(n => join(tmp, n)));
        for (const n of ['a.txt', 'b.txt', 'c.txt']) await row('Projects/' + n).waitFor();
        await page.locator('.uploads').getByRole('button', { name: 'Clear' }).click();
        await page.getByRole('checkbox', { name: 'Select a.txt' }).click();
        await page.getByRole('checkbox', { name: 'Select c.txt' }).click({ modifiers: ['Shift'] });
        const bar = page.getByRole('toolbar', { name: 'Selected items' });
        assert.match(await bar.locator('.sel-count').textContent(), /^3 selected/);
        await bar.getByRole('button', { name: 'Delete' }).click();
        await page.getByRole('dialog').locator('button.danger').click();
        for (const n of ['a.txt', 'b.txt', 'c.txt']) await row('Projects/' + n).waitFor({ state: 'detached' });
        assert.equal(await row('Projects/renamed.bin').count(), 1);
    });

    scenario('delete a file', async () => {
        await rowAction('Projects/renamed.bin', 'Delete');
        await page.getByRole('dialog').locator('button.danger').click();
        await row('Projects/renamed.bin').waitFor({ state: 'detached' });
        await page.getByText('This folder is empty').waitFor();
    });

    if (caps.partOn('trash')) scenario('restore the deleted file from the trash', async () => {
        await page.getByRole('link', { name: 'Trash' }).click();
        const r = page.locator('.trash-view tr[data-path="Projects/renamed.bin"]');
        await r.waitFor();
        await shot('trash');
        await r.getByRole('button', { name: /^Restore/ }).click();
        await r.waitFor({ state: 'detached' });
        await goFiles();
        await row('Projects').getByRole('link').click();
        await row('Projects/renamed.bin').waitFor();
    });

    if (caps.partOn('versions')) scenario('restore an older version from the versions panel', async () => {
        const put = async body => {
            const sid = (await (await fetch(URL + '/api/v1/stores', { headers: { Authorization: 'Bearer ' + caps.token } })).json())[0].id;
            const r = await fetch(`${URL}/api/v1/stores/${sid}/files/notes.txt`, {
                method: 'PUT', body, headers: { Authorization: 'Bearer ' + caps.token },
            });
            assert.ok(r.status === 200 || r.status === 201, 'PUT answered ' + r.status);
        };
        await put('version one');
        await put('version two');
        await goFiles();
        await rowAction('notes.txt', 'Versions');
        const panel = page.getByRole('complementary', { name: 'Details' });
        const older = panel.locator('li.version:not(.current)').first();
        await older.waitFor();
        await shot('versions');
        await older.getByRole('button', { name: /^Restore/ }).click();
        await page.locator('.toast-success', { hasText: 'Restored the version' }).waitFor();
        const [dl] = await Promise.all([page.waitForEvent('download'), rowAction('notes.txt', 'Download')]);
        assert.equal(readFileSync(await dl.path(), 'utf8'), 'version one');
    });
});

// ------------------------------------------------------------ API helpers for set-up ---
// Set-up that is not what a scenario is about goes through the API (as another client would).
async function apiAs(token, method, path, body) {
    const r = await fetch(URL + '/api/v1' + path, {
        method, body: body === undefined || typeof body === 'string' ? body : JSON.stringify(body),
        headers: { Authorization: 'Bearer ' + token },
    });
    const text = await r.text();
    let json = null;
    try { json = text ? JSON.parse(text) : null; } catch { /* not JSON */ }
    return { status: r.status, json, text };
}
async function firstSid(token = caps.token) {
    return (await apiAs(token, 'GET', '/stores')).json[0].id;
}
async function putFile(path, body, token = caps.token) {
    const sid = await firstSid(token);
    if (path.includes('/')) await apiAs(token, 'POST', `/stores/${sid}/folders`, { path: path.split('/').slice(0, -1).join('/'), parents: true });
    const r = await apiAs(token, 'PUT', `/stores/${sid}/files/${path.split('/').map(encodeURIComponent).join('/')}`, body);
    assert.ok(r.status === 200 || r.status === 201, `PUT ${path} answered ${r.status}`);
}

if (caps.files && caps.partOn('sharing')) describe('sharing', () => {
    let link = '', visitor, vpage;
    const inDays = d => new Date(Date.now() + d * 86400000).toISOString().slice(0, 10);

    before(async () => {
        await putFile('Shared/hello.txt', 'hello visitor');
        await putFile('Shared/sub/deep.txt', 'deep down');
        await putFile('Drop/readme.txt', 'the owner only');
        visitor = await browser.newContext({ viewport: { width: 1100, height: 760 }, acceptDownloads: true });
        visitor.setDefaultTimeout(15000);
        vpage = await visitor.newPage();
        vpage.on('pageerror', e => console.log('# visitor page error:', e.message));
    });
    after(async () => { await visitor?.close(); });

    scenario('share a folder by link with a password and an expiry; the link is shown once and copies', async () => {
        await context.grantPermissions(['clipboard-read', 'clipboard-write'], { origin: URL });
        await goFiles();
        await page.reload(); // the folders were made through the API
        await row('Shared').waitFor();
        await rowAction('Shared', 'Share…');
        const dlg = page.getByRole('dialog');
        await dlg.getByLabel('Permission').selectOption('download');
        await dlg.getByLabel('Password (optional)').fill('open-sesame');
        await dlg.getByLabel('Expires (optional)').fill(inDays(30));
        await shot('share-dialog');
        await dlg.getByRole('button', { name: 'Create share' }).click();
        const done = page.getByRole('dialog', { name: 'Link created' });
        await done.waitFor();
        link = await done.getByLabel('Link', { exact: true }).inputValue();
        assert.match(link, new RegExp('^' + URL.replace(/[.]/g, '\\.') + '/s/[A-Za-z0-9_-]{20,}$'));
        await done.getByRole('button', { name: 'Copy Link' }).click();
        await page.locator('.toast-success', { hasText: 'Copied' }).waitFor();
        assert.equal(await page.evaluate(() => navigator.clipboard.readText()), link);
        await shot('share-link');
        await done.getByRole('button', { name: 'Done' }).click();
        await done.waitFor({ state: 'detached' });
    });

    scenario('a bad share request shows the server\'s reason under its field', async () => {
        await rowAction('Shared', 'Share…');
        const dlg = page.getByRole('dialog');
        await dlg.getByLabel('Who').selectOption('user');
        await dlg.getByLabel('User name').fill('nobody-of-that-name');
        await dlg.getByRole('button', { name: 'Create share' }).click();
        const err = dlg.locator('.field-error, .form-error:not([hidden])');
        await err.first().waitFor();
        assert.match(await err.first().textContent(), /nobody-of-that-name/);
        await page.keyboard.press('Escape');
        await dlg.waitFor({ state: 'detached' });
    });

    scenario('the visitor: password prompt, wrong password refused, listing, file and zip downloads', async () => {
        await vpage.goto(link);
        await vpage.getByText('This link is protected by a password.').waitFor();
        await vpage.getByLabel('Password').fill('not-it');
        await vpage.getByRole('button', { name: 'Open' }).click();
        await vpage.locator('.form-error:not([hidden])', { hasText: /wrong password/ }).waitFor();
        await vpage.getByLabel('Password').fill('open-sesame');
        await vpage.getByRole('button', { name: 'Open' }).click();
        await vpage.locator('tr[data-path="hello.txt"]').waitFor();
        assert.equal(await vpage.locator('tr[data-path="sub"]').getAttribute('data-type'), 'folder');
        assert.match(await vpage.locator('.breadcrumbs [aria-current=page]').textContent(), /^Shared$/);
        await vpage.screenshot({ path: join(ART, 'share-visitor.png') });
        // a file: the bytes the owner stored
        const [dl] = await Promise.all([vpage.waitForEvent('download'),
            vpage.getByRole('button', { name: 'Download hello.txt' }).click()]);
        assert.equal(readFileSync(await dl.path(), 'utf8'), 'hello visitor');
        assert.equal(dl.suggestedFilename(), 'hello.txt');
        // a sub-folder, then the whole folder as a zip with both files in it
        await vpage.locator('tr[data-path="sub"]').getByRole('button', { name: 'sub' }).click();
        await vpage.locator('tr[data-path="sub/deep.txt"]').waitFor();
        await vpage.locator('.breadcrumbs').getByRole('button', { name: 'Shared' }).click();
        await vpage.locator('tr[data-path="hello.txt"]').waitFor();
        const [zip] = await Promise.all([vpage.waitForEvent('download'),
            vpage.getByRole('button', { name: 'Download all as zip' }).click()]);
        const z = readFileSync(await zip.path());
        assert.equal(z.subarray(0, 2).toString(), 'PK');
        assert.ok(z.includes('hello.txt') && z.includes('sub/deep.txt'), 'the zip holds both files');
    });

    scenario('a file link with a download limit of one, made in the share dialog: the visitor sees name, size, expiry and what is left, gets the file once, then the reason it stopped', async () => {
        await putFile('report.txt', 'quarterly numbers');
        await goFiles();
        await page.reload();
        await rowAction('report.txt', 'Share…');
        const dlg = page.getByRole('dialog');
        await dlg.getByLabel('Permission').selectOption('view');
        await dlg.getByLabel('Download limit (optional)').fill('1');
        await dlg.getByLabel('Expires (optional)').fill(inDays(7));
        await dlg.getByRole('button', { name: 'Create share' }).click();
        const done = page.getByRole('dialog', { name: 'Link created' });
        const url = await done.getByLabel('Link', { exact: true }).inputValue();
        await done.getByRole('button', { name: 'Done' }).click();
        const sid = await firstSid();
        const count = async () => (await apiAs(caps.token, 'GET', `/stores/${sid}/shares`)).json.shares
            .find(x => x.path === 'report.txt' && x.max_downloads === 1).downloads;
        // Opening the page (twice) shows what the link is without counting a download.
        for (let i = 0; i < 2; i++) {
            await vpage.goto(url);
            await vpage.locator('.share-file h2', { hasText: 'report.txt' }).waitFor();
        }
        assert.equal(await vpage.locator('.share-size').textContent(), '17 B');
        assert.match(await vpage.locator('.share-expiry').textContent(), /works until/);
        assert.equal(await vpage.locator('.share-left').textContent(), 'It can be downloaded once more.');
        await vpage.screenshot({ path: join(ART, 'share-file.png') });
        assert.equal(await count(), 0, 'looking at the page is not a download');
        const [dl] = await Promise.all([vpage.waitForEvent('download'), vpage.getByRole('button', { name: 'Download' }).click()]);
        assert.equal(readFileSync(await dl.path(), 'utf8'), 'quarterly numbers');
        assert.equal(dl.suggestedFilename(), 'report.txt');
        assert.equal(await count(), 1);
        await vpage.reload();
        const gone = vpage.locator('[role=alert]');
        await gone.waitFor();
        assert.match(await gone.textContent(), /download limit/i);
    });

    scenario('an upload-only link is a drop box: the visitor sends a file, sees no listing, the owner gets it', async () => {
        await rowAction('Drop', 'Share…');
        const dlg = page.getByRole('dialog');
        await dlg.getByLabel('Permission').selectOption('upload');
        await dlg.getByRole('button', { name: 'Create share' }).click();
        const done = page.getByRole('dialog', { name: 'Link created' });
        const drop = await done.getByLabel('Link', { exact: true }).inputValue();
        await done.getByRole('button', { name: 'Done' }).click();
        await vpage.goto(drop);
        await vpage.getByRole('heading', { name: 'Drop box' }).waitFor();
        assert.equal(await vpage.getByText('readme.txt').count(), 0, 'a drop box lists nothing');
        const f = join(tmp, 'from-visitor.txt');
        writeFileSync(f, 'sent through the drop box');
        await vpage.getByLabel('Files to upload').setInputFiles(f);
        await vpage.getByRole('button', { name: 'Upload', exact: true }).click();
        await vpage.locator('.drop-status li.ok', { hasText: 'from-visitor.txt — uploaded' }).waitFor();
        // the same name again: a drop box never overwrites, and says so
        await vpage.getByLabel('Files to upload').setInputFiles(f);
        await vpage.getByRole('button', { name: 'Upload', exact: true }).click();
        await vpage.locator('.drop-status li.field-error', { hasText: 'from-visitor.txt' }).waitFor();
        await vpage.screenshot({ path: join(ART, 'share-dropbox.png') });
        const sid = await firstSid();
        const got = await apiAs(caps.token, 'GET', `/stores/${sid}/files/Drop/from-visitor.txt`);
        assert.equal(got.text, 'sent through the drop box');
    });

    scenario('the Shares view lists the store\'s shares; revoking one stops its link at once', async () => {
        await page.getByRole('link', { name: 'Shares' }).click();
        const r = page.locator('table.shares tr[data-path="Shared"]');
        await r.waitFor();
        await page.locator('table.shares tr[data-path="Drop"]').waitFor();
        assert.match(await r.textContent(), /password/);
        assert.match(await r.textContent(), /download/);
        assert.match(await r.textContent(), /until /);
        await shot('shares');
        await r.getByRole('button', { name: 'Revoke the share of Shared' }).click();
        await r.waitFor({ state: 'detached' });
        await vpage.goto(link);
        const gone = vpage.locator('[role=alert]');
        await gone.waitFor();
        assert.ok((await gone.textContent()).length > 5);
        assert.equal(await vpage.getByText('This link is protected by a password.').count(), 0);
    });

    scenario('shared with me: a user share from another user opens in the page', async () => {
        const mk = await apiAs(caps.token, 'POST', '/admin/users', { username: 'sharer', password: 'sharer-pass-1', role: 'user' });
        assert.ok(mk.status === 201 || mk.status === 409, 'creating the user answered ' + mk.status);
        const login = await (await fetch(URL + '/api/v1/auth/login', {
            method: 'POST', body: JSON.stringify({ username: 'sharer', password: 'sharer-pass-1' }),
        })).json();
        await putFile('Plans/plan.txt', 'the plan', login.token);
        const sid = await firstSid(login.token);
        const sh = await apiAs(login.token, 'POST', `/stores/${sid}/shares`, { path: 'Plans', type: 'user', permission: 'view', user: USER });
        assert.equal(sh.status, 201, sh.text);
        await page.reload();
        await page.getByRole('link', { name: 'Shares' }).click();
        await page.locator('.shared-list li', { hasText: 'Plans' }).waitFor();
        assert.match(await page.locator('.shared-list li', { hasText: 'Plans' }).textContent(), /from sharer/);
        await page.getByRole('button', { name: 'Open Plans' }).click();
        const dlg = page.getByRole('dialog', { name: 'Shared with me' });
        await dlg.locator('tr[data-path="plan.txt"]').waitFor();
        const [dl] = await Promise.all([page.waitForEvent('download'),
            dlg.getByRole('button', { name: 'Download plan.txt' }).click()]);
        assert.equal(readFileSync(await dl.path(), 'utf8'), 'the plan');
        await shot('shared-with-me');
        await dlg.getByRole('button', { name: 'Close', exact: true }).first().click();
    });
});

if (caps.files && caps.partOn('activity')) describe('activity and audit', () => {
    scenario("a store's activity lists what happened to its files, newest first", async () => {
        await putFile('activity-probe.txt', 'seen in the activity');
        await page.getByRole('link', { name: 'Activity' }).click();
        const r = page.locator('table.entries tr[data-action="file.created"]', { hasText: 'activity-probe.txt' });
        await r.waitFor();
        assert.match(await r.textContent(), /admin/);
        // newest first: the probe is above anything the earlier scenarios did
        const seqs = await page.locator('table.entries tbody tr').evaluateAll(rs => rs.map(x => Number(x.dataset.seq)));
        assert.deepEqual(seqs, [...seqs].sort((a, b) => b - a));
        await shot('activity');
    });

    scenario("a long activity comes a page at a time: 'Older entries' adds the next ones, none twice, until there are no more", async () => {
        for (let i = 0; i < 105; i++) await putFile(`paged-${i}.txt`, 'x');
        await page.getByRole('link', { name: 'Activity' }).click();
        await page.getByRole('button', { name: 'Refresh' }).click();
        const rows = page.locator('table.entries tbody tr');
        await page.locator('table.entries tr[data-action="file.created"]', { hasText: 'paged-104.txt' }).waitFor();
        assert.equal(await rows.count(), 100, 'the first page');
        assert.equal(await page.locator('table.entries', { hasText: 'paged-0.txt' }).count(), 0, 'the oldest is not on it');
        const more = page.getByRole('button', { name: 'Older entries' });
        for (let n = 100; await more.isVisible();) {
            await more.click();
            await page.waitForFunction(k => document.querySelectorAll('table.entries tbody tr').length > k, n);
            n = await rows.count();
        }
        await page.locator('table.entries tr[data-action="file.created"]', { hasText: 'paged-0.txt' }).waitFor();
        const seqs = await rows.evaluateAll(rs => rs.map(x => Number(x.dataset.seq)));
        assert.ok(seqs.length > 105);
        assert.deepEqual(seqs, [...new Set(seqs)].sort((a, b) => b - a), 'newest first, none twice');
        assert.match(await page.locator('.entries-count').textContent(), new RegExp(`^${seqs.length} entries shown`));
    });

    if (caps.moduleAdmin) scenario('the audit log: filter by action, check the chain, export exactly the selection as CSV', async () => {
        await page.getByRole('link', { name: 'Administration' }).click();
        await page.getByRole('link', { name: 'Audit log' }).click();
        // a single server: no Cluster section (tests/gui/cluster.test.mjs has the cluster's)
        const sections = page.getByRole('navigation', { name: 'Administration sections' });
        assert.equal(await sections.getByRole('link', { name: 'Cluster' }).count(), 0);
        assert.equal(await sections.getByRole('link', { name: 'Storage' }).count(), 1);
        const form = page.getByRole('form', { name: 'Filter the audit log' });
        await form.getByLabel('Action').fill('share.');
        await form.getByRole('button', { name: 'Search' }).click();
        await page.locator('table.entries tr[data-action="share.created"]').first().waitFor();
        const actions = await page.locator('table.entries tbody tr').evaluateAll(rs => rs.map(x => x.dataset.action));
        assert.ok(actions.length >= 2 && actions.every(a => a.startsWith('share.')), 'only share.* entries: ' + actions.join(' '));
        assert.ok(actions.includes('share.password_failed'), 'the wrong link password is in the log');
        await page.getByRole('button', { name: 'Check the chain' }).click();
        await page.getByText(/Intact: \d+ entries verified/).waitFor();
        await shot('audit');
        const [dl] = await Promise.all([page.waitForEvent('download'), page.getByRole('link', { name: 'Export CSV' }).click()]);
        const lines = readFileSync(await dl.path(), 'utf8').trim().split(/\r?\n/);
        assert.equal(lines[0], 'seq,time,action,user,ip,store,path,result,hash');
        assert.equal(lines.length - 1, actions.length, 'the export holds what the page shows');
        assert.ok(lines.slice(1).every(l => l.split(',')[2].replace(/"/g, '').startsWith('share.')), lines.join('\n'));
        // Narrowed to one user: only that user's rows; and the JSON lines export holds the same.
        await form.getByLabel('User').fill('sharer');
        await form.getByRole('button', { name: 'Search' }).click();
        await page.waitForFunction(() => {
            const rs = [...document.querySelectorAll('table.entries tbody tr')];
            return rs.length > 0 && rs.every(r => r.textContent.includes('sharer'));
        });
        const mine = await page.locator('table.entries tbody tr').evaluateAll(rs => rs.map(x => x.dataset.seq));
        assert.ok(mine.length >= 1);
        const [jl] = await Promise.all([page.waitForEvent('download'), page.getByRole('link', { name: 'Export JSON lines' }).click()]);
        const exported = readFileSync(await jl.path(), 'utf8').trim().split('\n').map(l => JSON.parse(l));
        assert.deepEqual(exported.map(e => String(e.seq)), mine);
        assert.ok(exported.every(e => e.user === 'sharer' && e.action.startsWith('share.')));
        // From tomorrow on: nothing yet.
        await form.getByLabel('From').fill(new Date(Date.now() + 2 * 86400000).toISOString().slice(0, 10));
        await form.getByRole('button', { name: 'Search' }).click();
        await page.getByText('No entry matches.').waitFor();
        await form.getByLabel('From').fill('');
        await form.getByLabel('User').fill('');
    });
});

if (caps.files && caps.partOn('webhooks')) describe('webhooks', () => {
    scenario('add a webhook: a denied URL is refused with the reason, the secret is shown once', async () => {
        await page.getByRole('link', { name: 'Webhooks' }).click();
        await page.getByRole('button', { name: 'Add webhook' }).click();
        const dlg = page.getByRole('dialog', { name: 'Add webhook' });
        await dlg.getByLabel('URL').fill('http://127.0.0.1:9/hook');
        await dlg.getByLabel('Events').fill('file.created');
        await dlg.getByRole('button', { name: 'Add webhook' }).click();
        await dlg.locator('.field-error', { hasText: 'deny list' }).waitFor();
        await dlg.getByLabel('URL').fill('https://hooks.invalid/mbyte');
        await dlg.getByRole('button', { name: 'Add webhook' }).click();
        const done = page.getByRole('dialog', { name: 'Webhook added' });
        await done.waitFor();
        const secret = await done.getByLabel('Secret', { exact: true }).inputValue();
        assert.ok(secret.length >= 16, 'a secret: ' + secret);
        await done.getByRole('button', { name: 'Done' }).click();
        await page.locator('.hook', { hasText: 'https://hooks.invalid/mbyte' }).waitFor();
        assert.equal(await page.getByText(secret).count(), 0, 'the secret is not shown again');
    });

    scenario('its delivery log shows each delivery and its attempts; redeliver adds a new one', async () => {
        const sid = await firstSid();
        const hooks = (await apiAs(caps.token, 'GET', `/stores/${sid}/webhooks`)).json.webhooks;
        const hook = hooks.find(w => w.url === 'https://hooks.invalid/mbyte');
        await putFile('hooked.txt', 'an event');
        // wait for the server to have recorded the delivery (it is made when the event fires)
        for (let i = 0; ; i++) {
            const d = (await apiAs(caps.token, 'GET', `/stores/${sid}/webhooks/${hook.id}/deliveries`)).json.deliveries;
            if (d.some(x => x.event === 'file.created')) break;
            assert.ok(i < 300, 'no delivery recorded');
            await new Promise(r => setTimeout(r, 100));
        }
        const card = page.locator(`.hook[data-hook="${hook.id}"]`);
        await card.getByRole('button', { name: 'Deliveries' }).click();
        const first = page.locator(`.hook[data-hook="${hook.id}"] tr[data-delivery]`).first();
        await first.waitFor();
        assert.match(await first.textContent(), /file\.created/);
        assert.match(await first.textContent(), /attempt/);
        await shot('webhooks');
        await first.getByRole('button', { name: /^Redeliver/ }).click();
        await page.locator('.toast-success', { hasText: 'Sent again' }).waitFor();
        await page.locator(`.hook[data-hook="${hook.id}"] tr[data-delivery]`, { hasText: '(redelivery)' }).waitFor();
    });
});

if (caps.partOn('ftp')) describe('ftp access', () => {
    scenario('create an app password (shown once, with the connection details), then revoke it', async () => {
        await page.getByRole('button', { name: /^Account: / }).click();
        await page.getByRole('menuitem', { name: 'FTP access…' }).click();
        const dlg = page.getByRole('dialog', { name: 'FTP access' });
        assert.equal(await dlg.getByLabel('Host', { exact: true }).inputValue(), new globalThis.URL(URL).hostname);
        assert.equal(await dlg.getByLabel('User name', { exact: true }).inputValue(), USER);
        await dlg.getByRole('button', { name: 'Create app password' }).click();
        await dlg.getByText('Name the device or program it is for.').waitFor();
        await dlg.getByLabel('Name', { exact: true }).fill('laptop');
        await dlg.getByRole('button', { name: 'Create app password' }).click();
        const pw = await dlg.getByLabel('App password', { exact: true });
        await pw.waitFor();
        assert.ok((await pw.inputValue()).length >= 16);
        await dlg.locator('ul.app-passwords li', { hasText: 'laptop' }).waitFor();
        await shot('ftp-access');
        const listed = (await apiAs(caps.token, 'GET', '/ftp/passwords')).json;
        assert.ok(listed.some(p => p.name === 'laptop'));
        await dlg.getByRole('button', { name: 'Revoke laptop' }).click();
        await dlg.locator('ul.app-passwords li', { hasText: 'laptop' }).waitFor({ state: 'detached' });
        assert.ok(!(await apiAs(caps.token, 'GET', '/ftp/passwords')).json.some(p => p.name === 'laptop'));
        await dlg.getByRole('button', { name: 'Close', exact: true }).last().click();
        await dlg.waitFor({ state: 'detached' });
    });
});

if (caps.files && caps.partOn('settings')) describe('store settings and usage', () => {
    scenario("store settings: a bad value is refused under its field; a file size limit refuses a bigger upload with the server's reason", async () => {
        await goFiles();
        await page.getByRole('button', { name: 'Store settings' }).click();
        const dlg = page.getByRole('dialog', { name: /^Settings of/ });
        const trash = dlg.getByLabel(/Keep deleted files in the trash for/);
        await trash.fill('-1');
        await dlg.getByRole('button', { name: 'Save' }).click();
        await dlg.locator('.field-error').waitFor();
        assert.equal(await trash.getAttribute('aria-invalid'), 'true', 'the error sits under the trash field');
        await trash.fill('7');
        await dlg.getByLabel(/Largest file/).fill('5');
        await dlg.getByLabel(/Store size limit/).fill(String(1024 * 1024 * 1024));
        await dlg.getByRole('button', { name: 'Save' }).click();
        await page.locator('.toast-success', { hasText: 'Settings saved.' }).waitFor();
        await dlg.waitFor({ state: 'detached' });
        const f = join(tmp, 'too-big.txt');
        writeFileSync(f, 'more than five bytes');
        await page.locator('.files-view input[type=file]:not([webkitdirectory])').setInputFiles(f);
        const err = page.locator('.upload-item', { hasText: 'too-big.txt' }).locator('.upload-status.error');
        await err.waitFor();
        assert.ok((await err.textContent()).length > 10, 'the reason: ' + await err.textContent());
        assert.equal(await row('too-big.txt').count(), 0);
        await page.locator('.uploads').getByRole('button', { name: 'Clear' }).click();
        // reopened: the saved values, marked as this store's own, and the usage against the new limit
        await page.getByRole('button', { name: 'Store settings' }).click();
        assert.equal(await dlg.getByLabel(/Largest file/).inputValue(), '5');
        assert.equal(await dlg.getByLabel(/Keep deleted files in the trash for/).inputValue(), '7');
        const bar = dlg.getByRole('progressbar', { name: 'Store usage' });
        await bar.waitFor();
        assert.match(await bar.getAttribute('aria-valuetext'), / of 1\.0 GB /);
        await shot('store-settings');
        await dlg.getByLabel(/Largest file/).fill('0');
        await dlg.getByLabel(/Store size limit/).fill('0');
        await dlg.getByRole('button', { name: 'Save' }).click();
        await dlg.waitFor({ state: 'detached' });
    });

    if (caps.partOn('usage') && caps.moduleAdmin) scenario('the usage meter: used against the quota as a bar, with its parts when the server reports them', async () => {
        const q = await apiAs(caps.token, 'PUT', '/admin/quotas/users/' + USER, { bytes: 10 * 1024 * 1024 * 1024 });
        assert.equal(q.status, 200, q.text);
        try {
            await page.reload();
            const bar = page.getByRole('navigation', { name: 'Main' }).getByRole('progressbar', { name: 'Storage used' });
            await bar.waitFor();
            assert.match(await bar.getAttribute('aria-valuetext'), / of 10 GB /);
            // The parts (current files, old versions, trash) as the usage answer gives them.
            await page.route('**/api/v1/me/usage', route => route.fulfill({
                json: { bytes: 3000, files: 2, current: 2000, versions: 600, trash: 400, quota_bytes: 10000 },
            }));
            await page.reload();
            const nav = page.getByRole('navigation', { name: 'Main' });
            await nav.getByText('2.9 KB of 9.8 KB used').waitFor();
            assert.deepEqual(await nav.locator('ul.usage-parts li').allTextContents(),
                ['files: 2.0 KB', 'old versions: 600 B', 'trash: 400 B']);
            // The widths once the bar is laid out: the usage is drawn again when the server's
            // 'usage' or 'modules' events arrive, and a bar measured in between had no width
            // (CI, once: [null,null,null]).
            await page.waitForFunction(() => document.querySelector('nav .usage-bar')?.getBoundingClientRect().width > 0);
            const w = await nav.locator('.usage-bar').evaluate(b => {
                const total = b.getBoundingClientRect().width;
                return ['current', 'versions', 'trash'].map(k => b.querySelector('.part-' + k).getBoundingClientRect().width / total);
            });
            assert.ok(Math.abs(w[0] - 0.2) < 0.03 && Math.abs(w[1] - 0.06) < 0.03 && Math.abs(w[2] - 0.04) < 0.03, JSON.stringify(w));
            await page.locator('.nav-foot').screenshot({ path: join(ART, 'usage.png') });
        } finally {
            await page.unroute('**/api/v1/me/usage');
            await apiAs(caps.token, 'PUT', '/admin/quotas/users/' + USER, { bytes: null });
            await page.reload();
        }
    });
});

if (caps.files && caps.partOn('usage') && caps.partOn('store-create') && caps.moduleAdmin) describe('notifications', () => {
    scenario('the bell: a quota warning and a finished task arrive live, and the panel lists them', async () => {
        await page.reload();
        await page.getByRole('navigation', { name: 'Main' }).waitFor();
        const used = (await apiAs(caps.token, 'GET', '/me/usage')).json.bytes;
        // A quota the next small file takes past 80%: the quotas module warns the owner.
        const q = await apiAs(caps.token, 'PUT', '/admin/quotas/users/' + USER, { bytes: Math.ceil(used / 0.85) });
        assert.equal(q.status, 200, q.text);
        try {
            await putFile('tips-over.txt', 'a few more bytes');
            for (let i = 0; ; i++) { // the server's own record first: the warning exists
                const ns = (await apiAs(caps.token, 'GET', '/notifications')).json;
                if (ns.some(n => n.title === 'Storage almost full')) break;
                assert.ok(i < 300, 'no quota warning: ' + JSON.stringify(ns) + JSON.stringify((await apiAs(caps.token, 'GET', '/me/usage')).json));
                await new Promise(r => setTimeout(r, 100));
            }
            await page.locator('.toast', { hasText: 'Storage almost full' }).waitFor();
            await page.getByRole('button', { name: /^Notifications \(\d+ new\)$/ }).waitFor();
            const st = await apiAs(caps.token, 'POST', '/stores', { name: 'Bell' });
            assert.equal(st.status, 202, st.text);
            await page.locator('.toast', { hasText: /finished|created/i }).first().waitFor({ timeout: 60000 });
            await page.getByRole('button', { name: /^Notifications/ }).click();
            const panel = page.locator('.notif-panel');
            const warn = panel.locator('li.notif[data-kind="warning"]', { hasText: 'Storage almost full' });
            await warn.waitFor();
            assert.match(await warn.textContent(), /%|of/);
            await panel.locator(`.notif-tasks li[data-task="${st.json.task}"][data-state="done"]`).waitFor();
            await shot('notifications');
            // Read one: it loses its mark, and the bell agrees with the server's count, here, in
            // another browser (live, SSE) and after a reload. Background work of earlier scenarios
            // (webhook deliveries giving up) may notify at any time, so the bell is compared with
            // the server's count rather than with a fixed number.
            const serverUnread = async () => (await apiAs(caps.token, 'GET', '/notifications/unread')).json.unread;
            const bellMatches = async (p, what) => {
                for (let i = 0; ; i++) {
                    const want = await serverUnread();
                    const label = await p.locator('button.bell').getAttribute('aria-label');
                    if (label === (want ? `Notifications (${want} new)` : 'Notifications')) return want;
                    assert.ok(i < 150, `${what}: the bell says "${label}", the server ${want} unread`);
                    await new Promise(r => setTimeout(r, 100));
                }
            };
            assert.ok(await serverUnread() >= 2, 'the warning and the task are both new');
            await warn.getByRole('button', { name: 'Mark read: Storage almost full' }).click();
            await warn.getByRole('button', { name: /^Mark read/ }).waitFor({ state: 'detached' });
            assert.ok((await apiAs(caps.token, 'GET', '/notifications')).json
                .filter(n => n.title === 'Storage almost full').every(n => n.read), 'the server has it read');
            assert.ok(await bellMatches(page, 'after one') >= 1, 'the task notification is still new');
            const otherCtx = await browser.newContext({ viewport: { width: 1100, height: 760 } });
            const other = await otherCtx.newPage();
            await signIn(other, USER, PASS);
            await bellMatches(other, 'the other browser');
            const shown = (await apiAs(caps.token, 'GET', '/notifications')).json.map(n => n.id);
            await page.getByRole('button', { name: 'Mark all read' }).click();
            await page.getByRole('button', { name: 'Mark all read' }).waitFor({ state: 'detached' });
            const after = (await apiAs(caps.token, 'GET', '/notifications')).json;
            assert.ok(shown.every(id => after.find(n => n.id === id)?.read), 'every one marked is read on the server');
            await bellMatches(other, 'the other browser after all');
            await otherCtx.close();
            await page.getByRole('button', { name: 'Close notifications' }).click();
            await bellMatches(page, 'after all');
            await page.reload();
            await page.getByRole('navigation', { name: 'Main' }).waitFor();
            await bellMatches(page, 'after a reload');
            assert.ok((await apiAs(caps.token, 'GET', '/notifications')).json.filter(n => shown.includes(n.id)).every(n => n.read));
        } finally {
            await apiAs(caps.token, 'PUT', '/admin/quotas/users/' + USER, { bytes: null });
        }
    });
});

describe('names that could pass for others', () => {
    // A zero-width space is allowed in new names; the page must show it. A right-to-left override
    // is refused in new names (docs/storage.md "Names") but a name made before that rule may hold
    // one: the listing is given such an entry (as an old store would hold it) to see what the page
    // does with it.
    const zw = 'zw\u200Bspace.txt', rlo = 'invoice\u202Egpj.exe', fa = '\u0645\u06CC\u200C\u0631\u0648\u0645.txt';
    if (caps.files) scenario('an invisible character shows as a marker, and an RLO name does not reorder', async () => {
        const sid = (await (await fetch(URL + '/api/v1/stores', { headers: { Authorization: 'Bearer ' + caps.token } })).json())[0].id;
        for (const name of [zw, fa]) {
            const r = await fetch(`${URL}/api/v1/stores/${sid}/files/${encodeURIComponent(name)}`, {
                method: 'PUT', body: 'x', headers: { Authorization: 'Bearer ' + caps.token },
            });
            assert.ok(r.status === 200 || r.status === 201, 'PUT answered ' + r.status);
        }
        await page.route(/\/api\/v1\/stores\/\d+\/list(\?|$)/, async route => {
            const res = await route.fetch();
            const data = await res.json();
            const e = data.entries.find(x => x.name === zw);
            if (e) data.entries.push({ ...e, id: e.id + 1000, name: rlo, path: rlo });
            await route.fulfill({ response: res, json: data });
        });
        try {
            await goFiles();
            await page.reload();
            await page.locator('.files-view').waitFor();
            await row(zw).waitFor();
            await row(rlo).waitFor();
            // The zero-width space: a visible marker that says what it is, inside an isolated <bdi>.
            const zname = row(zw).locator('.name-link bdi');
            const marker = zname.locator('.invisible-char');
            assert.equal(await marker.count(), 1);
            assert.ok(await marker.isVisible());
            assert.equal(await marker.textContent(), '200B');
            assert.equal(await marker.getAttribute('title'), 'U+200B ZERO WIDTH SPACE');
            const box = await marker.boundingBox();
            assert.ok(box.width > 4, 'the marker takes visible room: ' + JSON.stringify(box));
            // The Persian name's non-joiner sits between two Arabic letters: doing its job, not marked.
            assert.equal(await row(fa).locator('.invisible-char').count(), 0);
            // The RLO name: isolated, the override shown as a marker instead of applied, so
            // "gpj.exe" still reads left to right after "invoice", not as "invoiceexe.jpg".
            const rname = row(rlo).locator('.name-link bdi');
            assert.equal(await rname.evaluate(el => el.tagName), 'BDI');
            assert.equal(await rname.evaluate(el => getComputedStyle(el).unicodeBidi), 'isolate');
            assert.equal(await rname.locator('.invisible-char').textContent(), '202E');
            const order = await rname.evaluate(el => {
                const xs = [];
                for (const n of el.childNodes) {
                    const r = document.createRange();
                    r.selectNodeContents(n);
                    xs.push([n.textContent, r.getBoundingClientRect().left]);
                }
                return xs;
            });
            assert.deepEqual(order.map(x => x[0]), ['invoice', '202E', 'gpj.exe']);
            assert.ok(order[0][1] < order[1][1] && order[1][1] < order[2][1], 'shown left to right: ' + JSON.stringify(order));
            // Letters of "gpj.exe" in visual order: the g before the x.
            const gx = await rname.evaluate(el => {
                const t = el.lastChild, at = i => { const r = document.createRange(); r.setStart(t, i); r.setEnd(t, i + 1); return r.getBoundingClientRect().left; };
                return [at(0), at(5)];
            });
            assert.ok(gx[0] < gx[1], 'g is left of x: ' + JSON.stringify(gx));
            await shot('names');
        } finally {
            await page.unroute(/\/api\/v1\/stores\/\d+\/list(\?|$)/);
        }
    });
});

if (caps.moduleAdmin) describe('administration', () => {
    // The part to watch: the first one in this list whose modules are loaded. trash is the
    // real thing; greeting (the hello example module) stands in while trash does not exist.
    const part = ['trash', 'greeting'].find(p => caps.partOn(p));
    const moduleName = part && PARTS[part][0];

    scenario('the admin pages', async () => {
        await page.getByRole('link', { name: 'Administration' }).click();
        await page.getByRole('heading', { name: 'Users' }).waitFor();
        await page.locator('tr[data-user="admin"]').waitFor();
        await shot('admin-users');
        await page.getByRole('link', { name: 'Modules' }).click();
        await page.locator('tr[data-module]').first().waitFor();
        await shot('admin-modules');
    });

    // Each part is found by its data-part; its module is switched off in the Modules tab and back on.
    const toggles = [[part, moduleName], ...['webhooks', 'sharing'].filter(p => caps.partOn(p)).map(p => [p, PARTS[p][0]])]
        .filter(([p]) => p);
    for (const [part, moduleName] of toggles) {
        scenario(`switching the ${moduleName} module off hides its part of the page, on shows it again`, async () => {
            await page.getByRole('link', { name: 'Modules' }).click();
            const el = page.locator(`[data-part="${part}"]`).first();
            await el.waitFor({ state: 'visible' });
            const sw = page.locator(`tr[data-module="${moduleName}"] [role=switch]`);
            assert.equal(await sw.getAttribute('aria-checked'), 'true');
            await sw.click();
            await page.locator(`tr[data-module="${moduleName}"][data-state]:not([data-state="active"])`).waitFor();
            await el.waitFor({ state: 'hidden' });
            if (part === 'sharing') { // a link's page says sharing is off instead of failing somehow
                const p = await context.newPage();
                await p.goto(URL + '/s/' + 'x'.repeat(43));
                await p.getByText('Sharing is not available on this server right now.').waitFor();
                await p.close();
            }
            await page.locator(`tr[data-module="${moduleName}"] [role=switch]`).click();
            await page.locator(`tr[data-module="${moduleName}"][data-state="active"]`).waitFor();
            await el.waitFor({ state: 'visible' });
        });
    }

    if (caps.partOn('admin-quotas')) scenario('quotas: the page shows the quotas held; a quota of 0 is a limit in the usage meter at once, an empty field is no limit', async () => {
        const q = await apiAs(caps.token, 'PUT', '/admin/quotas/roles/user', { bytes: 2 * 2 ** 30 });
        assert.equal(q.status, 200, q.text);
        const nav = page.getByRole('navigation', { name: 'Main' });
        try {
            await page.getByRole('link', { name: 'Administration' }).click();
            await page.getByRole('link', { name: 'Quotas' }).click();
            assert.equal(await page.getByLabel('Role user in GiB').inputValue(), '2');
            assert.equal(await page.getByLabel('Role admin in GiB').inputValue(), '');
            const form = page.locator('form.inline-form', { has: page.getByLabel('Quota for user in GiB') });
            await form.getByLabel('Username').fill(USER);
            await form.getByLabel('Quota for user in GiB').fill('0');
            await form.getByRole('button', { name: 'Save' }).click();
            await nav.getByText(/ of 0 B used$/).waitFor(); // no reload: the meter follows
            assert.equal(await nav.getByText(/no limit/).count(), 0);
            assert.equal((await apiAs(caps.token, 'GET', '/admin/quotas/users/' + USER)).json.bytes, 0);
            await form.getByLabel('Quota for user in GiB').fill('');
            await form.getByRole('button', { name: 'Save' }).click();
            await nav.getByText(/used \(no limit\)$/).waitFor();
            assert.equal((await apiAs(caps.token, 'GET', '/admin/quotas/users/' + USER)).json.bytes, null);
            await shot('admin-quotas');
        } finally {
            await apiAs(caps.token, 'PUT', '/admin/quotas/users/' + USER, { bytes: null });
            await apiAs(caps.token, 'PUT', '/admin/quotas/roles/user', { bytes: null });
        }
    });

    scenario('adding a user with a bad name shows the reason under the field', async () => {
        await page.getByRole('link', { name: 'Users' }).click();
        await page.getByRole('button', { name: 'Add user' }).click();
        const dlg = page.getByRole('dialog');
        await dlg.getByLabel('Username').fill('Bad Name!');
        await dlg.getByLabel('Password').fill('long-enough-1');
        await dlg.getByRole('button', { name: 'Add user' }).click();
        await dlg.locator('.field-error').waitFor();
        await dlg.getByLabel('Username').fill('carol');
        await dlg.getByRole('button', { name: 'Add user' }).click();
        await dlg.waitFor({ state: 'detached' });
        await page.locator('tr[data-user="carol"]').waitFor();
    });
});

if (caps.partOn('store-create')) describe('stores', () => {
    scenario('create a store and see its task complete', async () => {
        await page.getByRole('button', { name: 'Switch store' }).click();
        await page.getByRole('menuitem', { name: 'New store…' }).click();
        await page.getByRole('dialog').getByLabel('Store name').fill('Photos');
        await page.getByRole('dialog').getByRole('button', { name: 'Create store' }).click();
        await page.locator('.toast-success', { hasText: 'Photos' }).waitFor({ timeout: 60000 });
        await page.getByRole('button', { name: 'Switch store' }).locator('.store-name', { hasText: 'Photos' }).waitFor();
    });
});

describe('phone width', () => {
    scenario('the pages fit a phone screen', async () => {
        const ctx = await browser.newContext({ viewport: { width: 390, height: 844 }, deviceScaleFactor: 2, hasTouch: true });
        const p = await ctx.newPage();
        await signIn(p, USER, PASS);
        await p.getByRole('button', { name: 'Menu' }).waitFor();
        await p.locator('.files-view, .empty').first().waitFor();
        await p.screenshot({ path: join(ART, 'phone-files.png') });
        // Nothing may stick out sideways.
        assert.ok(await p.evaluate(() => document.documentElement.scrollWidth <= window.innerWidth + 1));
        await p.getByRole('button', { name: 'Menu' }).click();
        await p.getByRole('link', { name: 'Files' }).waitFor({ state: 'visible' });
        await p.waitForFunction(() => document.querySelector('.sidenav').getBoundingClientRect().left >= 0);
        await p.screenshot({ path: join(ART, 'phone-menu.png') });
        await ctx.close();
    });
});

describe('signing out', () => {
    scenario('sign out returns to the sign-in screen and the session is gone', async () => {
        await page.getByRole('button', { name: /^Account: / }).click();
        await page.getByRole('menuitem', { name: 'Sign out' }).click();
        await page.getByRole('heading', { name: 'Sign in' }).waitFor();
        const r = await page.evaluate(async () => (await fetch('/api/v1/me')).status);
        assert.equal(r, 401);
    });
});
