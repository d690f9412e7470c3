/*
 * web/js/admin.js — the administrator's view: users (add, change role, reset password), quotas
 * per role and per user, the modules with on/off and reload, the task queue with cancel, the
 * storage backends with their health and usage (and new ones declared), the integrity findings, and in
 * cluster mode the nodes with their health and capacity. Every refusal appears on the row or field that caused it.
 *
 * After a module is switched, the page re-reads /api/v1/features (refreshModules) so every part
 * that belongs to that module appears or disappears at once.
 */
import { api } from './api.js';
import { h, icon, button, clear, dialog, confirmDialog, field, toast, formatTime, formatBytes } from './ui.js';
import { on, emit } from './state.js';
import { applyParts, partEnabled } from './modules.js';
import { auditTab } from './activity.js';

const TABS = [
    { id: 'users', label: 'Users', icon: 'users' },
    { id: 'quotas', label: 'Quotas', icon: 'pie', part: 'admin-quotas' },
    { id: 'modules', label: 'Modules', icon: 'puzzle' },
    { id: 'tasks', label: 'Tasks', icon: 'tasks' },
    { id: 'backends', label: 'Storage', icon: 'store' },
    { id: 'cluster', label: 'Cluster', icon: 'server', cluster: true },
    { id: 'integrity', label: 'Integrity', icon: 'shield', part: 'integrity' },
    { id: 'audit', label: 'Audit log', icon: 'history', part: 'activity' },
];

export class AdminView {
    constructor({ refreshModules }) {
        this.refreshModules = refreshModules;
        this.tab = 'users';
        this.el = h('section.view.admin-view', { 'aria-label': 'Administration' });
        this.body = h('div.admin-body');
        this.rowErrors = new Map();
        on('task', () => { if (this.tab === 'tasks' && this.el.isConnected) this.show('tasks', true); });
    }

    /* Whether this server is a cluster node (GET /admin/cluster is 404 on a single server); asked once. */
    async clusterMode() {
        if (this.inCluster === undefined) {
            try { await api('GET', '/admin/cluster'); this.inCluster = true; }
            catch (e) { if (e.status !== 404) throw e; this.inCluster = false; }
        }
        return this.inCluster;
    }

    async show(tab, quiet) {
        const cluster = await this.clusterMode().catch(() => false);
        const shown = TABS.filter(x => !x.cluster || cluster);
        const t = shown.find(x => x.id === tab && (!x.part || partEnabled(x.part))) ? tab : 'users';
        if (t !== this.tab) this.rowErrors.clear();
        this.tab = t;
        const nav = h('nav.tabs.admin-tabs', { 'aria-label': 'Administration sections' },
            shown.map(x => h('a.tab', {
                href: '#/admin/' + x.id, 'aria-current': x.id === t ? 'page' : null,
                dataset: x.part ? { part: x.part } : undefined,
            }, icon(x.icon), x.label)));
        clear(this.el, h('div.view-head', h('h1.view-title', icon('shield'), 'Administration')), nav, this.body);
        applyParts(this.el);
        if (!quiet) clear(this.body, h('p.muted', 'Loading…'));
        try {
            await this[t]();
        } catch (e) {
            clear(this.body, h('div.empty.error-state', { role: 'alert' }, icon('alert'), h('p', e.message),
                button('Try again', 'refresh', () => this.show(t))));
        }
    }

    errRow(key, cols) {
        const m = this.rowErrors.get(key);
        return m ? h('tr.row-error', h('td', { colspan: String(cols), role: 'alert' }, icon('alert'), m)) : null;
    }

    /* ------------------------------------------------------- audit log --- */
    async audit() { await auditTab(this.body); }

    /* ------------------------------------------------------------ users --- */
    async users() {
        const list = await api('GET', '/admin/users');
        const tbody = h('tbody');
        for (const u of list) {
            const role = h('select', { 'aria-label': 'Role of ' + u.username },
                ['user', 'admin'].map(r => h('option', { value: r, selected: u.role === r }, r)));
            role.addEventListener('change', async () => {
                try {
                    await api('PATCH', '/admin/users/' + encodeURIComponent(u.username), { role: role.value });
                    this.rowErrors.delete(u.username);
                    toast(`${u.username} is now ${role.value === 'admin' ? 'an administrator' : 'a user'}.`, 'success');
                } catch (e) {
                    this.rowErrors.set(u.username, 'Could not change the role: ' + e.message);
                }
                this.show('users', true);
            });
            tbody.append(h('tr', { dataset: { user: u.username } },
                h('td', h('span.avatar.small', u.username.slice(0, 1).toUpperCase()), u.username),
                h('td', role), h('td.col-mtime', formatTime(u.created)),
                h('td.col-actions', button('Reset password', null, () => this.resetPassword(u.username), { cls: 'small' }))));
            const er = this.errRow(u.username, 4);
            if (er) tbody.append(er);
        }
        clear(this.body,
            h('div.section-head', h('h2', 'Users'), button('Add user', 'plus', () => this.addUser(), { cls: 'primary' })),
            h('div.table-wrap', h('table.files.admin-table', { 'aria-label': 'Users' },
                h('thead', h('tr', h('th', { scope: 'col' }, 'Username'), h('th', { scope: 'col' }, 'Role'),
                    h('th.col-mtime', { scope: 'col' }, 'Created'), h('th.col-actions', { scope: 'col' }, h('span.sr-only', 'Actions')))),
                tbody)));
    }

    async addUser() {
        const name = h('input', { type: 'text', name: 'username', autocomplete: 'off', autocapitalize: 'none' });
        const pass = h('input', { type: 'password', name: 'password', autocomplete: 'new-password' });
        const role = h('select', { name: 'role' }, h('option', { value: 'user' }, 'user'), h('option', { value: 'admin' }, 'admin'));
        await dialog({
            title: 'Add user',
            body: [field('Username', name, 'Lower-case letters, digits, dot, dash and underscore.'),
                field('Password', pass, 'At least 8 characters.'), field('Role', role)],
            actions: [{ label: 'Cancel' }, { label: 'Add user', primary: true, value: 'ok' }],
            onSubmit: async () => {
                try {
                    await api('POST', '/admin/users', { username: name.value.trim(), password: pass.value, role: role.value });
                } catch (e) {
                    throw Object.assign(e, { field: e.field || (/password/i.test(e.message) ? 'password' : 'username') });
                }
                toast(`User ${name.value.trim()} added.`, 'success');
                this.show('users', true);
            },
        });
    }

    async resetPassword(username) {
        const pass = h('input', { type: 'password', name: 'password', autocomplete: 'new-password' });
        await dialog({
            title: 'Reset password of ' + username, body: field('New password', pass, 'At least 8 characters.'),
            actions: [{ label: 'Cancel' }, { label: 'Set password', primary: true, value: 'ok' }],
            onSubmit: async () => {
                try { await api('PATCH', '/admin/users/' + encodeURIComponent(username), { password: pass.value }); }
                catch (e) { throw Object.assign(e, { field: 'password' }); }
                toast(`The password of ${username} was changed.`, 'success');
            },
        });
    }

    /* ----------------------------------------------------------- quotas --- */
    /* An empty field is "no limit" (the server's null); 0 is a real quota that lets nothing
     * in. Each form shows the value the server holds now. */
    async quotas() {
        const get = async path => { try { return (await api('GET', path)).bytes; } catch { return null; } };
        const [roleUser, roleAdmin] = await Promise.all([get('/admin/quotas/roles/user'), get('/admin/quotas/roles/admin')]);
        const gib = b => (b === null || b === undefined ? '' : String(+(b / 2 ** 30).toFixed(3)));
        const quotaForm = (label, path, value) => {
            const input = h('input', { type: 'number', min: '0', step: 'any', name: 'gib', value: gib(value), placeholder: 'no limit', 'aria-label': label + ' in GiB' });
            const msg = h('p.field-error', { role: 'alert', hidden: true });
            const f = h('form.inline-form', h('label', label), input, h('span.muted', 'GiB'),
                h('button.btn.small', { type: 'submit' }, 'Save'), msg);
            f.addEventListener('submit', async ev => {
                ev.preventDefault();
                msg.hidden = true;
                const bytes = input.value.trim() === '' ? null : Math.round(Number(input.value) * 2 ** 30);
                try {
                    await api('PUT', path(), { bytes });
                    toast(`${label}: ${bytes === null ? 'no limit' : formatBytes(bytes)}.`, 'success');
                    emit('usage'); // the meter in the side navigation, if it was the admin's own
                } catch (e) { msg.textContent = e.message; msg.hidden = false; }
            });
            return { form: f, input };
        };
        const user = h('input', { type: 'text', name: 'username', 'aria-label': 'Username', placeholder: 'username' });
        const userQ = quotaForm('Quota for user', () => '/admin/quotas/users/' + encodeURIComponent(user.value.trim()));
        userQ.form.insertBefore(user, userQ.form.children[1]);
        // The user's current quota once the name is typed, unless a value was typed meanwhile.
        let typed = false;
        userQ.input.addEventListener('input', () => { typed = true; });
        user.addEventListener('change', async () => {
            typed = false;
            const name = user.value.trim();
            const held = name ? await get('/admin/quotas/users/' + encodeURIComponent(name)) : null;
            if (!typed && name === user.value.trim()) userQ.input.value = gib(held);
        });
        clear(this.body,
            h('div.section-head', h('h2', 'Quotas')),
            h('p.muted', 'A role quota applies to every user with that role; a user quota overrides it. Leave a field empty for no limit; 0 lets nothing in.'),
            h('div.card', h('h3', 'Roles'),
                quotaForm('Role user', () => '/admin/quotas/roles/user', roleUser).form,
                quotaForm('Role admin', () => '/admin/quotas/roles/admin', roleAdmin).form),
            h('div.card', h('h3', 'Per user'), userQ.form));
    }

    /* ---------------------------------------------------------- modules --- */
    async modules() {
        let list, managed = true;
        try {
            list = await api('GET', '/admin/modules');
            list = Array.isArray(list) ? list : list?.modules || [];
        } catch (e) {
            if (e.status !== 404 && e.status !== 405) throw e;
            managed = false;
            list = (await (await fetch('/api/v1/health', { cache: 'no-store' })).json()).modules || [];
        }
        const tbody = h('tbody');
        for (const m of list) {
            const active = m.state === 'active';
            const sw = h('button.switch', {
                type: 'button', role: 'switch', 'aria-checked': String(active), disabled: !managed || m.state === 'draining',
                'aria-label': `Module ${m.name} ${active ? 'on' : 'off'}`,
            }, h('span.knob'));
            sw.addEventListener('click', () => this.moduleAction(m.name, active ? 'unload' : 'load', sw));
            const reload = button('Reload', 'refresh', () => this.moduleAction(m.name, 'reload'), { cls: 'small' });
            reload.setAttribute('aria-label', 'Reload module ' + m.name);
            reload.disabled = !managed || !active;
            tbody.append(h('tr', { dataset: { module: m.name, state: m.state } },
                h('td', h('strong', m.name), m.description ? h('div.muted.small', m.description) : null),
                h('td.col-size', m.version || ''),
                h('td', h('span.badge.state-' + m.state, m.state)),
                h('td.col-actions', h('div.row-actions', sw, reload))));
            const er = this.errRow('m:' + m.name, 4);
            if (er) tbody.append(er);
        }
        clear(this.body,
            h('div.section-head', h('h2', 'Modules'), button('Refresh', 'refresh', () => this.show('modules'), { cls: 'small' })),
            managed ? h('p.muted', 'Switching a module takes effect at once, without a restart. Parts of the page that belong to a module that is off are hidden.',
                this.inCluster ? ' This server is a node of a cluster: switching a module on or off does it on every node.' : '')
                : h('p.form-error', { role: 'alert' }, 'This server does not offer module management over the API yet; the list shows what is loaded.'),
            h('div.table-wrap', h('table.files.admin-table', { 'aria-label': 'Modules' },
                h('thead', h('tr', h('th', { scope: 'col' }, 'Module'), h('th.col-size', { scope: 'col' }, 'Version'),
                    h('th', { scope: 'col' }, 'State'), h('th.col-actions', { scope: 'col' }, 'On / off'))),
                tbody)));
    }

    async moduleAction(name, action, sw) {
        if (sw) sw.disabled = true;
        try {
            await api('POST', `/admin/modules/${encodeURIComponent(name)}/${action}`);
            this.rowErrors.delete('m:' + name);
            toast(`Module ${name} ${action === 'load' ? 'switched on' : action === 'unload' ? 'switched off' : 'reloaded'}.`, 'success');
        } catch (e) {
            this.rowErrors.set('m:' + name, `Could not ${action} ${name}: ${e.message}`);
        }
        await this.refreshModules();
        await this.show('modules', true);
        this.el.querySelector(`tr[data-module="${CSS.escape(name)}"] .switch`)?.focus();
    }

    /* ------------------------------------------------------------ tasks --- */
    async tasks() {
        const data = await api('GET', '/admin/tasks');
        const list = Array.isArray(data) ? data : data?.tasks || [];
        const tbody = h('tbody');
        for (const t of list) {
            const live = t.state === 'queued' || t.state === 'running';
            const pct = Math.round(t.progress ?? (t.state === 'done' ? 100 : 0));
            const cancel = live ? button('Cancel', null, async () => {
                try {
                    await api('POST', `/tasks/${encodeURIComponent(t.id)}/cancel`);
                    this.rowErrors.delete('t:' + t.id);
                } catch (e) { this.rowErrors.set('t:' + t.id, 'Could not cancel: ' + e.message); }
                this.show('tasks', true);
            }, { cls: 'small' }) : null;
            cancel?.setAttribute('aria-label', `Cancel task ${t.id}`);
            tbody.append(h('tr', { dataset: { task: String(t.id), state: t.state } },
                h('td', h('strong', t.type), h('div.muted.small', String(t.id))),
                h('td', t.owner ?? t.user ?? ''),
                h('td', h('span.badge.state-' + t.state, t.state),
                    t.error || t.message ? h('div.muted.small', t.error || t.message) : null),
                h('td', h('div.progress', { role: 'progressbar', 'aria-label': `Task ${t.id}`, 'aria-valuenow': String(pct), 'aria-valuemin': '0', 'aria-valuemax': '100' },
                    h('div.progress-fill', { style: `width:${pct}%` }))),
                h('td.col-mtime', formatTime(t.updated ?? t.created)),
                h('td.col-actions', cancel)));
            const er = this.errRow('t:' + t.id, 6);
            if (er) tbody.append(er);
        }
        clear(this.body,
            h('div.section-head', h('h2', 'Tasks'), button('Refresh', 'refresh', () => this.show('tasks'), { cls: 'small' })),
            list.length ? h('div.table-wrap', h('table.files.admin-table', { 'aria-label': 'Tasks' },
                h('thead', h('tr', h('th', { scope: 'col' }, 'Task'), h('th', { scope: 'col' }, 'Owner'), h('th', { scope: 'col' }, 'State'),
                    h('th', { scope: 'col' }, 'Progress'), h('th.col-mtime', { scope: 'col' }, 'Updated'),
                    h('th.col-actions', { scope: 'col' }, h('span.sr-only', 'Actions')))),
                tbody)) : h('div.empty', icon('tasks'), h('p.empty-title', 'No tasks')));
    }

    /* ---------------------------------------------------------- storage --- */
    /* ---------------------------------------------------------- cluster --- */
    /* GET /admin/cluster: the nodes etcd knows alive, the leader, and whether this node's
     * account changes reached etcd (docs/cluster.md). Read again on Refresh. */
    async cluster() {
        const v = await api('GET', '/admin/cluster');
        const tbody = h('tbody');
        const stores = n => (v.stores || []).filter(st => st.owner === n).length;
        for (const n of v.nodes || []) {
            const marks = [n.name === v.leader ? h('span.badge.state-active', 'leader') : null,
                n.name === v.node ? h('span.badge', 'this node') : null];
            tbody.append(h('tr', { dataset: { node: n.name, state: n.state } },
                h('td', h('strong', n.name), ' ', ...marks),
                h('td', n.address), h('td', h('span.badge.state-' + (n.state === 'up' ? 'active' : 'error'), n.state)),
                h('td.col-size', formatBytes(n.capacity)), h('td.col-size', formatBytes(n.free)),
                h('td.col-size', String(stores(n.name))), h('td.col-size', formatBytes(n.kept || 0)),
                h('td', n.version || ''), h('td.col-mtime', n.started ? formatTime(n.started) : '')));
        }
        const up = new Set((v.nodes || []).map(n => n.name));
        const nodeCell = n => n ? h('td', n, up.has(n) ? '' : h('span.badge.state-error', { style: 'margin-left:.4em' }, 'down'))
            : h('td.muted', 'none');
        /* Moving a store: to one of the other nodes that are up (POST .../move: a task on its keeper) */
        const moveCell = st => {
            const others = (v.nodes || []).map(n => n.name).filter(n => n !== st.owner);
            if (!others.length || !up.has(st.owner)) return h('td.col-actions');
            const to = h('select', { 'aria-label': `Move store ${st.id} to` }, others.map(n => h('option', { value: n }, n)));
            return h('td.col-actions', to, button('Move', null, async () => {
                try {
                    const r = await api('POST', `/admin/cluster/stores/${st.id}/move`, { to: to.value });
                    toast(`Store ${st.id} moves to node ${to.value} (task ${r.task}); it stays available meanwhile.`, 'success');
                } catch (e) {
                    toast(`Store ${st.id} could not be moved: ${e.message}`, 'error');
                }
                setTimeout(() => this.show('cluster'), 1000);
            }, { cls: 'small' }));
        };
        const storeRows = h('tbody', ...(v.stores || []).map(st => h('tr', { dataset: { store: String(st.id) } },
            h('td', String(st.id)), h('td', String(st.user)), nodeCell(st.owner), nodeCell(st.replica),
            h('td', String(st.epoch) + (st.filling ? ' (filling)' : '')), moveCell(st))));
        const acc = v.accounts || {};
        const shared = acc.queued > 0
            ? h('p.form-error', { role: 'status' }, `${acc.queued} change${acc.queued === 1 ? '' : 's'} of accounts or tokens made on this node ${acc.queued === 1 ? 'waits' : 'wait'} for etcd; the other nodes get ${acc.queued === 1 ? 'it' : 'them'} once etcd answers.`)
            : h('p.muted', { role: 'status' }, 'Accounts, tokens, app passwords and which modules are on are shared by every node: every change made here has reached etcd.');
        clear(this.body,
            h('div.section-head', h('h2', 'Cluster'),
                button('Refresh', 'refresh', () => this.show('cluster'), { cls: 'small' })),
            h('p.cluster-summary', `This page is served by node ${v.node}. `,
                v.leader ? `Node ${v.leader} leads cluster-wide work. ` : 'No node leads at the moment. ',
                v.etcd === 'ok' ? 'etcd answers.' : h('strong.form-error', 'etcd does not answer: this node keeps serving and retries.')),
            shared,
            h('div.table-wrap', h('table.files.admin-table', { 'aria-label': 'Cluster nodes' },
                h('thead', h('tr', h('th', { scope: 'col' }, 'Node'), h('th', { scope: 'col' }, 'Address'), h('th', { scope: 'col' }, 'State'),
                    h('th.col-size', { scope: 'col' }, 'Capacity'), h('th.col-size', { scope: 'col' }, 'Free'),
                    h('th.col-size', { scope: 'col' }, 'Stores'), h('th.col-size', { scope: 'col' }, 'In its stores'),
                    h('th', { scope: 'col' }, 'Version'), h('th.col-mtime', { scope: 'col' }, 'Up since'))),
                tbody)),
            h('p.muted', 'A node that stops answering etcd leaves this list within its lease. Any node answers for any store: ',
                'a request for a store another node keeps goes there (docs/cluster.md).'),
            h('h3', 'Stores'),
            h('div.table-wrap', h('table.files.admin-table', { 'aria-label': 'Cluster stores' },
                h('thead', h('tr', h('th', { scope: 'col' }, 'Store'), h('th', { scope: 'col' }, 'User'),
                    h('th', { scope: 'col' }, 'Kept by'), h('th', { scope: 'col' }, 'Replica'), h('th', { scope: 'col' }, 'Epoch'),
                    h('th.col-actions', { scope: 'col' }, 'Move'))),
                storeRows)),
            h('p.muted', 'Each store is kept by one node and copied, change by change, to its replica before a change is confirmed; ',
                'when the keeping node goes down, its replica takes the store over within seconds (the epoch goes up). ',
                'Move hands a store to another node while it stays in use.'));
    }

    /* GET /admin/backends: each backend's type, health and usage, and how many stores it holds.
     * "Add a backend" declares one here (POST /admin/backends: the module is reloaded with it);
     * one declared here and holding no store can be removed. Those of conf.d are changed there. */
    async backends() {
        const list = await api('GET', '/admin/backends');
        const num = v => (v === null || v === undefined ? '—' : String(v));
        const rows = [];
        for (const b of list) {
            rows.push(h('tr', { dataset: { backend: b.name, state: b.state } },
                h('td', h('strong', b.name), b.name === 'local' ? h('div.muted.small', 'this server\'s disk')
                    : b.declared ? h('div.muted.small', b.declared === 'page' ? 'declared here' : 'declared in conf.d') : null),
                h('td', b.type || 'not loaded'),
                h('td', h('span.badge.state-' + (b.state === 'up' ? 'done' : 'failed'), b.state)),
                h('td.col-size', num(b.objects)),
                h('td.col-size', b.bytes === null || b.bytes === undefined ? '—' : formatBytes(b.bytes)),
                h('td.col-size', num(b.queued)),
                h('td.col-size', num(b.stores)),
                h('td.col-actions', b.declared === 'page' && !b.stores
                    ? button('Remove ' + b.name, 'trash', () => this.removeBackend(b.name), { cls: 'icon-btn', iconOnly: true }) : null)));
            rows.push(this.errRow('backend:' + b.name, 8));
        }
        clear(this.body,
            h('div.section-head', h('h2', 'Storage backends'),
                h('div.section-actions', button('Add a backend', 'plus', () => this.addBackend(), { cls: 'small primary' }),
                    button('Refresh', 'refresh', () => this.show('backends'), { cls: 'small' }))),
            h('p.muted.backends-note', 'Add a backend here, or declare it by name in conf.d (s3.yaml, webdav.yaml or rclone.yaml ',
                'under "backends:") and reload its module; secrets are given as references (docs/operations.md). ',
                'A store is put on a backend when it is created, and moved in its settings ("Where the files are kept").'),
            h('div.table-wrap', h('table.files.admin-table', { 'aria-label': 'Storage backends' },
                h('thead', h('tr', h('th', { scope: 'col' }, 'Backend'), h('th', { scope: 'col' }, 'Type'), h('th', { scope: 'col' }, 'State'),
                    h('th.col-size', { scope: 'col' }, 'Objects'), h('th.col-size', { scope: 'col' }, 'Size'),
                    h('th.col-size', { scope: 'col' }, 'Queued'), h('th.col-size', { scope: 'col' }, 'Stores'),
                    h('th.col-actions', { scope: 'col' }, h('span.sr-only', 'Actions')))),
                h('tbody', rows))));
    }

    /* The settings each backend module takes (modules/s3, webdav, rclone; docs/operations.md). */
    static BACKEND_FIELDS = {
        s3: [['endpoint', 'Endpoint', 'https://s3.eu-west-1.amazonaws.com: scheme, host and port, no path'],
            ['region', 'Region', 'us-east-1 for most S3-compatible servers'], ['bucket', 'Bucket'],
            ['access_key', 'Access key'], ['secret_key', 'Secret key', 'A reference: env:NAME, file:/path or vault:path#key'],
            ['path_style', 'Path-style addressing (MinIO, s3rver)', null, 'checkbox'], ['prefix', 'Prefix', 'Put before every object name, e.g. chunks/']],
        webdav: [['url', 'URL', 'http[s]://host[:port][/path]'], ['user', 'User'],
            ['password', 'Password', 'A reference: env:NAME, file:/path or vault:path#key'], ['prefix', 'Prefix', 'A collection under the URL, e.g. chunks/']],
        rclone: [['remote', 'Remote', 'An rclone remote and path (gdrive:mbyte), or a local path'], ['prefix', 'Prefix']],
    };

    async addBackend() {
        const mods = await api('GET', '/admin/modules');
        const types = Object.keys(AdminView.BACKEND_FIELDS);
        const active = new Set(mods.filter(m => m.state === 'active').map(m => m.name));
        const name = h('input', { type: 'text', name: 'name', autocomplete: 'off', autocapitalize: 'none' });
        const type = h('select', { name: 'type' }, types.map(t => h('option', { value: t, disabled: !active.has(t) },
            t + (active.has(t) ? '' : ' (module off)'))));
        type.value = types.find(t => active.has(t)) || types[0];
        const groups = {};
        for (const t of types) {
            groups[t] = AdminView.BACKEND_FIELDS[t].map(([key, label, hint, kind]) => {
                const input = kind === 'checkbox' ? h('input', { type: 'checkbox', name: key })
                    : h('input', { type: 'text', name: key, autocomplete: 'off', autocapitalize: 'none', spellcheck: 'false' });
                const f = field(label, input, hint);
                f.key = key;
                return f;
            });
        }
        // Only the chosen type's settings are in the form (each type keeps what was typed into it).
        const settingsBox = h('div.backend-settings');
        const sync = () => clear(settingsBox, ...groups[type.value]);
        type.addEventListener('change', sync);
        sync();
        await dialog({
            title: 'Add a backend',
            body: [field('Name', name, 'How stores name it: 1 to 32 of a-z, 0-9, - and _.'), field('Type', type), settingsBox],
            actions: [{ label: 'Cancel' }, { label: 'Add backend', primary: true, value: 'ok' }],
            onSubmit: async () => {
                const settings = {};
                for (const f of groups[type.value]) {
                    if (f.input.type === 'checkbox') settings[f.key] = f.input.checked;
                    else if (f.input.value.trim()) settings[f.key] = f.input.value.trim();
                }
                try {
                    await api('POST', '/admin/backends', { name: name.value.trim(), type: type.value, settings });
                } catch (e) {
                    const m = /^settings\.([a-z_]+)/.exec(e.message) || /backends\.[a-z0-9_-]+[.:] ?([a-z_]+)?/.exec(e.message);
                    throw Object.assign(e, { field: e.field || (m && m[1]) || (/^name/.test(e.message) ? 'name' : undefined) });
                }
                toast(`Backend ${name.value.trim()} was added.`, 'success');
                this.show('backends', true);
            },
        });
    }

    async removeBackend(name) {
        this.rowErrors.delete('backend:' + name);
        if (!await confirmDialog('Remove backend ' + name, `Stores can no longer be put on ${name}. Nothing is stored there now.`, 'Remove', true)) return;
        try {
            await api('DELETE', '/admin/backends/' + encodeURIComponent(name));
            toast(`Backend ${name} was removed.`, 'success');
        } catch (e) {
            this.rowErrors.set('backend:' + name, e.message);
        }
        this.show('backends', true);
    }

    /* -------------------------------------------------------- integrity --- */
    async integrity() {
        const data = await api('GET', '/admin/integrity');
        const list = Array.isArray(data) ? data : data?.findings || [];
        const scrub = button('Start a scrub', 'shield', async () => {
            try {
                const r = await api('POST', '/admin/integrity/scrub');
                const { watchTask } = await import('./app.js');
                watchTask(r.task, 'Integrity scrub', 'The integrity scrub finished.', () => this.el.isConnected && this.show('integrity', true));
            } catch (e) { toast('Could not start a scrub: ' + e.message, 'error'); }
        }, { cls: 'primary' });
        clear(this.body,
            h('div.section-head', h('h2', 'Integrity'), scrub),
            data?.scrub ? h('p.muted', data.scrub.running ? `A scrub is running: ${data.scrub.chunks_checked ?? 0} chunks checked so far.`
                : `Last scrub: ${formatTime(data.scrub.finished)} · ${data.scrub.chunks_checked ?? 0} chunks, ${formatBytes(data.scrub.bytes_checked)} checked · ${data.scrub.problems ?? 0} problems`) : null,
            list.length ? h('div.table-wrap', h('table.files.admin-table', { 'aria-label': 'Integrity findings' },
                h('thead', h('tr', h('th', { scope: 'col' }, 'File'), h('th', { scope: 'col' }, 'Problem'), h('th.col-mtime', { scope: 'col' }, 'Found'))),
                h('tbody', list.map(f => h('tr', h('td', (f.files || [f]).map(x => `store ${x.store}: /${x.path}${x.version ? ' (v' + x.version + ')' : ''}`).join(', ')),
                    h('td', h('span.badge.state-failed', f.kind || 'problem'), ' ', f.detail || f.reason || (f.chunk ? 'chunk ' + f.chunk : '')),
                    h('td.col-mtime', formatTime(f.time ?? f.found)))))))
                : h('div.empty', icon('check'), h('p.empty-title', 'No problems found')));
    }
}
