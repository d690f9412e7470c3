// tests/gui/readme-shot.mjs — makes docs/img/files.png, the file view in README.md: a real mbyted
// (the release build, every shipped module, a fresh temporary data directory) holding a few real
// files of this repository, signed in through the page and photographed by Debian's chromium
// through playwright-core (tests/setup/gui.sh installs both).
//
//   node tests/gui/readme-shot.mjs            (from the repository root, after ninja -C build-release)
//
// Env: MBYTED (default build-release/mbyted), MBYTE_MODULE_DIR (default build-release/modules),
// OUT (default docs/img/files.png). The server is stopped and its data removed at the end.
import { chromium } from 'playwright-core';
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const MBYTED = process.env.MBYTED || join(ROOT, 'build-release', 'mbyted');
const MODULES = process.env.MBYTE_MODULE_DIR || join(ROOT, 'build-release', 'modules');
const OUT = process.env.OUT || join(ROOT, 'docs', 'img', 'files.png');
const PASS = 'readme-shot-password';

const freePort = () => new Promise(res => {
    const s = createServer().listen(0, '127.0.0.1', () => { const p = s.address().port; s.close(() => res(p)); });
});

const tmp = mkdtempSync(join(tmpdir(), 'mbyte-shot-'));
const port = await freePort();
const URL = `http://127.0.0.1:${port}`;
// The shipped conf.d, but FTP on a free port (another server on this machine may hold 2121).
const srv = spawn(MBYTED, ['--config', join(ROOT, 'conf.d')], {
    env: { ...process.env, MBYTE_LISTEN: `127.0.0.1:${port}`, MBYTE_DATA: join(tmp, 'data'), MBYTE_MODULE_DIR: MODULES,
        MBYTE_WEB_DIR: join(ROOT, 'web'), MBYTE_LUA_DIR: join(ROOT, 'scripts', 'lua'), MBYTE_ADMIN_PASSWORD: PASS,
        MBYTE_FTP_LISTEN: `127.0.0.1:${await freePort()}` },
    stdio: 'ignore',
});
let browser;
try {
    for (let i = 0; ; i++) { // up: the public health answers
        try { if ((await fetch(URL + '/api/v1/health')).ok) break; } catch { /* not yet */ }
        if (i > 300) throw new Error('mbyted did not come up');
        await new Promise(r => setTimeout(r, 100));
    }
    const { token } = await (await fetch(URL + '/api/v1/auth/login', {
        method: 'POST', body: JSON.stringify({ username: 'admin', password: PASS }),
    })).json();
    const auth = { Authorization: 'Bearer ' + token };
    const sid = (await (await fetch(URL + '/api/v1/stores', { headers: auth })).json())[0].id;
    const put = async (path, file) => {
        const r = await fetch(`${URL}/api/v1/stores/${sid}/files/${path.split('/').map(encodeURIComponent).join('/')}?parents=true`,
            { method: 'PUT', headers: auth, body: readFileSync(join(ROOT, file)) });
        if (!r.ok) throw new Error(`PUT ${path}: ${r.status}`);
    };
    for (const folder of ['Documents', 'Photos', 'Projects']) {
        await fetch(`${URL}/api/v1/stores/${sid}/folders`, { method: 'POST', headers: auth, body: JSON.stringify({ path: folder }) });
    }
    await put('Documents/api.md', 'docs/api.md');
    await put('Documents/operations.md', 'docs/operations.md');
    await put('Projects/mbyte.h', 'abi/mbyte.h');
    await put('README.md', 'README.md');
    await put('DESIGN-notes.md', 'docs/storage.md');
    await put('logo.svg', 'web/img/logo.svg');
    await put('trash.c', 'modules/trash/trash.c');
    // A quota, so the usage meter shows its bar.
    await fetch(URL + '/api/v1/admin/quotas/users/admin', { method: 'PUT', headers: auth, body: JSON.stringify({ bytes: 10 * 2 ** 30 }) });

    browser = await chromium.launch({ executablePath: '/usr/bin/chromium', args: ['--headless=new', '--no-sandbox', '--disable-gpu'] });
    const page = await (await browser.newContext({ viewport: { width: 1280, height: 720 } })).newPage();
    await page.goto(URL + '/');
    await page.getByLabel('Username').fill('admin');
    await page.getByLabel('Password').fill(PASS);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.locator('table.files tbody tr[data-path="trash.c"]').waitFor();
    await page.getByRole('progressbar', { name: 'Storage used' }).waitFor();
    await page.screenshot({ path: OUT });
    console.log('wrote ' + OUT);
} finally {
    await browser?.close();
    srv.kill('SIGTERM');
    await new Promise(r => srv.once('exit', r));
    rmSync(tmp, { recursive: true, force: true });
}
