/*
 * web/js/activity.js — the audit module's screens: a store's activity (what happened to its files
 * and shares, newest first) and, for administrators, the audit log with filters (user, action or
 * action prefix, from/to dates, path prefix), the chain check, and an export as CSV or JSON lines
 * of exactly what the filters select (a plain GET link: the session cookie goes with it).
 * Both read newest first, a page at a time: "Older entries" asks for the page before the last
 * one shown (the answer's "next" cursor).
 */
import { api } from './api.js';
import { h, icon, button, clear, field, formatTime, fileName } from './ui.js';
import { currentStore } from './state.js';

const PAGE = 100;

function entryRow(e) {
    return h('tr', { dataset: { seq: String(e.seq), action: e.action } },
        h('td.col-mtime', formatTime(e.time)),
        h('td', h('code', e.action)),
        h('td', e.user ? fileName(e.user) : h('span.muted', '—')),
        h('td.col-path', e.path ? fileName(e.path) : h('span.muted', '—')),
        h('td', h('span.badge' + (e.result === 'failed' ? '.state-failed' : '.state-done'), e.result || 'ok')),
        h('td.muted.small', e.ip || ''));
}

/* One table of entries, shared by the store's activity and the audit log: the first page
 * (newest first) and an "Older entries" button while the server has more (next(cursor) ->
 * the next page {entries, next}). */
export function entriesTable(page, label, next) {
    const tbody = h('tbody', page.entries.map(entryRow));
    const count = h('p.muted.small.entries-count');
    const shown = () => { count.textContent = `${tbody.rows.length} entr${tbody.rows.length === 1 ? 'y' : 'ies'} shown`; };
    const more = button('Older entries', 'chevronDown', async () => {
        more.disabled = true;
        try {
            const p = await next(cursor);
            tbody.append(...p.entries.map(entryRow));
            cursor = p.next;
        } catch (e) {
            count.textContent = e.message;
            more.disabled = false;
            return;
        }
        more.disabled = false;
        more.hidden = !cursor;
        shown();
    }, { cls: 'small' });
    let cursor = page.next;
    more.hidden = !cursor;
    shown();
    return h('div.entries-block', h('div.table-wrap', h('table.files.entries', { 'aria-label': label },
        h('thead', h('tr', ['When', 'Action', 'User', 'Path', 'Result', 'Address'].map(t => h('th', { scope: 'col' }, t)))),
        tbody)), h('div.entries-foot', count, more));
}

/* ========================================================= store activity === */
export class ActivityView {
    constructor() { this.el = h('section.view.activity-view', { 'aria-label': 'Activity' }); }

    async show(sid) {
        const store = currentStore();
        const head = h('div.view-head', h('h1.view-title', 'Activity of ', store ? fileName(store.name) : 'this store'),
            h('div.view-actions', button('Refresh', 'refresh', () => this.show(sid))));
        clear(this.el, head, h('p.muted.pad', 'Loading…'));
        const page = before => api('GET', `/stores/${encodeURIComponent(sid)}/activity?limit=${PAGE}` + (before ? '&before=' + before : ''));
        let r;
        try {
            r = await page();
        } catch (e) {
            clear(this.el, head, h('div.empty.error-state', { role: 'alert' }, icon('alert'), h('p', e.message)));
            return;
        }
        clear(this.el, head, r.entries.length ? entriesTable(r, 'Activity of this store', page)
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
        const page = before => api('GET', '/admin/audit?' + q() + `&limit=${PAGE}` + (before ? '&before=' + before : ''));
        try {
            const r = await page();
            clear(results, r.entries.length ? entriesTable(r, 'Audit log', page) : h('p.muted', 'No entry matches.'));
        } catch (e) {
            clear(results, h('p.form-error', { role: 'alert' }, e.message));
        }
    }
    form.addEventListener('submit', ev => { ev.preventDefault(); search(); });
    clear(body, h('div.section-head', h('h2', 'Audit log'), h('div.view-actions', verifyOut, verify)), form, exports, results);
    await search();
}
