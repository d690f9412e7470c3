/*
 * web/js/activity.js — the audit module's screens: a store's activity (what happened to its files
 * and shares, newest first) and, for administrators, the audit log with filters (user, action or
 * action prefix, from/to dates, path prefix), the chain check, and an export as CSV or JSON lines
 * of exactly what the filters select (a plain GET link: the session cookie goes with it).
 */
import { api } from './api.js';
import { h, icon, button, clear, field, formatTime, fileName } from './ui.js';
import { currentStore } from './state.js';

/* One table of entries, shared by the store's activity and the audit log. */
export function entriesTable(entries, label) {
    const tbody = h('tbody');
    for (const e of entries) {
        tbody.append(h('tr', { dataset: { seq: String(e.seq), action: e.action } },
            h('td.col-mtime', formatTime(e.time)),
            h('td', h('code', e.action)),
            h('td', e.user ? fileName(e.user) : h('span.muted', '—')),
            h('td.col-path', e.path ? fileName(e.path) : h('span.muted', '—')),
            h('td', h('span.badge' + (e.result === 'failed' ? '.state-failed' : '.state-done'), e.result || 'ok')),
            h('td.muted.small', e.ip || '')));
    }
    return h('div.table-wrap', h('table.files.entries', { 'aria-label': label },
        h('thead', h('tr', ['When', 'Action', 'User', 'Path', 'Result', 'Address'].map(t => h('th', { scope: 'col' }, t)))),
        tbody));
}

/* ========================================================= store activity === */
export class ActivityView {
    constructor() { this.el = h('section.view.activity-view', { 'aria-label': 'Activity' }); }

    async show(sid) {
        const store = currentStore();
        const head = h('div.view-head', h('h1.view-title', 'Activity of ', store ? fileName(store.name) : 'this store'),
            h('div.view-actions', button('Refresh', 'refresh', () => this.show(sid))));
        clear(this.el, head, h('p.muted.pad', 'Loading…'));
        let r;
        try {
            r = await api('GET', `/stores/${encodeURIComponent(sid)}/activity?limit=200`);
        } catch (e) {
            clear(this.el, head, h('div.empty.error-state', { role: 'alert' }, icon('alert'), h('p', e.message)));
            return;
        }
        const entries = r?.entries || [];
        clear(this.el, head, entries.length ? entriesTable(entries, 'Activity of this store')
            : h('div.empty', icon('history'), h('p.empty-title', 'Nothing has happened in this store yet')));
    }
}

/* ========================================================= admin: audit log === */
/* Filled into the admin view's body (admin.js calls it for the "Audit log" tab). */
export async function auditTab(body, filters = {}) {
    const inp = (name, type, placeholder) => h('input', { type, name, value: filters[name] || '', placeholder, autocomplete: 'off' });
    const user = inp('user', 'text', 'name or id'), action = inp('action', 'text', 'file.  auth.*  share.created');
    action.title = 'An exact action, or a prefix ending in . or *';
    const from = inp('from', 'date'), to = inp('to', 'date'), path = inp('path', 'text', 'docs/');
    const form = h('form.audit-filters', { 'aria-label': 'Filter the audit log' },
        field('User', user), field('Action', action),
        field('From', from), field('To', to), field('Path starts with', path),
        h('div.filter-actions', h('button.btn.primary', { type: 'submit' }, 'Search')));
    const q = fmt => {
        const p = new URLSearchParams();
        for (const [k, el] of Object.entries({ user, action, from, to, path })) if (el.value.trim()) p.set(k, el.value.trim());
        if (to.value) p.set('to', to.value + 'T23:59:59Z');
        if (fmt) p.set('format', fmt);
        return p.toString();
    };
    const results = h('div.audit-results', { 'aria-live': 'polite' });
    const exports = h('div.view-actions');
    const verifyOut = h('span.verify-out');
    const verify = button('Check the chain', 'shield', async () => {
        verify.disabled = true;
        try {
            const v = await api('GET', '/admin/audit/verify');
            clear(verifyOut, v.ok ? h('span.ok-text', icon('check'), ` Intact: ${v.verified} entries verified.`)
                : h('span.form-error', { role: 'alert' }, icon('alert'),
                    ` BROKEN at entry ${v.first_bad?.seq}: ${v.first_bad?.reason || 'does not match'} (${v.verified} verified before it).`));
        } catch (e) {
            clear(verifyOut, h('span.form-error', { role: 'alert' }, e.message));
        } finally { verify.disabled = false; }
    });
    async function search() {
        clear(exports,
            h('a.btn', { href: '/api/v1/admin/audit?' + q('csv'), download: 'audit.csv' }, icon('download'), 'Export CSV'),
            h('a.btn', { href: '/api/v1/admin/audit?' + q('jsonl'), download: 'audit.jsonl' }, icon('download'), 'Export JSON lines'));
        clear(results, h('p.muted', 'Searching…'));
        try {
            const r = await api('GET', '/admin/audit?' + q() + '&limit=1000');
            const entries = (r?.entries || []).slice().reverse(); // the log answers oldest first: show the newest on top
            clear(results, h('p.muted.small', `${entries.length} entr${entries.length === 1 ? 'y' : 'ies'}` +
                (entries.length >= 1000 ? ' (the oldest 1000 that match: narrow the filters, or export them all)' : '')),
            entries.length ? entriesTable(entries, 'Audit log') : h('p.muted', 'No entry matches.'));
        } catch (e) {
            clear(results, h('p.form-error', { role: 'alert' }, e.message));
        }
    }
    form.addEventListener('submit', ev => { ev.preventDefault(); search(); });
    clear(body, h('div.section-head', h('h2', 'Audit log'), h('div.view-actions', verifyOut, verify)), form, exports, results);
    await search();
}
