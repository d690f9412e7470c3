/*
 * web/js/app.js — the page's entry point: sign-in, the shell (header with the store switcher,
 * notifications and user menu; the side navigation with the usage meter), the hash router
 * (#/files/{sid}/{path}, #/trash/{sid}, #/admin/{tab}), the event stream, and background tasks
 * (store creation) with their progress and outcome.
 *
 * Module-dependent parts carry data-part and are shown or hidden by modules.js from
 * GET /api/v1/features, read at start and whenever the admin view toggles a module. Only an
 * administrator's page reads the version and module states (GET /api/v1/health with the session).
 */
import { api, setCsrf, csrfToken, setUnauthorizedHandler, ApiError } from './api.js';
import { h, icon, button, clear, dialog, field, openMenu, toast, formatBytes, formatTime, fileName } from './ui.js';
import { state, on, emit, currentStore, isAdmin } from './state.js';
import { setFeatures, applyParts, partEnabled } from './modules.js';
import { FilesView, TrashView, usageBar } from './files.js';
import { AdminView } from './admin.js';
import { SharesView, showPublic } from './shares.js';
import { ActivityView } from './activity.js';
import { WebhooksView } from './webhooks.js';
import { DiscordView } from './discord.js';
import { ftpAccess } from './ftp.js';
import { Uploads } from './uploads.js';
import { resetCapabilities } from './tus.js';
import { searchBox } from './search.js';

const root = document.getElementById('app');
let shell = null;      // the signed-in layout, built once per sign-in
let events = null;     // the EventSource
const tasks = new Map(); // task id -> {toast element, label, done}

/* ============================================================ features ===== */
export async function refreshModules() {
    try {
        setFeatures((await api('GET', '/features'))?.features);
        if (isAdmin()) { // the version and every module's state: for administrators only
            const j = await api('GET', '/health');
            state.version = j?.version || '';
            state.health = j;
        }
    } catch (e) {
        if (e.status === 401) return; // the handler showed the sign-in
        toast('The server cannot be reached to read its features.', 'error');
    }
    resetCapabilities();
    applyParts();
    emit('modules');
}

/* ============================================================ sign-in ====== */
function showLogin(message) {
    if (events) { events.close(); events = null; }
    shell?.destroy();
    shell = null;
    state.user = null;
    document.title = 'Sign in · MByte';
    const user = h('input', { type: 'text', name: 'username', autocomplete: 'username', required: true, autocapitalize: 'none', spellcheck: 'false' });
    const pass = h('input', { type: 'password', name: 'password', autocomplete: 'current-password', required: true });
    const err = h('p.form-error', { role: 'alert', id: 'login-error', hidden: !message }, message || '');
    const submit = h('button.btn.primary.wide', { type: 'submit' }, 'Sign in');
    const form = h('form.login-form', { novalidate: true, 'aria-describedby': 'login-error' },
        field('Username', user), field('Password', pass), err, submit);
    form.addEventListener('submit', async ev => {
        ev.preventDefault();
        err.hidden = true;
        if (!user.value.trim() || !pass.value) {
            err.textContent = 'Enter your username and password.';
            err.hidden = false;
            (user.value.trim() ? pass : user).focus();
            return;
        }
        submit.disabled = true;
        submit.textContent = 'Signing in…';
        try {
            const r = await api('POST', '/auth/login', { username: user.value.trim(), password: pass.value, session: true },
                { noAuthRedirect: true });
            setCsrf(r.csrf);
            state.user = r.user;
            await start();
        } catch (e) {
            err.textContent = e.status === 401 ? 'That username and password do not match.' : e.message;
            err.hidden = false;
            pass.select();
            pass.focus();
        } finally {
            submit.disabled = false;
            submit.textContent = 'Sign in';
        }
    });
    clear(root, h('main.login', h('div.login-card',
        h('div.brand.big', logo(), h('span', 'MByte')),
        h('h1', 'Sign in'),
        h('p.muted', 'Your files, on your own server.'),
        form)));
    user.focus();
}

function logo() {
    const ns = 'http://www.w3.org/2000/svg';
    const svg = document.createElementNS(ns, 'svg');
    svg.setAttribute('viewBox', '0 0 32 32');
    svg.setAttribute('class', 'logo');
    svg.setAttribute('aria-hidden', 'true');
    const r = document.createElementNS(ns, 'rect');
    Object.entries({ x: 2, y: 2, width: 28, height: 28, rx: 8 }).forEach(([k, v]) => r.setAttribute(k, v));
    const p = document.createElementNS(ns, 'path');
    p.setAttribute('d', 'M9 22V10l7 7 7-7v12');
    svg.append(r, p);
    return svg;
}

async function logout() {
    try { await api('POST', '/auth/logout', undefined, { noAuthRedirect: true }); } catch { /* signed out anyway */ }
    setCsrf('');
    location.hash = '';
    showLogin();
}

setUnauthorizedHandler(() => {
    setCsrf('');
    if (state.user) showLogin('Your session has ended. Please sign in again.');
});

/* ============================================================ shell ======== */
class Shell {
    constructor() {
        this.uploads = new Uploads({
            onFileDone: (sid, path) => { emit('files', { sid, path }); emit('usage'); },
        });
        this.files = new FilesView({ uploads: this.uploads });
        this.trash = new TrashView();
        this.admin = new AdminView({ refreshModules });
        // Views of one store besides its files: hash name -> view, its part, its title.
        this.storeViews = {
            trash: { view: this.trash, part: 'trash', title: 'Trash' },
            shares: { view: new SharesView(), part: 'sharing', title: 'Shares' },
            activity: { view: new ActivityView(), part: 'activity', title: 'Activity' },
            webhooks: { view: new WebhooksView(), part: 'webhooks', title: 'Webhooks' },
            discord: { view: new DiscordView(), part: 'discord', title: 'Discord' },
        };
        this.unread = 0;
        this.changes = 0; // how often the bell's count was set (loadUnread: was it set meanwhile?)
        this.notifications = [];
        this.known = new Set(); // ids of the notifications this page has (listed at start, or shown)
        this.baseline = null;
        this.storeBtn = h('button.store-switch', { type: 'button', 'aria-haspopup': 'menu', 'aria-label': 'Switch store' });
        this.storeBtn.addEventListener('click', () => this.storeMenu());
        this.bell = h('button.icon-btn.bell', { type: 'button', 'aria-label': 'Notifications', 'aria-expanded': 'false' }, icon('bell'),
            h('span.badge.count', { hidden: true }));
        this.bell.addEventListener('click', () => this.toggleNotifications());
        const userBtn = h('button.user-btn', { type: 'button', 'aria-haspopup': 'menu', 'aria-label': 'Account: ' + state.user.username },
            h('span.avatar', state.user.username.slice(0, 1).toUpperCase()), h('span.user-name', state.user.username));
        userBtn.addEventListener('click', () => openMenu(userBtn, [
            { label: 'Change password…', icon: 'settings', action: () => changePassword() },
            partEnabled('ftp') ? { label: 'FTP access…', icon: 'shield', action: () => ftpAccess() } : null,
            { label: 'About MByte', icon: 'info', action: () => about() },
            { label: 'Sign out', icon: 'logout', action: () => logout() },
        ]));
        this.navToggle = button('Menu', 'menu', () => this.toggleNav(), { cls: 'icon-btn nav-toggle', iconOnly: true });
        this.navToggle.setAttribute('aria-expanded', 'false');
        this.navToggle.setAttribute('aria-controls', 'sidenav');
        this.search = searchBox({ reveal: (sid, path) => this.reveal(sid, path) });
        this.header = h('header.topbar',
            this.navToggle,
            h('a.brand', { href: '#/files', 'aria-label': 'MByte home' }, logo(), h('span', 'MByte')),
            this.storeBtn,
            this.search.el,
            h('div.spacer'),
            this.bell, userBtn);
        this.usage = h('div.usage', { dataset: { part: 'usage' }, 'aria-live': 'polite' });
        this.greeting = h('span.greeting', { dataset: { part: 'greeting' } });
        this.nav = h('nav.sidenav', { id: 'sidenav', 'aria-label': 'Main' },
            h('ul',
                h('li', h('a', { href: '#/files', dataset: { nav: 'files' } }, icon('files'), 'Files')),
                h('li', { dataset: { part: 'trash' } }, h('a', { href: '#/trash', dataset: { nav: 'trash' } }, icon('trash'), 'Trash')),
                h('li', { dataset: { part: 'sharing' } }, h('a', { href: '#/shares', dataset: { nav: 'shares' } }, icon('users'), 'Shares')),
                h('li', { dataset: { part: 'activity' } }, h('a', { href: '#/activity', dataset: { nav: 'activity' } }, icon('history'), 'Activity')),
                h('li', { dataset: { part: 'webhooks' } }, h('a', { href: '#/webhooks', dataset: { nav: 'webhooks' } }, icon('refresh'), 'Webhooks')),
                h('li', { dataset: { part: 'discord' } }, h('a', { href: '#/discord', dataset: { nav: 'discord' } }, icon('history'), 'Discord')),
                isAdmin() ? h('li', h('a', { href: '#/admin/users', dataset: { nav: 'admin' } }, icon('shield'), 'Administration')) : null),
            h('div.nav-foot', this.usage, h('p.server-line', h('span.version'), this.greeting)));
        this.nav.addEventListener('click', ev => { if (ev.target.closest('a')) this.toggleNav(false); });
        this.main = h('main.content', { id: 'main', tabindex: '-1' });
        this.notifPanel = h('section.notif-panel', { 'aria-label': 'Notifications', hidden: true });
        this.notifPanel.addEventListener('keydown', ev => {
            if (ev.key === 'Escape') { this.toggleNotifications(false); this.bell.focus(); }
        });
        this.scrim = h('div.scrim', { hidden: true });
        this.scrim.addEventListener('click', () => this.toggleNav(false));
        clear(root,
            h('a.skip', { href: '#main' }, 'Skip to content'),
            this.header,
            h('div.layout', this.nav, this.scrim, this.main, this.files.panel),
            this.notifPanel);
        this.offs = [
            on('usage', () => this.loadUsage()),
            on('modules', () => { this.loadUsage(); this.loadGreeting(); this.route(); }),
            on('stores', () => this.renderStoreBtn()),
        ];
        document.addEventListener('keydown', this.onKey = ev => {
            if (ev.key === 'Escape' && !this.notifPanel.hidden && !document.querySelector('dialog[open]')) {
                this.toggleNotifications(false);
            }
        });
    }

    destroy() {
        this.offs.forEach(f => f());
        this.search.destroy();
        this.files.destroy();
        document.removeEventListener('keydown', this.onKey);
        this.uploads.el.remove();
    }

    toggleNav(force) {
        const open = force ?? !document.body.classList.contains('nav-open');
        document.body.classList.toggle('nav-open', open);
        this.navToggle.setAttribute('aria-expanded', String(open));
        this.scrim.hidden = !open;
    }

    renderStoreBtn() {
        const s = currentStore();
        clear(this.storeBtn, icon('store'), s ? fileName(s.name, 'bdi.fname.store-name') : h('span.store-name', 'No store'), icon('chevronDown'));
        this.nav.querySelector('.version').textContent = state.version ? 'MByte ' + state.version : '';
    }

    storeMenu() {
        const items = state.stores.map(s => ({
            label: (String(s.id) === String(state.sid) ? '✓ ' : '') + s.name, icon: 'store',
            // Stay in the same view of the other store (its shares, activity, …), else its files.
            action: () => {
                const view = location.hash.replace(/^#\/?/, '').split('/')[0];
                location.hash = '#/' + (this.storeViews[view] ? view : 'files') + '/' + encodeURIComponent(s.id) + '/';
            },
        }));
        if (partEnabled('store-create')) items.push({ label: 'New store…', icon: 'plus', action: () => createStore() });
        if (partEnabled('store-manage') && currentStore()) {
            items.push({ label: 'Rename this store…', icon: 'edit', action: () => renameStore() });
            items.push({ label: 'Delete this store…', icon: 'trash', danger: true, action: () => deleteStore() });
        }
        if (partEnabled('settings') && currentStore()) items.push({ label: 'Store settings…', icon: 'settings', action: () => import('./files.js').then(m => m.storeSettings(state.sid)) });
        openMenu(this.storeBtn, items);
    }

    async loadUsage() {
        if (!partEnabled('usage')) return;
        try {
            const u = await api('GET', '/me/usage');
            clear(this.usage, usageBar(u, 'Storage used'));
            this.usage.querySelector('.usage-label')?.prepend(icon('pie'));
        } catch (e) {
            clear(this.usage, h('p.field-error', 'Usage: ' + e.message));
        }
    }

    async loadGreeting() {
        if (!partEnabled('greeting')) return;
        try {
            const g = await api('GET', '/hello');
            // The example module says hello: show its greeting (and to whom), nothing else.
            const text = typeof g === 'string' ? g : g?.greeting ? g.greeting + (g.user ? ', ' + g.user : '')
                : Object.values(g || {}).find(v => typeof v === 'string') || '';
            this.greeting.textContent = text ? ' · ' + text : '';
        } catch { this.greeting.textContent = ''; }
    }

    /* ----------------------------------------------------------- router --- */
    async route() {
        const hash = decodeURIComponent(location.hash.replace(/^#\/?/, ''));
        const [view, ...rest] = hash.split('/');
        this.nav.querySelectorAll('a[data-nav]').forEach(a => a.removeAttribute('aria-current'));
        const mark = name => this.nav.querySelector(`a[data-nav="${name}"]`)?.setAttribute('aria-current', 'page');
        const firstSid = state.stores[0]?.id;
        if (view === 'admin' && isAdmin()) {
            mark('admin');
            this.files.closePanel();
            document.title = 'Administration · MByte';
            clear(this.main, this.admin.el);
            await this.admin.show(rest[0] || 'users');
            return;
        }
        const sv = this.storeViews[view];
        if (sv && partEnabled(sv.part) && firstSid !== undefined) {
            mark(view);
            this.files.closePanel();
            const sid = rest[0] || state.sid || firstSid;
            state.sid = String(sid);
            this.renderStoreBtn();
            document.title = sv.title + ' · MByte';
            clear(this.main, sv.view.el);
            await sv.view.show(sid);
            return;
        }
        mark('files');
        let sid = view === 'files' && rest[0] ? rest[0] : state.sid || firstSid;
        if (sid === undefined || sid === null) {
            clear(this.main, h('div.empty', icon('store'), h('p.empty-title', 'You have no store yet'),
                partEnabled('store-create') ? button('Create a store', 'plus', () => createStore(), { cls: 'primary' }) : null));
            return;
        }
        if (!state.stores.some(s => String(s.id) === String(sid))) sid = firstSid;
        const path = view === 'files' ? rest.slice(1).filter(Boolean).join('/') : '';
        if (this.main.firstChild !== this.files.el) clear(this.main, this.files.el);
        const switched = String(sid) !== String(state.sid);
        state.sid = String(sid);
        this.renderStoreBtn();
        document.title = (path ? path.split('/').pop() : currentStore()?.name || 'Files') + ' · MByte';
        await this.files.show(sid, path);
        if (switched) emit('usage');
    }

    /* A search hit: its folder, with the file selected and in view. */
    async reveal(sid, path) {
        const folder = path.includes('/') ? path.slice(0, path.lastIndexOf('/')) : '';
        const hash = '#/files/' + encodeURIComponent(sid) + '/' + folder.split('/').map(encodeURIComponent).join('/');
        if (location.hash !== hash) history.pushState(null, '', hash);
        await this.route();
        this.files.selected = new Set([path]);
        this.files.render();
        this.files.el.querySelector(`tr[data-path="${CSS.escape(path)}"]`)?.scrollIntoView({ block: 'center' });
    }

    /* ---------------------------------------------------- notifications --- */
    async toggleNotifications(force) {
        const open = force ?? this.notifPanel.hidden;
        this.notifPanel.hidden = !open;
        this.bell.setAttribute('aria-expanded', String(open));
        if (!open) return;
        clear(this.notifPanel, h('p.muted.pad', 'Loading…'));
        const [nl, tl] = await Promise.allSettled([api('GET', '/notifications'), api('GET', '/tasks')]);
        if (nl.status === 'rejected') {
            clear(this.notifPanel, h('p.form-error.pad', { role: 'alert' }, nl.reason.message));
            return;
        }
        this.notifications = Array.isArray(nl.value) ? nl.value : nl.value?.items || [];
        // The caller's tasks (newest first): the panel shows the last few, finished or not.
        this.recentTasks = tl.status === 'fulfilled' ? (Array.isArray(tl.value) ? tl.value : tl.value?.tasks || []) : [];
        this.taskError = tl.status === 'rejected' ? tl.reason.message : null;
        this.renderNotifications();
        this.notifPanel.querySelector('button')?.focus();
    }

    /* A task frame from the event stream: keep the panel's task list current. */
    taskSeen(t) {
        if (!t || t.id === undefined) return;
        this.recentTasks = this.recentTasks || [];
        const i = this.recentTasks.findIndex(x => String(x.id) === String(t.id));
        if (i >= 0) this.recentTasks[i] = { ...this.recentTasks[i], ...t };
        else this.recentTasks.unshift(t);
        if (!this.notifPanel.hidden) this.renderNotifications();
    }

    renderNotifications() {
        const KIND_ICON = { success: 'check', error: 'alert', warning: 'alert' };
        const stateClass = st => (st === 'done' ? 'done' : st === 'failed' || st === 'cancelled' ? 'failed' : 'running');
        // Finished, failed and running tasks; queued ones (waiting for a retry) would only crowd it.
        const recent = (this.recentTasks || []).filter(t => t.state !== 'queued').slice(0, 5);
        clear(this.notifPanel,
            h('div.notif-head', h('h2', 'Notifications'),
                this.notifications.some(n => !n.read) ? button('Mark all read', 'check', () => this.markRead(null), { cls: 'small' }) : null,
                button('Clear all', null, async () => {
                    try { await api('DELETE', '/notifications'); this.notifications = []; this.setUnread(0); this.renderNotifications(); }
                    catch (e) { toast('Could not clear the notifications: ' + e.message, 'error'); }
                }, { cls: 'small' }),
                button('Close notifications', 'close', () => { this.toggleNotifications(false); this.bell.focus(); }, { cls: 'icon-btn', iconOnly: true })),
            h('section.notif-section', { 'aria-label': 'Alerts' },
                this.notifications.length ? h('ul.notif-list', this.notifications.map(n => {
                    const kind = (n.kind || 'info').replace(/[^a-z_-]/gi, '');
                    const mark = n.read ? null : button('Mark read: ' + (n.title || n.kind), 'check', () => this.markRead(n.id), { cls: 'icon-btn small', iconOnly: true });
                    return h('li.notif.' + kind + (n.read ? '' : '.unread'), { dataset: { kind, id: String(n.id) } },
                        h('div.notif-title', icon(KIND_ICON[kind] || 'info'), h('span', n.title || n.kind), mark),
                        n.body ? h('div.notif-body', n.body) : null, h('time.muted.small', formatTime(n.time)));
                })) : h('p.muted.pad', 'Nothing new.')),
            recent.length || this.taskError ? h('section.notif-section', { 'aria-label': 'Tasks' }, h('h3.notif-sub', 'Tasks'),
                this.taskError ? h('p.form-error.pad', { role: 'alert' }, this.taskError) : null,
                h('ul.notif-tasks', recent.map(t => h('li', { dataset: { task: String(t.id), state: t.state || '' } },
                    h('div.notif-task-head', h('strong', t.type || 'task'), h('span.badge.state-' + stateClass(t.state), t.state || '')),
                    t.state === 'running' || t.state === 'queued'
                        ? h('div.progress', { role: 'progressbar', 'aria-label': (t.type || 'task') + ' progress', 'aria-valuenow': String(Math.round(t.progress || 0)), 'aria-valuemin': '0', 'aria-valuemax': '100' },
                            h('div.progress-fill', { style: `width:${Math.round(t.progress || 0)}%` })) : null,
                    t.error || t.message ? h('div.notif-body' + (t.state === 'failed' ? '.form-error' : ''), t.error || t.message) : null,
                    h('time.muted.small', formatTime(t.updated || t.created)))))) : null);
    }

    /* Mark one notification (id) or all (null) read; the server's answer (and the `unread`
     * frame it sends every open page) is the new count. */
    async markRead(id) {
        try {
            const r = await api('POST', id ? `/notifications/${encodeURIComponent(id)}/read` : '/notifications/read');
            for (const n of this.notifications) if (!id || String(n.id) === String(id)) n.read = true;
            this.setUnread(r.unread);
            this.renderNotifications();
        } catch (e) { toast('Could not mark it read: ' + e.message, 'error'); }
    }

    /* The server's count, unless the bell changed while it was asked: a notification that came
     * live meanwhile is newer than an answer the server gave before it existed (that answer set
     * the bell back to nothing under a toast that had just said otherwise). */
    async loadUnread() {
        const asked = this.changes;
        try {
            const n = (await api('GET', '/notifications/unread')).unread;
            if (asked === this.changes) this.setUnread(n);
        } catch { /* the bell stays as it is */ }
    }

    /* What the server had when this page started: not news, whatever comes later. */
    loadKnown() {
        this.baseline = api('GET', '/notifications')
            .then(l => { for (const n of Array.isArray(l) ? l : []) this.known.add(String(n.id)); })
            .catch(() => { /* then only live ones are shown */ });
    }

    /* The event stream (re)connected: what came while it was not is shown as if live. */
    async catchUp() {
        await this.baseline;
        let list;
        try { list = await api('GET', '/notifications'); } catch { return; }
        for (const n of (Array.isArray(list) ? list : []).slice().reverse()) if (!n.read) this.notify(n);
        this.loadUnread();
    }

    setUnread(n) {
        this.unread = Number(n) || 0;
        this.changes++;
        this.renderBadge();
    }

    renderBadge() {
        const b = this.bell.querySelector('.count');
        b.hidden = !this.unread;
        b.textContent = this.unread > 9 ? '9+' : String(this.unread);
        this.bell.setAttribute('aria-label', this.unread ? `Notifications (${this.unread} new)` : 'Notifications');
    }

    notify(n) {
        if (n.id != null) { // live and caught up both: shown once
            if (this.known.has(String(n.id))) return;
            this.known.add(String(n.id));
        }
        this.notifications.unshift(n);
        this.setUnread(this.unread + 1);
        if (!this.notifPanel.hidden) this.renderNotifications();
        toast(n.body || '', n.kind?.includes('fail') || n.kind?.includes('error') || n.kind?.includes('mismatch') ? 'error' : 'info',
            { title: n.title || n.kind });
    }
}

/* ============================================================ events ======= */
function connectEvents() {
    if (events) events.close();
    events = new EventSource('/api/v1/events', { withCredentials: true });
    events.addEventListener('open', () => shell?.catchUp());
    events.addEventListener('notification', ev => {
        try { shell?.notify(JSON.parse(ev.data)); } catch { /* a malformed frame is not the user's problem */ }
    });
    events.addEventListener('task', ev => {
        try { taskUpdate(JSON.parse(ev.data)); } catch { /* ditto */ }
    });
    events.addEventListener('unread', ev => { // marked read here or in another tab
        try { shell?.setUnread(JSON.parse(ev.data).unread); } catch { /* ditto */ }
    });
    // A frame whose "event:" line the browser could not read arrives as a plain message (the
    // server's first frame after connecting did, see kernel/http.c http_reply_sse): tell the
    // two kinds apart by their fields rather than lose it.
    events.addEventListener('message', ev => {
        try {
            const d = JSON.parse(ev.data);
            if (d && typeof d.title === 'string' && 'kind' in d) shell?.notify(d);
            else if (d && d.id !== undefined && typeof d.state === 'string') taskUpdate(d);
            else if (d && typeof d.unread === 'number' && Object.keys(d).length === 1) shell?.setUnread(d.unread);
        } catch { /* ditto */ }
    });
    events.addEventListener('error', async () => {
        // EventSource retries by itself; if it gave up, find out whether the session ended.
        if (events?.readyState === EventSource.CLOSED) {
            try { await api('GET', '/me'); setTimeout(connectEvents, 5000); } catch { /* 401 -> login */ }
        }
    });
}

/* ============================================================ tasks ======== */
function taskUpdate(t) {
    emit('task', t);
    shell?.taskSeen(t);
    const w = tasks.get(String(t.id));
    if (!w || w.done) return;
    w.progress = Math.round(t.progress ?? w.progress ?? 0);
    const bar = w.toast.querySelector('.progress');
    bar.setAttribute('aria-valuenow', String(w.progress));
    bar.firstChild.style.width = w.progress + '%';
    w.toast.querySelector('.task-msg').textContent = t.message || t.state || '';
    if (t.state === 'done' || t.state === 'failed' || t.state === 'cancelled') {
        w.done = true;
        w.toast.remove();
        if (t.state === 'done') toast(w.success, 'success', { title: 'Done' });
        else toast(`${w.label} ${t.state === 'failed' ? 'failed' : 'was cancelled'}${t.message || t.error ? ': ' + (t.error || t.message) : '.'}`, 'error');
        w.onEnd?.(t);
    }
    if (shell && !shell.notifPanel.hidden) shell.renderNotifications();
}

/* Follow a task: a progress toast, fed by the event stream and, in case a frame is missed,
 * by polling GET /tasks/{id} every second and a half. */
export function watchTask(id, label, success, onEnd) {
    const bar = h('div.progress', { role: 'progressbar', 'aria-label': label, 'aria-valuenow': '0', 'aria-valuemin': '0', 'aria-valuemax': '100' },
        h('div.progress-fill', { style: 'width:0%' }));
    const t = h('div.toast.toast-task', { role: 'status', dataset: { task: String(id) } }, icon('tasks'),
        h('div.toast-text', h('strong', label), bar, h('span.task-msg.muted', 'Queued')));
    let host = document.querySelector('.toasts');
    if (!host) { toast('', 'info', { timeout: 1 }).remove(); host = document.querySelector('.toasts'); }
    host.append(t);
    const w = { toast: t, label, success, onEnd, done: false, progress: 0 };
    tasks.set(String(id), w);
    (async function poll() {
        while (!w.done) {
            await new Promise(r => setTimeout(r, 1500));
            if (w.done) break;
            try { taskUpdate(await api('GET', '/tasks/' + encodeURIComponent(id))); }
            catch (e) { if (e.status === 404) { w.done = true; t.remove(); toast(`${label}: the task is gone (${e.message})`, 'error'); } }
        }
    })();
}

/* ============================================================ stores ======= */
export async function loadStores() {
    const list = await api('GET', '/stores');
    state.stores = (Array.isArray(list) ? list : list?.stores || []).map(s => ({ ...s, id: String(s.id) }));
    emit('stores');
}

async function createStore() {
    const name = h('input', { type: 'text', name: 'name', autocomplete: 'off', required: true, maxlength: '255' });
    await dialog({
        title: 'New store', body: [h('p.muted', 'A store is a separate space for files, with its own settings.'), field('Store name', name)],
        actions: [{ label: 'Cancel' }, { label: 'Create store', primary: true, value: 'ok' }],
        onSubmit: async () => {
            const n = name.value.trim();
            if (!n) throw Object.assign(new Error('Give the store a name.'), { field: 'name' });
            let r;
            try { r = await api('POST', '/stores', { name: n }); }
            catch (e) { throw Object.assign(e, { field: 'name' }); }
            watchTask(r.task, `Creating store “${n}”`, `The store “${n}” is ready.`, async t => {
                await loadStores().catch(() => {});
                if (t.state === 'done' && r.store !== undefined) location.hash = '#/files/' + encodeURIComponent(r.store) + '/';
            });
        },
    });
}

async function renameStore() {
    const s = currentStore();
    const name = h('input', { type: 'text', name: 'name', value: s.name, autocomplete: 'off', required: true });
    await dialog({
        title: 'Rename store', body: field('Store name', name),
        actions: [{ label: 'Cancel' }, { label: 'Rename', primary: true, value: 'ok' }],
        onSubmit: async () => {
            try { await api('PATCH', '/stores/' + encodeURIComponent(s.id), { name: name.value.trim() }); }
            catch (e) { throw Object.assign(e, { field: 'name' }); }
            await loadStores();
            toast('Store renamed.', 'success');
        },
    });
}

async function deleteStore() {
    const s = currentStore();
    const confirmInput = h('input', { type: 'text', name: 'confirm', autocomplete: 'off' });
    await dialog({
        title: 'Delete store',
        body: [h('p', `This deletes the store “${s.name}” and every file in it. It cannot be undone.`),
            field(`Type the store's name (${s.name}) to confirm`, confirmInput)],
        actions: [{ label: 'Cancel' }, { label: 'Delete store', danger: true, value: 'ok' }],
        onSubmit: async () => {
            let r;
            try { r = await api('DELETE', '/stores/' + encodeURIComponent(s.id), { confirm: confirmInput.value }); }
            catch (e) { throw Object.assign(e, { field: 'confirm' }); }
            if (r?.task) watchTask(r.task, `Deleting store “${s.name}”`, `The store “${s.name}” was deleted.`, () => loadStores().then(() => { state.sid = null; location.hash = '#/files'; shell?.route(); }));
            else { await loadStores(); state.sid = null; location.hash = '#/files'; }
        },
    });
}

/* ============================================================ account ====== */
async function changePassword() {
    const old = h('input', { type: 'password', name: 'old', autocomplete: 'current-password' });
    const nw = h('input', { type: 'password', name: 'new', autocomplete: 'new-password', minlength: '8' });
    await dialog({
        title: 'Change password', body: [field('Current password', old), field('New password', nw, 'At least 8 characters.')],
        actions: [{ label: 'Cancel' }, { label: 'Change password', primary: true, value: 'ok' }],
        onSubmit: async () => {
            if (nw.value.length < 8) throw Object.assign(new Error('The new password needs at least 8 characters.'), { field: 'new' });
            try { await api('POST', '/me/password', { old: old.value, new: nw.value }); }
            catch (e) { throw Object.assign(e, { field: e.status === 403 ? 'old' : 'new' }); }
            toast('Your password was changed.', 'success');
        },
    });
}

async function about() {
    const mods = state.health?.modules || []; // read for administrators only
    await dialog({
        title: 'About MByte',
        body: [h('p', `MByte${state.version ? ' ' + state.version : ''} — a self-hosted file storage server.`),
            mods.length ? h('h3', 'Modules') : null,
            mods.length ? h('ul.module-list', mods.map(m => h('li', h('span', m.name), h('span.badge.state-' + m.state, m.state)))) : null],
        actions: [{ label: 'Close', primary: true, value: 'ok' }],
    });
}

/* ============================================================ start ======== */
async function start() {
    try {
        if (!state.user) state.user = await api('GET', '/me');
        await refreshModules();
        await loadStores();
    } catch (e) {
        if (e instanceof ApiError && e.status === 401) return; // the handler showed the login
        clear(root, h('main.login', h('div.login-card', h('h1', 'MByte is not reachable'), h('p.form-error', { role: 'alert' }, e.message),
            button('Try again', 'refresh', () => start(), { cls: 'primary' }))));
        return;
    }
    shell?.destroy();
    shell = new Shell();
    applyParts();
    shell.renderStoreBtn();
    shell.loadUsage();
    shell.loadGreeting();
    shell.loadUnread();
    shell.loadKnown();
    connectEvents();
    await shell.route();
}

window.addEventListener('hashchange', () => shell?.route());
window.addEventListener('offline', () => toast('You are offline. Uploads resume when the connection is back.', 'error'));

// /s/{token} is a share link's page for visitors: no sign-in, nothing else of the page.
const shareLink = /^\/s\/([^/]+)\/?$/.exec(location.pathname);
if (shareLink) showPublic(root, decodeURIComponent(shareLink[1]));
// A tab that has a CSRF token may still have its session cookie: try it; otherwise sign in.
else if (csrfToken()) start(); else showLogin();
