/*
 * web/js/shares.js — sharing (module `sharing`): the "Share…" dialog of a file or folder (link or
 * user share: permission, password, expiry, download limit; the link shown once with a copy
 * button), the Shares view of a store (list, revoke) with "Shared with me", and the visitor's
 * page at /s/{token} (password prompt, folder listing, download, zip, drop box upload), which
 * works without an account.
 *
 * The visitor's page and a grantee's browsing of a user share are the same component (Browser):
 * only the base URL (/api/v1/public/{token} or /api/v1/shared/{id}) and the credentials differ.
 * Every name from the server is shown through fileName() (a <bdi>, invisible characters marked).
 */
import { api, errorFrom, encodePath, authHeaders, ApiError } from './api.js';
import { h, icon, button, clear, dialog, field, toast, formatBytes, formatTime, fileIcon, fileName } from './ui.js';
import { currentStore } from './state.js';

const PERMS = {
    view: 'View: open and read files',
    download: 'Download: view, and the folder as a zip',
    upload: 'Upload only: a drop box (no listing, nothing overwritten)',
    edit: 'Edit: read, upload and overwrite',
};
const FOLDER_ONLY = new Set(['upload', 'edit']);

/* Copy text to the clipboard; the button says what happened. */
export async function copyText(text, btn) {
    try {
        await navigator.clipboard.writeText(text);
        if (btn) { btn.querySelector('.label').textContent = 'Copied'; setTimeout(() => { btn.querySelector('.label').textContent = 'Copy'; }, 2000); }
        toast('Copied to the clipboard.', 'success');
    } catch {
        toast('The browser did not allow copying; select the text and copy it yourself.', 'error');
    }
}

/* A read-only text with a Copy button. */
export function copyField(label, value, name) {
    const input = h('input', { type: 'text', readOnly: true, value, name, class: 'copy-input', spellcheck: 'false' });
    input.addEventListener('focus', () => input.select());
    const b = button('Copy', 'check', () => copyText(input.value, b), { cls: 'small', title: 'Copy ' + label });
    b.setAttribute('aria-label', 'Copy ' + label);
    const f = field(label, h('div.copy-row'), null);
    f.querySelector('.copy-row').append(input, b);
    f.querySelector('label').setAttribute('for', input.id = 'c-' + Math.random().toString(36).slice(2));
    return f;
}

/* ============================================================ Share… dialog === */
export async function shareDialog(sid, entry) {
    const folder = entry.type === 'folder';
    const type = h('select', { name: 'type' }, h('option', { value: 'link' }, 'Anyone with the link'),
        h('option', { value: 'user' }, 'A user of this server'));
    const perm = h('select', { name: 'permission' }, Object.entries(PERMS)
        .filter(([k]) => folder || !FOLDER_ONLY.has(k)).map(([k, v]) => h('option', { value: k }, v)));
    perm.value = 'download';
    const user = h('input', { type: 'text', name: 'user', autocomplete: 'off', autocapitalize: 'none', spellcheck: 'false' });
    const pw = h('input', { type: 'password', name: 'password', autocomplete: 'new-password' });
    const expires = h('input', { type: 'date', name: 'expires' });
    const maxdl = h('input', { type: 'number', name: 'max_downloads', min: '1', step: '1' });
    const userF = field('User name', user), pwF = field('Password (optional)', pw, 'Visitors must type it before they see anything.');
    const maxF = field('Download limit (optional)', maxdl, 'After that many downloads the link stops working.');
    const sync = () => {
        const link = type.value === 'link';
        userF.hidden = link;
        pwF.hidden = !link;
        maxF.hidden = !link;
    };
    type.addEventListener('change', sync);
    sync();
    const body = h('div.share-form',
        h('p', 'Share ', fileName(entry.name), folder ? ' (folder)' : ''),
        field('Who', type), userF, field('Permission', perm), pwF,
        field('Expires (optional)', expires, 'The link or share stops working at the start of that day (UTC).'), maxF);
    let created = null;
    await dialog({
        title: 'Share', body, wide: true,
        actions: [{ label: 'Cancel' }, { label: 'Create share', primary: true, value: 'ok' }],
        onSubmit: async () => {
            const req = { path: entry.path, type: type.value, permission: perm.value };
            if (type.value === 'user') {
                if (!user.value.trim()) throw Object.assign(new Error('Name the user to share with.'), { field: 'user' });
                req.user = user.value.trim();
            } else {
                if (pw.value) req.password = pw.value;
                if (maxdl.value) req.max_downloads = Number(maxdl.value);
            }
            if (expires.value) req.expires = expires.value + 'T00:00:00Z';
            try {
                created = await api('POST', `/stores/${encodeURIComponent(sid)}/shares`, req);
            } catch (e) {
                const f = ['user', 'password', 'expires', 'max_downloads', 'permission'].find(k => e.message.startsWith(k));
                throw Object.assign(e, { field: e.field || f });
            }
        },
    });
    if (!created) return null;
    if (created.token) {
        // conf.d/sharing.yaml base_url makes the url absolute; otherwise it is /s/{token} here.
        const url = /^https?:\/\//.test(created.url) ? created.url : location.origin + created.url;
        await dialog({
            title: 'Link created',
            body: [h('p', 'Anyone with this link can ', h('strong', created.permission), ' ', fileName(entry.name), '.'),
                copyField('Link', url, 'link'),
                h('p.note', icon('alert'), 'This is the only time the link is shown: the server keeps only a fingerprint of it. Copy it now.')],
            actions: [{ label: 'Done', primary: true, value: 'ok' }],
        });
    } else {
        toast(`Shared with ${created.user ?? 'the user'}.`, 'success');
    }
    return created;
}

/* ============================================================ Shares view === */
export class SharesView {
    constructor() {
        this.el = h('section.view.shares-view', { 'aria-label': 'Shares' });
    }

    async show(sid) {
        this.sid = sid;
        clear(this.el, h('p.muted.pad', 'Loading…'));
        const [mine, withMe] = await Promise.allSettled([
            api('GET', `/stores/${encodeURIComponent(sid)}/shares`),
            api('GET', '/shared-with-me'),
        ]);
        const store = currentStore();
        clear(this.el,
            h('div.view-head', h('h1.view-title', 'Shares of ', store ? fileName(store.name) : 'this store')),
            mine.status === 'fulfilled' ? this.table(mine.value?.shares || [])
                : h('p.form-error', { role: 'alert' }, mine.reason.message),
            h('h2.section-head.spaced', 'Shared with me'),
            withMe.status === 'fulfilled' ? this.withMe(Array.isArray(withMe.value) ? withMe.value : withMe.value?.shares || [])
                : h('p.form-error', { role: 'alert' }, withMe.reason.message));
    }

    table(shares) {
        if (!shares.length) {
            return h('div.empty', icon('users'), h('p.empty-title', 'Nothing is shared from this store'),
                h('p.muted', 'Use “Share…” in a file’s or folder’s menu.'));
        }
        const tbody = h('tbody');
        for (const s of shares) {
            const err = h('p.field-error', { role: 'alert', hidden: true });
            const revoke = button('Revoke', 'close', async () => {
                revoke.disabled = true;
                try {
                    await api('DELETE', '/shares/' + encodeURIComponent(s.id));
                    toast('The share was revoked: its link stopped working.', 'success');
                    await this.show(this.sid);
                } catch (e) {
                    err.textContent = e.message;
                    err.hidden = false;
                    revoke.disabled = false;
                }
            }, { cls: 'small danger-text' });
            revoke.setAttribute('aria-label', 'Revoke the share of ' + (s.path || '/'));
            const who = s.type === 'link' ? 'Link' + (s.has_password ? ' · password' : '') : h('span', 'User ', fileName(s.user ?? ''));
            const limits = [s.expires ? 'until ' + formatTime(s.expires) : null,
                s.max_downloads ? `${s.downloads ?? 0} of ${s.max_downloads} downloads` : `${s.downloads ?? 0} downloads`]
                .filter(Boolean).join(' · ');
            tbody.append(h('tr', { dataset: { share: s.id, path: s.path } },
                h('td.col-name', h('div.name-cell', h('span.file-icon.' + (s.target === 'folder' ? 'folder' : 'file'),
                    icon(s.target === 'folder' ? 'folder' : 'file')), fileName(s.path || '/'))),
                h('td', who), h('td', h('span.badge', s.permission)), h('td.col-limits.muted.small', limits),
                h('td.col-actions', h('div.row-actions', revoke), err)));
        }
        return h('div.table-wrap', h('table.files.shares', { 'aria-label': 'Shares of this store' },
            h('thead', h('tr', h('th', { scope: 'col' }, 'Shared item'), h('th', { scope: 'col' }, 'With'),
                h('th', { scope: 'col' }, 'Permission'), h('th.col-limits', { scope: 'col' }, 'Limits'),
                h('th.col-actions', { scope: 'col' }, h('span.sr-only', 'Actions')))), tbody));
    }

    withMe(list) {
        if (!list.length) return h('p.muted', 'Nobody has shared anything with you.');
        const ul = h('ul.shared-list');
        for (const s of list) {
            const name = (s.path || '').split('/').pop() || '/';
            const open = button('Open', s.target === 'folder' ? 'folder' : 'download', () => openSharedWithMe(s, name), { cls: 'small' });
            open.setAttribute('aria-label', 'Open ' + name);
            ul.append(h('li', { dataset: { share: s.id } }, icon(s.target === 'folder' ? 'folder' : 'file'), fileName(name),
                h('span.muted.small', ' from ', fileName(s.owner ?? '?'), ' · ', s.permission, s.expired ? ' · expired' : ''), open));
        }
        return ul;
    }
}

/* A user share opened by its grantee: the same browser as a visitor's, with the session; at
 * folder `rel` of the share, the entry `select` (a path in the share) marked. */
function openSharedWithMe(s, name, rel = '', select = '') {
    const host = h('div.share-browser');
    const b = new Browser({
        base: '/api/v1/shared/' + encodeURIComponent(s.id), title: name, host, headers: m => authHeaders(m), select,
    });
    dialog({ title: 'Shared with me', body: host, wide: true, actions: [{ label: 'Close', primary: true, value: 'ok' }] });
    b.open(rel);
}

/* A search hit found through a share (hit.share): its path is the owner's, in a store the
 * grantee cannot open, so it opens through the share (/api/v1/shared/{id}/...): a folder hit
 * at that folder, a file hit at its folder with the file marked; a shared file as itself. */
export async function openSharedHit(hit) {
    let s;
    try {
        s = ((await api('GET', '/shared-with-me')).shares || []).find(x => x.id === hit.share);
    } catch (e) {
        toast(e.message, 'error');
        return;
    }
    if (!s) {
        toast('This share is gone: it may have been revoked.', 'error');
        return;
    }
    const root = (s.path || '').replace(/^\/+|\/+$/g, ''), path = hit.path.replace(/^\/+/, '');
    const inShare = !root ? path : path === root ? '' : path.startsWith(root + '/') ? path.slice(root.length + 1) : '';
    const parent = inShare.includes('/') ? inShare.slice(0, inShare.lastIndexOf('/')) : '';
    const name = root.split('/').pop() || '/';
    if (s.target === 'file') openSharedWithMe(s, name);
    else if (hit.type === 'folder') openSharedWithMe(s, name, inShare);
    else openSharedWithMe(s, name, parent, inShare);
}

/* ============================================================ visitor page === */
/*
 * Browser: what a visitor (or a grantee) sees of a share. The first GET tells what it is: a
 * folder answers with its listing, a file with its bytes, a drop box with 403 "only accepts
 * uploads", a password-protected link with 401.
 */
class Browser {
    constructor({ base, title, host, headers, password, select }) {
        this.base = base;
        this.select = select || '';
        this.title = title;
        this.host = host;
        this.headers = headers || (() => ({}));
        this.password = password || '';
    }

    url(rel, query) { return this.base + (rel ? '/' + encodePath(rel) : '') + (query || ''); }

    hdrs(method) {
        const hd = this.headers(method);
        if (this.password) hd['X-Share-Password'] = this.password;
        return hd;
    }

    /* A visitor's link: what it is first (name, size, expiry, password), then its contents. */
    async start() {
        this.info = true;
        clear(this.host, h('p.muted.pad', 'Loading…'));
        let resp;
        try {
            resp = await fetch(this.base + '?info=1', { headers: this.hdrs('GET'), cache: 'no-store' });
        } catch {
            return this.fail(new ApiError('The server cannot be reached. Check your network connection and try again.'));
        }
        if (resp.status === 401) return this.askPassword((await errorFrom(resp)).message);
        if (!resp.ok) {
            const e = await errorFrom(resp);
            // The kernel's 404 for a route of a module that is off names the module.
            if (resp.status === 404 && /sharing module is not loaded/.test(e.message)) {
                return this.fail(new ApiError('Sharing is not available on this server right now.'));
            }
            return this.fail(resp.status === 410 ? new ApiError(e.message.replace(/^this share/, 'This link')) : resp.status === 404
                ? new ApiError('This link does not exist (any more): it may have been revoked.') : e);
        }
        const i = await resp.json();
        this.expires = i.expires;
        if (i.locked) return this.askPassword('');
        this.title = i.name || '';
        document.title = (i.name || 'Shared') + ' · MByte';
        if (i.type === 'file') return this.fileCard(i.name, i.size, null, i);
        return this.open('');
    }

    async open(rel) {
        this.info = false;
        this.rel = rel;
        clear(this.host, h('p.muted.pad', 'Loading…'));
        const ctl = new AbortController();
        let resp;
        try {
            resp = await fetch(this.url(rel), { headers: this.hdrs('GET'), credentials: 'same-origin', signal: ctl.signal });
        } catch {
            return this.fail(new ApiError('The server cannot be reached. Check your network connection and try again.'));
        }
        if (resp.status === 401) return this.askPassword((await errorFrom(resp)).message);
        if (resp.status === 403) {
            const e = await errorFrom(resp);
            if (/only accepts uploads/.test(e.message)) return this.dropBox();
            return this.fail(e);
        }
        if (!resp.ok) return this.fail(await errorFrom(resp, resp.status === 410
            ? 'This link has expired or reached its download limit.' : resp.status === 404
                ? 'This link does not exist (any more): it may have been revoked.' : undefined));
        if ((resp.headers.get('Content-Type') || '').includes('application/json')) {
            const data = await resp.json();
            if (Array.isArray(data.entries)) return this.folder(data);
        }
        // A file: the answer is the file itself (and already counted as a download), so keep
        // its bytes for the Download button instead of fetching it twice.
        const name = dispositionName(resp.headers.get('Content-Disposition')) || this.title || 'download';
        const size = Number(resp.headers.get('Content-Length'));
        let blob = null;
        if (size <= 256 * 1024 * 1024) blob = await resp.blob();
        else ctl.abort();
        this.fileCard(name, blob ? blob.size : size, blob);
    }

    fail(e) {
        clear(this.host, h('div.empty.error-state', { role: 'alert' }, icon('alert'), h('p', e.message)));
    }

    askPassword(message) {
        const pw = h('input', { type: 'password', name: 'password', autocomplete: 'current-password', required: true });
        const err = h('p.form-error', { role: 'alert', hidden: !this.password }, this.password ? message : '');
        const form = h('form.share-password', { novalidate: true },
            h('p', icon('shield'), ' This link is protected by a password.'),
            field('Password', pw), err, h('button.btn.primary', { type: 'submit' }, 'Open'));
        form.addEventListener('submit', ev => {
            ev.preventDefault();
            if (!pw.value) { err.textContent = 'Type the password.'; err.hidden = false; pw.focus(); return; }
            this.password = pw.value;
            if (this.info) this.start(); else this.open(this.rel || '');
        });
        clear(this.host, form);
        pw.focus();
    }

    /* Downloads go through the browser's own download (no copy in memory): a form POST carries
     * the password as the form field the server accepts, never in the URL. */
    download(rel, query) {
        const form = h('form', { method: 'POST', action: this.url(rel, query), hidden: true },
            this.password ? h('input', { type: 'hidden', name: 'password', value: this.password }) : null);
        if (this.base.startsWith('/api/v1/shared/')) {
            // A grantee's share needs the session: fetch it and hand the bytes over.
            return fetchSave(this.url(rel, query), this.hdrs('GET'), rel.split('/').pop() || this.title);
        }
        document.body.append(form);
        form.submit();
        form.remove();
    }

    folder(data) {
        const share = data.share || {};
        const perm = share.permission || '';
        const rel = data.path || '';
        const crumbs = h('ol.crumbs');
        const parts = rel ? rel.split('/') : [];
        const crumb = (label, p, last) => h('li', last ? h('span', { 'aria-current': 'page' }, fileName(label))
            : h('button.link', { type: 'button', onclick: () => this.open(p) }, fileName(label)));
        crumbs.append(crumb(share.name || this.title || 'Shared folder', '', !parts.length));
        parts.forEach((n, i) => crumbs.append(crumb(n, parts.slice(0, i + 1).join('/'), i === parts.length - 1)));
        const tbody = h('tbody');
        const entries = [...data.entries].sort((a, b) => (a.type === b.type ? a.name.localeCompare(b.name) : a.type === 'folder' ? -1 : 1));
        for (const e of entries) {
            const p = rel ? rel + '/' + e.name : e.name;
            const nameEl = e.type === 'folder'
                ? h('button.name-link', { type: 'button', onclick: () => this.open(p) }, fileName(e.name))
                : fileName(e.name);
            const dl = e.type === 'file' ? button('Download ' + e.name, 'download', () => this.download(p, '?download=1'), { cls: 'icon-btn', iconOnly: true }) : null;
            tbody.append(h('tr' + (p === this.select ? '.selected' : ''), { dataset: { path: p, type: e.type } },
                h('td.col-name', h('div.name-cell', h('span.file-icon.' + fileIcon(e), icon(fileIcon(e))), nameEl)),
                h('td.col-size', e.type === 'folder' ? '—' : formatBytes(e.size)),
                h('td.col-mtime', formatTime(e.mtime)),
                h('td.col-actions', h('div.row-actions', dl))));
        }
        const canZip = perm === 'download' || perm === 'edit';
        clear(this.host,
            h('div.view-head', h('nav.breadcrumbs', { 'aria-label': 'Folder path' }, crumbs),
                h('div.view-actions',
                    canZip ? button('Download all as zip', 'archive', () => this.download(rel, '?zip=1'), { cls: 'primary' }) : null)),
            share.expires ? h('p.muted.small', 'This link works until ' + formatTime(share.expires) + '.') : null,
            entries.length ? h('div.table-wrap', h('table.files.share-listing', { 'aria-label': 'Shared files' },
                h('thead', h('tr', h('th', { scope: 'col' }, 'Name'), h('th.col-size', { scope: 'col' }, 'Size'),
                    h('th.col-mtime', { scope: 'col' }, 'Modified'), h('th.col-actions', { scope: 'col' }, h('span.sr-only', 'Actions')))),
                tbody)) : h('div.empty', icon('folder'), h('p.empty-title', 'This folder is empty')),
            perm === 'edit' ? this.uploader(rel) : null);
    }

    /* A shared file: its name, size, expiry and downloads left (info), and the Download button,
     * the only thing that fetches (and counts) it. */
    fileCard(name, size, blob, info = {}) {
        const dl = button('Download', 'download', () => {
            if (blob) saveBlob(blob, name);
            else this.download('', '?download=1');
        }, { cls: 'primary' });
        const left = info.downloads_left;
        clear(this.host, h('div.card.share-file', h('span.file-icon.big.' + fileIcon({ name, type: 'file' }), icon(fileIcon({ name, type: 'file' }))),
            h('h2', fileName(name)), h('p.muted.share-size', size == null ? '' : formatBytes(size)),
            h('p.muted.small.share-expiry', info.expires ? 'This link works until ' + formatTime(info.expires) + '.' : 'This link does not expire.'),
            left != null ? h('p.muted.small.share-left', left === 1 ? 'It can be downloaded once more.' : `It can be downloaded ${left} more times.`) : null,
            info.password ? h('p.muted.small', icon('shield'), ' Protected by a password.') : null,
            dl));
    }

    /* Upload files with PUT, one by one; a drop box never overwrites (409 says so). */
    uploader(rel) {
        const input = h('input', { type: 'file', multiple: true, name: 'files' });
        const status = h('ul.drop-status', { 'aria-live': 'polite' });
        const send = button('Upload', 'upload', async () => {
            const files = [...input.files];
            if (!files.length) { status.append(h('li.field-error', 'Choose a file first.')); return; }
            send.disabled = true;
            for (const f of files) {
                const li = h('li', fileName(f.name), ' — sending…');
                status.append(li);
                try {
                    const r = await fetch(this.url(rel ? rel + '/' + f.name : f.name), {
                        method: 'PUT', body: f, headers: this.hdrs('PUT'), credentials: 'same-origin',
                    });
                    if (!r.ok) throw await errorFrom(r);
                    clear(li, icon('check'), ' ', fileName(f.name), ' — uploaded (' + formatBytes(f.size) + ')');
                    li.className = 'ok';
                } catch (e) {
                    clear(li, icon('alert'), ' ', fileName(f.name), ' — ' + e.message);
                    li.className = 'field-error';
                }
            }
            send.disabled = false;
            input.value = '';
        }, { cls: 'primary' });
        return h('div.card.drop-box', h('h3', 'Add files'), field('Files to upload', input), send, status);
    }

    dropBox() {
        clear(this.host, h('div.drop-page',
            h('h2', icon('upload'), ' Drop box'),
            h('p.muted', 'You can send files here. You cannot see what others sent, and nothing is overwritten.'),
            this.uploader('')));
    }
}

function dispositionName(cd) {
    if (!cd) return '';
    const star = /filename\*=UTF-8''([^;]+)/i.exec(cd);
    if (star) { try { return decodeURIComponent(star[1]); } catch { /* fall back */ } }
    const plain = /filename="([^"]*)"/i.exec(cd);
    return plain ? plain[1] : '';
}

function saveBlob(blob, name) {
    const a = h('a', { href: URL.createObjectURL(blob), download: name, hidden: true });
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(a.href), 60000);
}

async function fetchSave(url, headers, name) {
    try {
        const r = await fetch(url, { headers, credentials: 'same-origin' });
        if (!r.ok) throw await errorFrom(r);
        saveBlob(await r.blob(), dispositionName(r.headers.get('Content-Disposition')) || name);
    } catch (e) {
        toast('Could not download: ' + e.message, 'error');
    }
}

/* The page at /s/{token}: no sign-in, nothing of the signed-in page. It starts from the
 * link's info (GET /api/v1/public/{token}?info=1), which never counts as a download. */
export async function showPublic(root, token) {
    document.title = 'Shared with you · MByte';
    const host = h('div.share-browser');
    clear(root, h('main.public-share',
        h('header.public-head', h('span.brand', icon('files'), h('span', 'MByte')), h('span.muted', 'Shared with you')),
        host));
    new Browser({ base: '/api/v1/public/' + encodeURIComponent(token), title: '', host }).start();
}
