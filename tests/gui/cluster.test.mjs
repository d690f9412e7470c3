// tests/gui/cluster.test.mjs — the Cluster section of the web page, in a real browser (Debian's
// chromium via playwright-core), against node n1 of a real two-node cluster (a real etcd and two
// mbyted) started by tests/integration/test_gui_cluster.py. The admin sees both nodes up with
// their address, capacity and how many stores each keeps, which one leads (the one the API names) and which serves the page,
// and every store with the node keeping it and its replica; moves a store to n2 with its Move button (the API then
// names n2 its keeper, n1 its replica), and after n2 is killed sees n1 keep it again (the takeover);
// the Modules section says switching is cluster-wide; after the test's runner kills n2 (it
// waits for the file MBYTE_TEST_KILL_DONE), Refresh shows n2 gone. Env as for gui.test.mjs, plus
// MBYTE_TEST_NODES ("n1,n2"), MBYTE_TEST_KILL (a file to create when n2 should be killed) and
// MBYTE_TEST_KILL_DONE.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { URL, USER, PASS, ART, checkEnv, launchBrowser, newPage, signIn, until } from './browser.mjs';

checkEnv('tests/integration/test_gui_cluster.py', process.env.MBYTE_TEST_NODES, process.env.MBYTE_TEST_KILL, process.env.MBYTE_TEST_KILL_DONE);

const NODES = process.env.MBYTE_TEST_NODES.split(',');
let browser, page, token;

async function view() {
    const r = await fetch(URL + '/api/v1/admin/cluster', { headers: { Authorization: 'Bearer ' + token } });
    assert.equal(r.status, 200);
    return r.json();
}

before(async () => {
    const login = await fetch(URL + '/api/v1/auth/login', { method: 'POST', body: JSON.stringify({ username: USER, password: PASS }) });
    token = (await login.json()).token;
    await until(async () => { const v = await view(); return v.leader && v.nodes.filter(n => n.replication).length === NODES.length; },
        'both nodes (taking replicas) and a leader');
    // an account made now: its Home is kept by n1 and replicated on n2 (the admin's came before n2)
    const made = await fetch(URL + '/api/v1/admin/users', { method: 'POST', headers: { Authorization: 'Bearer ' + token },
        body: JSON.stringify({ username: 'rosa', password: 'rosa-password-1', role: 'user' }) });
    assert.equal(made.status, 201);
    browser = await launchBrowser();
    ({ page } = await newPage(browser));
});

after(async () => { await browser?.close(); });

test('the admin sees the nodes, the leader and this node; a killed node leaves the list', async () => {
    await signIn(page);
    await page.goto(URL + '/#/admin/cluster');
    const table = page.getByRole('table', { name: 'Cluster nodes' });
    await table.waitFor();
    const v = await view();
    assert.deepEqual((await table.locator('tbody tr').evaluateAll(rs => rs.map(r => r.dataset.node))).sort(), [...NODES].sort());
    for (const n of v.nodes) {
        const row = table.locator(`tr[data-node="${n.name}"]`);
        assert.equal(await row.getAttribute('data-state'), 'up');
        const cells = await row.locator('td').allTextContents();
        assert.equal(cells[1], n.address, 'the address etcd has');
        assert.match(cells[3], /\d.*B/, 'the capacity, in bytes units');
        assert.equal(cells[5], String(v.stores.filter(st => st.owner === n.name).length), 'the stores kept there');
        assert.match(cells[6], /\d.*B/, 'the bytes of those stores, in bytes units');

    }
    assert.ok(v.stores.length >= 1, 'at least the admin\'s Home store');
    // every store with the node keeping it and its replica, as the API says
    const stores = page.getByRole('table', { name: 'Cluster stores' });
    for (const st of v.stores) {
        const cells = await stores.locator(`tr[data-store="${st.id}"] td`).allTextContents();
        assert.deepEqual(cells.slice(0, 5).map(c => c.trim()), [String(st.id), String(st.user), st.owner, st.replica || 'none', String(st.epoch)]);
    }
    const onN1 = v.stores.find(st => st.owner === 'n1' && st.replica);
    assert.equal(onN1?.replica, 'n2', 'a store of n1 is replicated on n2, the only other node');
    const leaders = table.locator('tr', { has: page.locator('.badge', { hasText: /^leader$/ }) });
    assert.equal(await leaders.count(), 1, 'one leader');
    assert.equal(await leaders.getAttribute('data-node'), v.leader, 'the leader the API names');
    const self = table.locator('tr', { has: page.locator('.badge', { hasText: /^this node$/ }) });
    assert.equal(await self.getAttribute('data-node'), v.node);
    await page.getByText(`This page is served by node ${v.node}.`).waitFor();
    await page.getByText('every change made here has reached etcd').waitFor();
    await page.screenshot({ path: join(ART, 'gui-cluster.png') });

    // Move: n1's store goes to n2 and back is not needed; the API then names n2 its keeper and n1 its replica
    const moving = stores.locator(`tr[data-store="${onN1.id}"]`);
    await moving.getByRole('combobox', { name: `Move store ${onN1.id} to` }).selectOption('n2');
    await moving.getByRole('button', { name: 'Move' }).click();
    await page.getByText(new RegExp(`Store ${onN1.id} moves to node n2 \\(task \\d+\\)`)).waitFor();
    await until(async () => { const st = (await view()).stores.find(x => x.id === onN1.id); return st.owner === 'n2' && st.replica === 'n1'; },
        'the store to be kept by n2, with n1 its replica');
    await until(async () => {
        await page.getByRole('button', { name: 'Refresh' }).click();
        const cells = await page.getByRole('table', { name: 'Cluster stores' }).locator(`tr[data-store="${onN1.id}"] td`).allTextContents();
        return cells[2]?.trim() === 'n2' && cells[3]?.trim() === 'n1';
    }, 'the page to show it');

    // the runner kills n2; after its lease n2 is gone from the list on Refresh
    writeFileSync(process.env.MBYTE_TEST_KILL, '');
    await until(async () => existsSync(process.env.MBYTE_TEST_KILL_DONE), 'the runner to kill n2');
    await until(async () => {
        await page.getByRole('button', { name: 'Refresh' }).click();
        await table.waitFor();
        return (await table.locator('tr[data-node="n2"]').count()) === 0 && (await table.locator('tr[data-node="n1"]').count()) === 1;
    }, 'n2 to leave the list');
    // the store moved to n2 is taken back over by n1, its replica, once n2 is gone
    await until(async () => {
        await page.getByRole('button', { name: 'Refresh' }).click();
        const row = page.getByRole('table', { name: 'Cluster stores' }).locator(`tr[data-store="${onN1.id}"] td`);
        return (await row.nth(2).textContent()).trim() === 'n1';
    }, 'n1 to keep the store again');

    // Modules: switching is said to be cluster-wide
    await page.getByRole('link', { name: 'Modules' }).click();
    await page.getByText('switching a module on or off does it on every node').waitFor();
});
