// tests/gui/discord.test.mjs — the Discord view (web/js/discord.js) in a real browser (Debian's
// chromium, headless, through playwright-core) against a real mbyted with the discord module,
// pointed by tests/integration/test_gui_discord.py at tests/tools/fakediscord.py (the stand-in
// for Discord's API v10).
//
// Env: MBYTE_URL, MBYTE_ADMIN_USER, MBYTE_ADMIN_PASSWORD, MBYTE_ARTIFACTS, MBYTE_DISCORD_CHANNEL
// (a channel of the stand-in) and MBYTE_DISCORD_MESSAGES (how many messages it holds).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { URL, USER, PASS, ART, checkEnv, launchBrowser, newPage } from './browser.mjs';

const CHANNEL = process.env.MBYTE_DISCORD_CHANNEL;
const COUNT = process.env.MBYTE_DISCORD_MESSAGES;
checkEnv('tests/integration/test_gui_discord.py', CHANNEL, COUNT);

let browser, page;

before(async () => {
    browser = await launchBrowser();
    ({ page } = await newPage(browser));
});

after(async () => { await browser?.close(); });

test('a channel is connected to a folder, run now, and its state shows the messages backed up', async () => {
    await page.goto(URL + '/');
    await page.getByLabel('Username').fill(USER);
    await page.getByLabel('Password').fill(PASS);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.getByRole('link', { name: 'Discord' }).click();
    const view = page.getByRole('region', { name: 'Discord' });
    await view.getByText('No channel backed up into this store yet').waitFor();
    await view.getByLabel('Channel id').fill(CHANNEL);
    await view.getByLabel('Folder').fill('chat/backup');
    await view.getByRole('button', { name: 'Connect' }).click();
    const row = view.locator('tr', { hasText: CHANNEL });
    await row.waitFor();
    assert.match(await row.innerText(), /chat\/backup/);
    assert.match(await row.innerText(), /\bnew\b/);
    await row.getByRole('button', { name: 'Run now' }).click();
    await page.getByText(/Backup started \(task \d+\)/).waitFor();
    // The state shows once the run is over: reopen the view until it does.
    const deadline = Date.now() + 60000;
    for (;;) {
        await page.getByRole('link', { name: 'Files' }).click();
        await page.getByRole('link', { name: 'Discord' }).click();
        await row.waitFor();
        const text = await row.innerText();
        if (/\bok\b/.test(text)) {
            assert.match(text, new RegExp('\\b' + COUNT + '\\b'), text);
            break;
        }
        assert.ok(Date.now() < deadline, 'the backup never showed as ok: ' + text);
        await page.waitForTimeout(300);
    }
    // Notifications: choose one event for a webhook of the stand-in; a URL elsewhere is refused.
    await view.getByLabel('Discord webhook URL').fill('http://169.254.169.254/x');
    await view.getByRole('button', { name: 'Save notifications' }).click();
    await view.getByText('webhook_url: a Discord webhook URL').waitFor();
    // Linking: no Discord id to type; a one-time code to type in Discord instead.
    await view.getByText('No Discord account linked.').waitFor();
    await view.getByRole('button', { name: 'Get a link code' }).click();
    const code = await view.locator('p.discord-code code').innerText();
    assert.match(code, /^\/mbyte link [A-HJ-NP-Z2-9]{4}-[A-HJ-NP-Z2-9]{4}$/);
    await page.screenshot({ path: join(ART, 'discord.png') });
});
