// tests/gui/gui_ftp.test.mjs — the FTP access panel (web/js/ftp.js) in a real browser (Debian's
// chromium, headless, through playwright-core) against a real mbyted started by
// tests/integration/test_gui_ftp.py with the ftp module on a port of the test's own.
//
// Env: MBYTE_URL, MBYTE_ADMIN_USER, MBYTE_ADMIN_PASSWORD, MBYTE_ARTIFACTS, and what the server was
// told to listen on: MBYTE_FTP_PORT, MBYTE_FTP_IMPLICIT_PORT, MBYTE_FTP_PASV_PORTS ("min-max").
// The panel must show those, not the shipped defaults, and its copy buttons must put them on the
// clipboard.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { chromium } from 'playwright-core';
import { mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const URL = process.env.MBYTE_URL;
const USER = process.env.MBYTE_ADMIN_USER || 'admin';
const PASS = process.env.MBYTE_ADMIN_PASSWORD;
const PORT = process.env.MBYTE_FTP_PORT;
const IPORT = process.env.MBYTE_FTP_IMPLICIT_PORT;
const PASV = (process.env.MBYTE_FTP_PASV_PORTS || '').split('-');
const ART = process.env.MBYTE_ARTIFACTS || join(tmpdir(), 'mbyte-gui-artifacts');
assert.ok(URL && PASS && PORT && IPORT && PASV.length === 2, 'tests/integration/test_gui_ftp.py sets the environment');
mkdirSync(ART, { recursive: true });

let browser, context, page;

before(async () => {
    browser = await chromium.launch({
        executablePath: '/usr/bin/chromium',
        args: ['--headless=new', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
            '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    });
    context = await browser.newContext({ viewport: { width: 1366, height: 860 } });
    context.setDefaultTimeout(15000);
    await context.grantPermissions(['clipboard-read', 'clipboard-write'], { origin: URL });
    page = await context.newPage();
    page.on('pageerror', e => console.log('# page error:', e.message));
});

after(async () => { await browser?.close(); });

test('the FTP panel shows what the server listens on, and each Copy button copies it', async () => {
    await page.goto(URL + '/');
    await page.getByLabel('Username').fill(USER);
    await page.getByLabel('Password').fill(PASS);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.getByRole('button', { name: /^Account: / }).click();
    await page.getByRole('menuitem', { name: 'FTP access…' }).click();
    const dlg = page.getByRole('dialog', { name: 'FTP access' });
    const value = label => dlg.getByLabel(label, { exact: true });
    await value('Port').waitFor();
    const want = {
        'Host': '127.0.0.1', 'Port': PORT, 'User name': USER, 'TLS': 'explicit',
        'Implicit TLS port': IPORT, 'Passive ports': PASV[0] + '–' + PASV[1],
    };
    for (const [label, v] of Object.entries(want))
        assert.equal(await value(label).inputValue(), v, label);
    assert.notEqual(PORT, '2121', 'the test must use a port other than the shipped default');
    await dlg.getByText('explicit TLS (“FTP over TLS”, AUTH TLS) is required').waitFor();
    await dlg.getByText('listens on this machine only').waitFor(); // 127.0.0.1: honest about reach
    for (const label of ['Host', 'Port', 'User name']) {
        await dlg.getByRole('button', { name: 'Copy ' + label, exact: true }).click();
        assert.equal(await page.evaluate(() => navigator.clipboard.readText()), want[label], 'Copy ' + label);
    }
    await page.screenshot({ path: join(ART, 'ftp-connection.png') });
    await dlg.getByRole('button', { name: 'Close', exact: true }).last().click();
    await dlg.waitFor({ state: 'detached' });
});
