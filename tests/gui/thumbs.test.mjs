// tests/gui/thumbs.test.mjs — the thumbnails on the web page (web/js/thumbs.js) in Debian's
// chromium through playwright-core, against a real mbyted that tests/integration/test_gui_thumbs.py
// started and filled: a folder "pics" of pictures whose thumbnails are made, and notes.md.
//
// Env: MBYTE_URL, MBYTE_ADMIN_USER, MBYTE_ADMIN_PASSWORD, MBYTE_ARTIFACTS.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { chromium } from 'playwright-core';
import { mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const URL = process.env.MBYTE_URL;
const USER = process.env.MBYTE_ADMIN_USER || 'admin';
const PASS = process.env.MBYTE_ADMIN_PASSWORD;
const ART = process.env.MBYTE_ARTIFACTS || join(tmpdir(), 'mbyte-gui-artifacts');
assert.ok(URL && PASS, 'MBYTE_URL and MBYTE_ADMIN_PASSWORD must be set (tests/integration/test_gui_thumbs.py does)');
mkdirSync(ART, { recursive: true });

let browser, page;
before(async () => {
    browser = await chromium.launch({
        executablePath: '/usr/bin/chromium',
        args: ['--headless=new', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking'],
    });
    const context = await browser.newContext({ viewport: { width: 1280, height: 860 } });
    context.setDefaultTimeout(20000);
    page = await context.newPage();
    page.on('pageerror', e => console.log('# page error:', e.message));
});
after(async () => { await browser?.close(); });

test('a folder of pictures is a grid of thumbnails, blurred hash first, and the panel previews one', async () => {
    await page.goto(URL + '/');
    await page.getByLabel('Username').fill(USER);
    await page.getByLabel('Password').fill(PASS);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.getByRole('link', { name: 'Files' }).click();
    await page.locator('.files-view').waitFor();
    // the root has notes.md and a folder: a list with a small picture in the notes.md row
    const small = page.locator('table.files tr[data-path="notes.md"] img.thumb-small');
    await small.waitFor();
    await page.waitForFunction(() => {
        const i = document.querySelector('table.files tr[data-path="notes.md"] img.thumb-small');
        return i && i.dataset.thumbState === 'ready' && i.complete && i.naturalWidth > 0;
    });
    // the thumbnails of the folder are held back until the blurred hashes were seen
    let release;
    const held = new Promise(r => { release = r; });
    await page.route('**/thumbnails/pics/**', async route => { await held; await route.continue(); });
    await page.locator('table.files tr[data-path="pics"] a.name-link').click();
    const tiles = page.locator('ul.thumb-grid img.thumb-tile');
    await tiles.first().waitFor();
    assert.equal(await tiles.count(), 3);
    // each tile carries the blurred ThumbHash as its background, drawn before the picture loads
    for (const bg of await tiles.evaluateAll(ims => ims.map(i => i.style.backgroundImage)))
        assert.match(bg, /^url\("data:image\/png;base64,/);
    await page.screenshot({ path: join(ART, 'thumbs-hashes.png') });
    release();
    await page.waitForFunction(() => [...document.querySelectorAll('ul.thumb-grid img.thumb-tile')]
        .every(i => i.dataset.thumbState === 'ready' && i.complete && i.naturalWidth > 0));
    // once a picture is there its hash is gone (it would show around a contained picture)
    for (const bg of await tiles.evaluateAll(ims => ims.map(i => i.style.backgroundImage)))
        assert.equal(bg, '');
    // the portrait photo (EXIF orientation 6) is taller than wide in the grid too
    const dims = await page.locator('button.thumb-item[data-path="pics/photo.jpg"] img')
        .evaluate(i => [i.naturalWidth, i.naturalHeight]);
    assert.deepEqual(dims, [192, 256]);
    await page.screenshot({ path: join(ART, 'thumbs-grid.png') });
    // the list view is one click away, and back
    await page.getByRole('button', { name: 'List view' }).click();
    await page.locator('table.files tr[data-path="pics/alpha.png"] img.thumb-small').waitFor();
    await page.getByRole('button', { name: 'Grid view' }).click();
    // a tile opens the side panel with the large preview
    await page.locator('button.thumb-item[data-path="pics/photo.jpg"]').click();
    await page.waitForFunction(() => {
        const i = document.querySelector('aside.panel figure.thumb-preview img');
        return i && i.dataset.thumbState === 'ready' && i.complete && i.naturalHeight === 1024;
    });
    await page.screenshot({ path: join(ART, 'thumbs-preview.png') });
});
