// tests/gui/browser.mjs — what the browser tests share: the environment their Python runner
// (tests/integration/test_gui*.py) sets, and a headless Debian chromium through playwright-core
// with a page that reports its script errors.
import assert from 'node:assert/strict';
import { chromium } from 'playwright-core';
import { mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export const URL = process.env.MBYTE_URL;
export const USER = process.env.MBYTE_ADMIN_USER || 'admin';
export const PASS = process.env.MBYTE_ADMIN_PASSWORD;
export const ART = process.env.MBYTE_ARTIFACTS || join(tmpdir(), 'mbyte-gui-artifacts');

/* Fail at once, naming the runner, when the environment is missing; make the artifacts folder. */
export function checkEnv(runner, ...more) {
    assert.ok(URL && PASS && more.every(Boolean), `the browser test's environment is missing (${runner} sets it)`);
    mkdirSync(ART, { recursive: true });
}

/* Headless chromium, quiet: no first-run, sync, component updates or QUIC to other hosts.
 * playwright gives every launch a fresh temporary --user-data-dir of its own. */
export function launchBrowser() {
    return chromium.launch({
        executablePath: '/usr/bin/chromium',
        args: ['--headless=new', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
            '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    });
}

/* A new context and page at a desktop size; script errors of the page go to the test's log. */
export async function newPage(browser, { width = 1366, height = 860, timeout = 15000 } = {}) {
    const context = await browser.newContext({ viewport: { width, height } });
    context.setDefaultTimeout(timeout);
    const page = await context.newPage();
    page.on('pageerror', e => console.log('# page error:', e.message));
    return { context, page };
}

/* Open the page and sign in (the admin unless told otherwise). */
export async function signIn(page, user = USER, pass = PASS) {
    await page.goto(URL + '/');
    await page.getByLabel('Username').fill(user);
    await page.getByLabel('Password').fill(pass);
    await page.getByRole('button', { name: 'Sign in' }).click();
}

/* fn() until it is true, every 100 ms for at most tries: an assertion naming `what` otherwise. */
export async function until(fn, what, tries = 300) {
    for (let i = 0; ; i++) {
        if (await fn()) return;
        assert.ok(i < tries, 'timed out waiting for ' + what);
        await new Promise(res => setTimeout(res, 100));
    }
}
