/*
 * web/js/files.js — the file browser: breadcrumbs, a sortable table with selection (checkboxes,
 * shift-click ranges), drag-and-drop and picker uploads, download, rename, move (a folder chooser),
 * new folder, delete, and the side panel with details and versions. Also the trash view and the
 * store settings dialog, which are parts of the same store page.
 *
 * Errors land next to what caused them: a dialog field, the file's row, or a toast for work that
 * runs in the background. Paths are store paths without a leading '/' ("" is the root).
 */
import { api, fileUrl, encodePath } from './api.js';
import { h, icon, button, clear, dialog, confirmDialog, field, openMenu, toast, formatBytes, formatTime, fileIcon, toDate, fileName } from './ui.js';
import { state, emit, on, currentStore, isAdmin } from './state.js';
import { partEnabled, applyParts } from './modules.js';
import { filesFromDrop } from './uploads.js';
import { thumbCell, previewFor, wantsGrid, gridFor } from './thumbs.js';
import { tagQuery, tagChips, tagBar, tagSelected, tagEditor } from './tags.js';

const S = sid => `/stores/${encodeURIComponent(sid)}`;
export const join = (a, b) => (a ? a + '/' + b : b);
export const parentOf = p => p.split('/').slice(0, -1).join('/');
export const baseName = p => p.split('/').pop();

/* The folder listing in one shape whatever the server adds: [{name, type, size, mtime, path, raw}] */
export function normalizeEntries(data, base) {
    const arr = Array.isArray(data) ? data : data?.entries || data?.items || data?.children || [];
    return arr.map(e => {
        const name = e.name ?? baseName(e.path || '');
        const folder = ['folder', 'dir', 'directory'].includes(e.type) || e.is_dir === true || e.folder === true;
        return {
            name, type: folder ? 'folder' : 'file', size: folder ? e.size ?? null : e.size,
            mtime: e.mtime ?? e.modified ?? e.updated ?? e.updated_at ?? e.created,
            path: join(base, name), raw: e,
        };
    });
}

/* One page of a folder in name order (docs/api.md): {entries, next (cursor or null), total}. */
/* `filter` is more query ("tag=a&tag=-b", web/js/tags.js): the server filters each page, so a page may
 * hold fewer than `limit` entries, and `total` counts the whole folder. */
export async function listPage(sid, path, cursor, limit = PAGE, filter = '') {
    const q = `?limit=${limit}` + (cursor ? `&cursor=${encodeURIComponent(cursor)}` : '') + (filter ? `&${filter}` : '');
    const data = await api('GET', (path ? `${S(sid)}/list/${encodePath(path)}` : `${S(sid)}/list`) + q);
    return { entries: normalizeEntries(data, path), next: data?.next_cursor || null, total: data?.total ?? null };
}

/* A whole folder, page after page (the folder chooser; small folders). */
export async function listFolder(sid, path) {
    let all = [], cursor = null;
    do {
        const p = await listPage(sid, path, cursor);
        all = all.concat(p.entries);
        cursor = p.next;
    } while (cursor);
    return all;
}

/* The file list of a big folder is virtual: only the rows near the viewport are in the page
 * (ROWS_MAX at most), pages are fetched as the user scrolls, and a folder of more than WHOLE
 * entries is shown in the server's name order (sorting it would need all of it). */
const PAGE = 1000, PAGE_MAX = 10000, WHOLE = 10000, VIRTUAL = 200, ROWS_MAX = 120, OVERSCAN = 30;

/* ====================================================================== view === */
export class FilesView {
    constructor(ctx) {
        this.ctx = ctx; // {uploads, go(hash)}
        this.entries = [];
        this.selected = new Set();
        this.sort = { key: 'name', dir: 1 };
        this.rowErrors = new Map();
        this.lastIndex = null;
        this.panelEntry = null;
        this.panelTab = 'details';
        this.loading = false;
        this.error = null;
        this.cursor = null;     // the next page of a folder loaded in part
        this.total = null;      // entries the folder holds (the server's count)
        this.allSelected = false; // "select all" of a folder loaded in part: the whole folder
        this.rowH = 41;
        this.onScroll = () => {
            if (this.scrollQueued) return;
            this.scrollQueued = true;
            requestAnimationFrame(() => { this.scrollQueued = false; this.fillRows(); });
        };
        window.addEventListener('scroll', this.onScroll, { passive: true });
        this.el = h('section.view.files-view', { 'aria-label': 'Files' });
        this.fileInput = h('input', { type: 'file', multiple: true, hidden: true, 'aria-hidden': 'true', tabindex: '-1' });
        this.dirInput = h('input', { type: 'file', multiple: true, hidden: true, webkitdirectory: true, 'aria-hidden': 'true', tabindex: '-1' });
        this.fileInput.addEventListener('change', () => this.pickerChosen(this.fileInput));
        this.dirInput.addEventListener('change', () => this.pickerChosen(this.dirInput));
        this.panel = h('aside.panel', { 'aria-label': 'Details', hidden: true });
        this.panel.addEventListener('keydown', ev => {
            if (ev.key === 'Escape' && !document.querySelector('dialog[open], .menu')) this.closePanel(true);
        });
        this.setupDrop();
        this.offs = [
            on('files', ({ sid, path } = {}) => {
                if (String(sid) === String(state.sid) && (path === undefined || parentOf(path) === state.path)) this.load();
            }),
            on('modules', () => { applyParts(this.el); applyParts(this.panel); }),
        ];
    }

    destroy() { this.offs.forEach(f => f()); window.removeEventListener('scroll', this.onScroll); }

    async show(sid, path) {
        const changed = String(sid) !== String(state.sid) || path !== state.path;
        state.sid = String(sid);
        state.path = path;
        if (changed) {
            this.selected.clear();
            this.allSelected = false;
            this.rowErrors.clear();
            this.lastIndex = null;
            this.closePanel();
        }
        await this.load();
    }

    async load() {
        const sid = state.sid, path = state.path;
        this.loading = true;
        this.render();
        try {
            const filter = tagQuery().slice(1); // ?tag= (web/js/tags.js), without its '?'
            const first = await listPage(sid, path, null, PAGE, filter);
            let entries = first.entries, cursor = first.next;
            // A folder of up to WHOLE entries is loaded whole (any sort); a bigger one a page at a time.
            while (cursor && (first.total ?? 0) <= WHOLE) {
                const p = await listPage(sid, path, cursor, PAGE, filter);
                entries = entries.concat(p.entries);
                cursor = p.next;
            }
            if (sid !== state.sid || path !== state.path) return; // navigated away meanwhile
            this.entries = entries;
            this.cursor = cursor;
            this.total = first.total ?? entries.length;
            this.error = null;
            const have = new Set(entries.map(e => e.path));
            for (const p of [...this.selected]) if (!have.has(p)) this.selected.delete(p);
        } catch (e) {
            this.entries = [];
            this.error = e.message;
        } finally {
            this.loading = false;
        }
        this.render();
    }

    /* The next page of a folder loaded in part, once: big enough to reach row `upTo` (a jump far down
     * the scroll bar loads what it needs in one request, not page after page, up to the server's
     * PAGE_MAX a request). */
    async loadMore(upTo = 0) {
        if (!this.cursor || this.loadingMore) return;
        const sid = state.sid, path = state.path, cursor = this.cursor;
        const limit = Math.min(PAGE_MAX, Math.max(PAGE, upTo - this.entries.length + PAGE / 2));
        this.loadingMore = true;
        try {
            const p = await listPage(sid, path, cursor, limit, tagQuery().slice(1));
            if (sid !== state.sid || path !== state.path || cursor !== this.cursor) return;
            this.entries = this.entries.concat(p.entries);
            this.rows = this.entries; // the list on screen stays in the server's order until the next render
            this.cursor = p.next;
            if (p.total != null) this.total = p.total;
            this.sortedCache = null;
        } catch (e) {
            toast('The next entries could not be loaded: ' + e.message, 'error');
        } finally {
            this.loadingMore = false;
        }
        this.fillRows();
    }

    get partial() { return this.cursor !== null; }

    /* Every entry of a big folder is selected: "select all" before the folder was loaded whole,
     * or one by one after (each page loaded); either way it is handed to the server as one task. */
    get wholeSelected() { return this.allSelected || (this.total > PAGE && this.selected.size >= this.total); }

    sorted() {
        if (this.partial) return this.entries; // the server's name order: the rest is not here yet
        const { key, dir } = this.sort;
        const val = e => key === 'name' ? e.name.toLocaleLowerCase() : key === 'size' ? (e.size ?? -1)
            : (toDate(e.mtime)?.getTime() ?? 0);
        return [...this.entries].sort((a, b) => {
            if (a.type !== b.type) return a.type === 'folder' ? -1 : 1; // folders first, as everyone expects
            const x = val(a), y = val(b);
            return (x < y ? -1 : x > y ? 1 : a.name.localeCompare(b.name)) * dir;
        });
    }

    /* ------------------------------------------------------------- render --- */
    render() {
        const store = currentStore();
        const crumbs = h('ol.crumbs');
        const parts = state.path ? state.path.split('/') : [];
        const rootName = store?.name || 'Files';
        const link = (label, p, current) => h('li', current
            ? h('span', { 'aria-current': 'page' }, fileName(label))
            : h('a', { href: '#/files/' + encodeURIComponent(state.sid) + '/' + encodePath(p) }, fileName(label)));
        crumbs.append(link(rootName, '', !parts.length));
        parts.forEach((name, i) => crumbs.append(link(name, parts.slice(0, i + 1).join('/'), i === parts.length - 1)));

        const uploadBtn = button('Upload', 'upload', ev => openMenu(ev.currentTarget, [
            { label: 'Upload files…', icon: 'file', action: () => this.fileInput.click() },
            { label: 'Upload a folder…', icon: 'folder', action: () => this.dirInput.click() },
        ]), { cls: 'primary' });
        uploadBtn.setAttribute('aria-haspopup', 'menu');
        const head = h('div.view-head',
            h('nav.breadcrumbs', { 'aria-label': 'Folder path' }, crumbs),
            h('div.view-actions',
                uploadBtn,
                button('New folder', 'folderPlus', () => this.newFolder()),
                wantsGrid(this.entries) ? button(this.list ? 'Grid view' : 'List view', this.list ? 'image' : 'files',
                    () => { this.list = !this.list; this.render(); }, { dataset: { view: this.list ? 'list' : 'grid' } }) : null,
                button('Store settings', 'settings', () => storeSettings(state.sid),
                    { cls: 'icon-btn', iconOnly: true, dataset: { part: 'settings' } })),
            tagBar(state.sid, state.path, () => this.load()));

        const n = this.allSelected ? this.total : this.selected.size;
        const selBar = h('div.selection-bar', { hidden: !n, role: 'toolbar', 'aria-label': 'Selected items' },
            h('span.sel-count', this.allSelected ? `All ${Number(n).toLocaleString()} selected` : `${n} selected`),
            button('Download', 'download', () => this.download([...this.selectedEntries()])),
            button('Move', 'move', () => this.move([...this.selectedEntries()])),
            button('Tags…', 'edit', () => tagSelected(state.sid, [...this.selectedEntries()], () => this.load()), { dataset: { part: 'tags' } }),
            button('Delete', 'trash', () => this.remove([...this.selectedEntries()]), { cls: 'danger-text' }),
            button('Clear selection', 'close', () => { this.selected.clear(); this.allSelected = false; this.render(); }, { cls: 'icon-btn', iconOnly: true }));

        let body;
        if (this.error) {
            body = h('div.empty.error-state', { role: 'alert' }, icon('alert'), h('p', this.error),
                button('Try again', 'refresh', () => this.load()));
        } else if (!this.entries.length && !this.loading) {
            body = h('div.empty', icon('folder'), h('p.empty-title', 'This folder is empty'),
                h('p.muted', 'Drop files here, or use Upload.'));
        } else {
            body = wantsGrid(this.entries) && !this.list ? gridFor(state.sid, this.sorted(), e => e.type === 'folder'
                ? (location.hash = '#/files/' + encodeURIComponent(state.sid) + '/' + encodePath(e.path))
                : this.openPanel(e, 'details')) : this.table();
        }
        clear(this.el, head, selBar,
            h('div.table-wrap', { 'aria-busy': this.loading ? 'true' : 'false' }, body),
            this.fileInput, this.dirInput,
            h('div.drop-overlay', { 'aria-hidden': 'true' }, icon('upload'), h('p', 'Drop to upload into ' +
                (state.path ? baseName(state.path) : rootName))));
        applyParts(this.el);
        this.fillRows(); // a virtual list's rows at once, now that its table is in the page
    }

    table() {
        const rows = this.sorted();
        const allSel = this.allSelected || (rows.length > 0 && rows.every(e => this.selected.has(e.path)));
        const selAll = h('input', { type: 'checkbox', 'aria-label': 'Select all', checked: allSel });
        selAll.indeterminate = !allSel && this.selected.size > 0;
        selAll.addEventListener('change', () => {
            // In a folder loaded in part, "all" is the whole folder, not the rows loaded so far.
            this.allSelected = selAll.checked && this.partial;
            if (selAll.checked) rows.forEach(e => this.selected.add(e.path));
            else this.selected.clear();
            this.render();
        });
        const th = (key, label, cls) => {
            const active = this.sort.key === key && !(this.partial && key !== 'name');
            const b = h('button.sort', { type: 'button' }, label,
                active ? icon(this.sort.dir > 0 ? 'chevronDown' : 'chevron') : null);
            if (active && this.sort.dir < 0) b.classList.add('desc');
            if (this.partial && key !== 'name') {
                b.disabled = true;
                b.title = 'A folder this big is listed by name';
            }
            b.addEventListener('click', () => {
                this.sort = { key, dir: active ? -this.sort.dir : 1 };
                this.render();
                this.el.querySelector(`th[data-key="${key}"] button`)?.focus();
            });
            return h('th' + (cls ? '.' + cls : ''), {
                scope: 'col', dataset: { key },
                'aria-sort': active ? (this.sort.dir > 0 ? 'ascending' : 'descending') : 'none',
            }, b);
        };
        const tbody = h('tbody');
        this.tbody = tbody;
        this.rows = rows;
        this.virtual = this.partial || rows.length > VIRTUAL;
        this.window = null;
        if (this.virtual) {
            // until the rows near the viewport are in, one spacer stands for the whole folder: an
            // empty table would shrink the page and throw the reader back to the top
            tbody.append(this.spacer(Math.max(this.total ?? 0, rows.length)));
            requestAnimationFrame(() => this.fillRows());
        } else rows.forEach((e, i) => this.rowInto(tbody, e, i, rows));
        const table = h('table.files', { 'aria-label': 'Folder contents', 'aria-rowcount': String(this.total ?? rows.length) },
            h('thead', h('tr', h('th.col-check', { scope: 'col' }, selAll), th('name', 'Name'),
                th('size', 'Size', 'col-size'), th('mtime', 'Modified', 'col-mtime'),
                h('th.col-actions', { scope: 'col' }, h('span.sr-only', 'Actions')))),
            tbody);
        this.tableEl = table;
        return table;
    }

    rowInto(tbody, e, i, rows) {
        tbody.append(this.row(e, i, rows));
        const err = this.rowErrors.get(e.path);
        if (err) tbody.append(h('tr.row-error', h('td', { colspan: '5', role: 'alert' }, icon('alert'), err)));
    }

    spacer(n) {
        return h('tr.spacer', { 'aria-hidden': 'true' }, h('td', { colspan: '5', style: `height:${n * this.rowH}px;padding:0;border:0` }));
    }

    /* A virtual list: spacer rows stand for what is above and below the rows near the viewport,
     * so the scroll bar covers the whole folder while at most ROWS_MAX rows exist. */
    fillRows() {
        if (!this.virtual || !this.tbody?.isConnected) return;
        const rows = this.rows, count = Math.max(this.total ?? 0, rows.length);
        const top = this.tbody.getBoundingClientRect().top;
        const first = Math.max(0, Math.floor(-top / this.rowH) - OVERSCAN);
        const want = Math.min(ROWS_MAX, Math.ceil(window.innerHeight / this.rowH) + 2 * OVERSCAN);
        const start = Math.min(first, Math.max(0, count - want));
        const end = Math.min(count, start + want);
        if (end > rows.length - PAGE / 2 && this.cursor) this.loadMore(end);
        const shown = Math.min(end, rows.length);
        const key = `${start}:${shown}:${rows.length}`;
        if (this.window === key) return;
        this.window = key;
        const focused = document.activeElement?.closest?.('tr')?.dataset?.path;
        this.tbody.replaceChildren();
        if (start) this.tbody.append(this.spacer(start));
        for (let i = start; i < shown; i++) this.rowInto(this.tbody, rows[i], i, rows);
        if (count > shown) this.tbody.append(this.spacer(count - Math.max(start, shown)));
        const real = this.tbody.querySelector('tr[data-path]');
        if (real && real.offsetHeight && Math.abs(real.offsetHeight - this.rowH) > 1) {
            this.rowH = real.offsetHeight; // measured once rows exist; the next scroll uses it
            this.window = null;
        }
        if (focused) this.tbody.querySelector(`tr[data-path="${CSS.escape(focused)}"] input`)?.focus();
    }

    row(e, i, rows) {
        const cb = h('input', { type: 'checkbox', 'aria-label': 'Select ' + e.name, checked: this.selected.has(e.path) });
        cb.addEventListener('click', ev => {
            if (ev.shiftKey && this.lastIndex !== null) {
                const [a, b] = [Math.min(this.lastIndex, i), Math.max(this.lastIndex, i)];
                for (let k = a; k <= b; k++) {
                    if (cb.checked) this.selected.add(rows[k].path); else this.selected.delete(rows[k].path);
                }
            } else if (cb.checked) this.selected.add(e.path);
            else this.selected.delete(e.path);
            this.lastIndex = i;
            this.render();
            this.el.querySelector(`input[aria-label="${CSS.escape('Select ' + e.name)}"]`)?.focus();
        });
        const nameBtn = e.type === 'folder'
            ? h('a.name-link', { href: '#/files/' + encodeURIComponent(state.sid) + '/' + encodePath(e.path) }, fileName(e.name))
            : h('button.name-link', { type: 'button', onclick: () => this.openPanel(e, 'details') }, fileName(e.name));
        const more = button('Actions for ' + e.name, 'more', ev => openMenu(ev.currentTarget, [
            e.type === 'file' ? { label: 'Download', icon: 'download', action: () => this.download([e]) }
                : { label: 'Download as zip', icon: 'download', action: () => this.download([e]) },
            { label: 'Rename…', icon: 'edit', action: () => this.rename(e) },
            { label: 'Move…', icon: 'move', action: () => this.move([e]) },
            { label: 'Details', icon: 'info', action: () => this.openPanel(e, 'details') },
            partEnabled('sharing') ? { label: 'Share…', icon: 'users', action: () => import('./shares.js').then(m => m.shareDialog(state.sid, e)) } : null,
            e.type === 'file' && partEnabled('versions') ? { label: 'Versions', icon: 'history', action: () => this.openPanel(e, 'versions') } : null,
            { label: 'Delete', icon: 'trash', danger: true, action: () => this.remove([e]) },
        ]), { cls: 'icon-btn', iconOnly: true });
        more.setAttribute('aria-haspopup', 'menu');
        const tr = h('tr' + (this.selected.has(e.path) ? '.selected' : ''), { dataset: { path: e.path, type: e.type } },
            h('td.col-check', cb),
            h('td.col-name', h('div.name-cell', thumbCell(state.sid, e) || h('span.file-icon.' + fileIcon(e), icon(fileIcon(e))), nameBtn, tagChips(e, () => this.load()))),
            h('td.col-size', e.type === 'folder' ? (e.size != null ? formatBytes(e.size) : '—') : formatBytes(e.size)),
            h('td.col-mtime', formatTime(e.mtime)),
            h('td.col-actions', h('div.row-actions', more)));
        return tr;
    }

    *selectedEntries() {
        for (const e of this.entries) if (this.allSelected || this.selected.has(e.path)) yield e;
    }

    /* -------------------------------------------------------------- upload --- */
    setupDrop() {
        let depth = 0;
        this.el.addEventListener('dragenter', ev => {
            if (!ev.dataTransfer?.types?.includes('Files')) return;
            ev.preventDefault();
            depth++;
            this.el.classList.add('dragging');
        });
        this.el.addEventListener('dragover', ev => {
            if (!ev.dataTransfer?.types?.includes('Files')) return;
            ev.preventDefault();
            ev.dataTransfer.dropEffect = 'copy';
        });
        this.el.addEventListener('dragleave', () => {
            if (--depth <= 0) { depth = 0; this.el.classList.remove('dragging'); }
        });
        this.el.addEventListener('drop', async ev => {
            ev.preventDefault();
            depth = 0;
            this.el.classList.remove('dragging');
            try {
                const files = await filesFromDrop(ev.dataTransfer);
                this.startUpload(files);
            } catch (e) {
                toast('The dropped files could not be read: ' + e.message, 'error');
            }
        });
    }

    pickerChosen(input) {
        const files = [...input.files].map(f => ({ file: f, relPath: f.webkitRelativePath || f.name }));
        input.value = '';
        this.startUpload(files);
    }

    startUpload(files) {
        if (!files.length) return;
        this.ctx.uploads.add(state.sid, files.map(f => ({ file: f.file, path: join(state.path, f.relPath) })));
    }

    /* ------------------------------------------------------------- actions --- */
    async newFolder() {
        const input = h('input', { type: 'text', name: 'name', autocomplete: 'off', required: true });
        await dialog({
            title: 'New folder', body: field('Folder name', input),
            actions: [{ label: 'Cancel' }, { label: 'Create', primary: true, value: 'ok' }],
            onSubmit: async () => {
                const name = input.value.trim();
                if (!name) throw Object.assign(new Error('Give the folder a name.'), { field: 'name' });
                try {
                    await api('POST', `${S(state.sid)}/folders`, { path: join(state.path, name) });
                } catch (e) {
                    throw Object.assign(e, { field: 'name' });
                }
                toast(`Folder “${name}” created.`, 'success');
                this.load();
            },
        });
    }

    async rename(e) {
        const input = h('input', { type: 'text', name: 'name', value: e.name, autocomplete: 'off', required: true });
        await dialog({
            title: 'Rename', body: field('New name', input),
            actions: [{ label: 'Cancel' }, { label: 'Rename', primary: true, value: 'ok' }],
            onSubmit: async () => {
                const name = input.value.trim();
                if (!name) throw Object.assign(new Error('The name cannot be empty.'), { field: 'name' });
                if (name === e.name) return true;
                try {
                    await api('POST', `${S(state.sid)}/move`, { from: e.path, to: join(parentOf(e.path), name) });
                } catch (err) {
                    throw Object.assign(err, { field: 'name' });
                }
                this.selected.delete(e.path);
                toast(`Renamed to “${name}”.`, 'success');
                this.load();
            },
        });
        // Put the caret where the user expects: on the name, before the extension.
        setTimeout(() => {
            const dot = e.type === 'file' ? e.name.lastIndexOf('.') : -1;
            if (document.activeElement === input) input.setSelectionRange(0, dot > 0 ? dot : e.name.length);
        }, 0);
    }

    /* "Select all" of a folder loaded in part. Without a tag filter it is one request: the
     * server's bulk task (POST …/bulk, docs/api.md) applies `body` to every entry of the folder
     * and its progress shows in a task toast. With a tag filter on, "all" is every entry that
     * matches, which the server's task does not know: fn runs on each, a page at a time, taking
     * the first page again after each (what fn did left the folder), with the progress in a toast. */
    async forWholeFolder(verb, fn, body) {
        const sid = state.sid, path = state.path, total = this.total;
        if (!tagQuery().slice(1)) {
            const r = await api('POST', `${S(sid)}/bulk`, { ...body, folder: path, except: [] });
            this.allSelected = false;
            this.selected.clear();
            this.render();
            const { watchTask } = await import('./app.js');
            const n = Number(r.total).toLocaleString();
            watchTask(r.task, `${verb} ${n} items`, `${verb} ${n} items.`, t => {
                const res = t.result || {};
                if (res.failed) toast(`${Number(res.failed).toLocaleString()} item${res.failed === 1 ? '' : 's'} could not be handled`
                    + (res.errors?.length ? ` (${res.errors[0].name}: ${res.errors[0].error})` : '.'), 'error');
                emit('usage');
                if (state.sid === sid && state.path === path) this.load();
            });
            return;
        }
        const filter = tagQuery().slice(1); // with a tag filter on, "all" is every entry that matches
        let done = 0, failed = null, cursor = null;
        for (;;) {
            const p = await listPage(sid, path, cursor, PAGE, filter);
            let acted = 0;
            for (const e of p.entries) {
                try { await fn(e); acted++; done++; } catch (err) { failed = err; }
            }
            if (acted) cursor = null;                              // what fn did left the folder: from the top again
            else if (!p.entries.length && p.next) cursor = p.next; // a filtered page with no match: read on
            else break;
            if (acted) toast(`${verb} ${done.toLocaleString()} of ${Number(total).toLocaleString()}…`, 'info');
        }
        this.allSelected = false;
        this.selected.clear();
        if (failed) toast(`Some items could not be handled: ${failed.message}`, 'error');
        toast(`${verb} ${done.toLocaleString()} item${done === 1 ? '' : 's'}.`, 'success');
        emit('usage');
        this.load();
    }

    async move(entries) {
        if (this.wholeSelected) {
            const dest = await chooseFolder(state.sid, state.path, `Move all ${Number(this.total).toLocaleString()} items to…`, []);
            if (dest === undefined || dest === null || dest === state.path) return;
            return this.forWholeFolder('Moved', e => api('POST', `${S(state.sid)}/move`, { from: e.path, to: join(dest, e.name) }),
                { op: 'move', to: dest });
        }
        if (!entries.length) return;
        const dest = await chooseFolder(state.sid, state.path, entries.length === 1
            ? `Move “${entries[0].name}” to…` : `Move ${entries.length} items to…`, entries.map(e => e.path));
        if (dest === undefined || dest === null) return;
        let ok = 0;
        for (const e of entries) {
            try {
                await api('POST', `${S(state.sid)}/move`, { from: e.path, to: join(dest, e.name) });
                ok++;
                this.selected.delete(e.path);
                this.rowErrors.delete(e.path);
            } catch (err) {
                this.rowErrors.set(e.path, `Could not move: ${err.message}`);
            }
        }
        if (ok) toast(`Moved ${ok} item${ok === 1 ? '' : 's'} to ${dest || 'the top folder'}.`, 'success');
        this.load();
    }

    async remove(entries) {
        const toTrash = partEnabled('trash');
        if (this.wholeSelected) {
            const what = `all ${Number(this.total).toLocaleString()} items`;
            if (!await confirmDialog(toTrash ? 'Move to trash' : 'Delete permanently', toTrash
                ? `Move ${what} to the trash? You can restore from there.` : `Delete ${what}? This cannot be undone.`,
            toTrash ? 'Move to trash' : 'Delete', true)) return;
            return this.forWholeFolder('Deleted', e => api('DELETE', fileUrl(state.sid, e.path).slice('/api/v1'.length) + (e.type === 'folder' ? '?recursive=true' : '')),
                { op: 'delete' });
        }
        if (!entries.length) return;
        const what = entries.length === 1 ? `“${entries[0].name}”` : `${entries.length} items`;
        const ok = await confirmDialog(toTrash ? 'Move to trash' : 'Delete permanently',
            toTrash ? `Move ${what} to the trash? You can restore from there.`
                : `Delete ${what}? This cannot be undone.`, toTrash ? 'Move to trash' : 'Delete', true);
        if (!ok) return;
        let done = 0;
        for (const e of entries) {
            try {
                await api('DELETE', fileUrl(state.sid, e.path).slice('/api/v1'.length) + (e.type === 'folder' ? '?recursive=true' : ''));
                done++;
                this.selected.delete(e.path);
                this.rowErrors.delete(e.path);
                if (this.panelEntry?.path === e.path) this.closePanel();
            } catch (err) {
                this.rowErrors.set(e.path, `Could not delete: ${err.message}`);
            }
        }
        if (done) toast(`${done === 1 ? 'Deleted ' + (entries.length === 1 ? what : '1 item')
            : 'Deleted ' + done + ' items'}${toTrash ? ' (in the trash now)' : ''}.`, 'success');
        emit('usage');
        this.load();
    }

    download(entries) {
        // The whole of a folder loaded in part: the folder as one zip.
        if (this.allSelected) entries = [{ path: state.path, name: baseName(state.path) || 'files', type: 'folder' }];
        for (const e of entries) {
            const a = h('a', { href: fileUrl(state.sid, e.path) + '?download=true', download: e.type === 'folder' ? e.name + '.zip' : e.name, hidden: true });
            document.body.append(a);
            a.click();
            a.remove();
        }
    }

    /* --------------------------------------------------------- side panel --- */
    openPanel(e, tab) {
        this.panelEntry = e;
        this.panelTab = tab === 'versions' && !partEnabled('versions') ? 'details' : tab;
        this.panel.hidden = false;
        document.body.classList.add('panel-open');
        this.renderPanel();
        this.panel.querySelector('.panel-close')?.focus();
    }

    closePanel(refocus) {
        const was = this.panelEntry;
        this.panelEntry = null;
        this.panel.hidden = true;
        document.body.classList.remove('panel-open');
        // Back to the row the panel was opened from, so keyboard users keep their place.
        if (refocus && was) this.el.querySelector(`tr[data-path="${CSS.escape(was.path)}"] .name-link`)?.focus();
    }

    renderPanel() {
        const e = this.panelEntry;
        if (!e) return;
        const tabs = h('div.tabs', { role: 'tablist', 'aria-label': 'Panel' });
        const tab = (id, label, part) => {
            const b = h('button.tab', {
                type: 'button', role: 'tab', 'aria-selected': String(this.panelTab === id),
                dataset: part ? { part } : undefined,
            }, label);
            b.addEventListener('click', () => { this.panelTab = id; this.renderPanel(); });
            return b;
        };
        tabs.append(tab('details', 'Details'));
        if (e.type === 'file') tabs.append(tab('versions', 'Versions', 'versions'));
        const body = h('div.panel-body', { role: 'tabpanel' });
        clear(this.panel,
            h('div.panel-head', h('span.file-icon.big.' + fileIcon(e), icon(fileIcon(e))),
                h('h2.panel-title', { title: e.path }, fileName(e.name)),
                button('Close details', 'close', () => this.closePanel(), { cls: 'icon-btn panel-close', iconOnly: true })),
            tabs, body);
        applyParts(this.panel);
        if (this.panelTab === 'versions') this.renderVersions(e, body);
        else this.renderDetails(e, body);
    }

    renderDetails(e, body) {
        const r = e.raw || {};
        const rows = [
            ['Type', e.type === 'folder' ? 'Folder' : r.ctype || r.content_type || r.mime || 'File'],
            ['Size', e.size != null ? `${formatBytes(e.size)} (${Number(e.size).toLocaleString()} bytes)` : '—'],
            ['Modified', formatTime(e.mtime)],
            ['Location', '/' + (parentOf(e.path) || '')],
            typeof (r.updated_by ?? r.created_by) === 'string' ? ['Changed by', r.updated_by ?? r.created_by] : null,
            r.version ? ['Version', String(r.version)] : null,
            r.sha256 ? ['SHA-256', h('code.hash', r.sha256)] : null,
            partEnabled('tags') ? ['Tags', tagEditor(state.sid, e, () => this.load())] : null,
        ].filter(Boolean);
        clear(body, previewFor(state.sid, e), h('dl.details', rows.map(([k, v]) => [h('dt', k), h('dd', v)])),
            h('div.panel-actions',
                button(e.type === 'folder' ? 'Download as zip' : 'Download', 'download', () => this.download([e])),
                button('Rename', 'edit', () => this.rename(e)),
                button('Delete', 'trash', () => this.remove([e]), { cls: 'danger-text' })));
    }

    async renderVersions(e, body) {
        clear(body, h('p.muted', 'Loading versions…'));
        let list;
        try {
            const data = await api('GET', `${S(state.sid)}/versions/${encodePath(e.path)}`);
            list = Array.isArray(data) ? data : data?.versions || [];
        } catch (err) {
            clear(body, h('p.form-error', { role: 'alert' }, err.message));
            return;
        }
        if (!list.length) { clear(body, h('p.muted', 'This file has no earlier versions.')); return; }
        const hasFlag = list.some(v => 'current' in v);
        const newest = list.reduce((a, v) => (Number(v.version) > Number(a.version) ? v : a), list[0]);
        const ul = h('ul.versions');
        // Newest first: what a person looks for is usually the last few versions.
        for (const v of [...list].sort((a, b) => Number(b.version) - Number(a.version))) {
            const msg = h('p.field-error', { role: 'alert', hidden: true });
            const current = hasFlag ? v.current === true : v === newest;
            const restore = button('Restore', 'restore', async () => {
                msg.hidden = true;
                restore.disabled = true;
                try {
                    await api('POST', `${S(state.sid)}/versions/${encodePath(e.path)}`, { restore: v.version });
                    toast(`Restored the version of ${formatTime(v.time)}.`, 'success');
                    await this.load();
                    const fresh = this.entries.find(x => x.path === e.path);
                    if (fresh) this.panelEntry = fresh;
                    this.renderVersions(this.panelEntry, body);
                } catch (err) {
                    msg.textContent = err.message;
                    msg.hidden = false;
                    restore.disabled = false;
                }
            }, { cls: 'small' });
            restore.setAttribute('aria-label', `Restore version ${v.version} of ${formatTime(v.time)}`);
            const delBtn = button(`Delete version ${v.version}`, 'trash', async () => {
                if (!await confirmDialog('Delete version', `Delete version ${v.version} of “${e.name}” for good?`, 'Delete', true)) return;
                try {
                    await api('DELETE', `${S(state.sid)}/versions/${encodePath(e.path)}?version=${encodeURIComponent(v.version)}`);
                    this.renderVersions(e, body);
                } catch (err) { msg.textContent = err.message; msg.hidden = false; }
            }, { cls: 'icon-btn', iconOnly: true });
            ul.append(h('li.version' + (current ? '.current' : ''), { dataset: { version: String(v.version) } },
                h('div.version-main',
                    h('strong', formatTime(v.time)), current ? h('span.badge', 'current') : null,
                    h('div.muted', [`v${v.version}`, formatBytes(v.size), v.author_name ?? (typeof v.author === 'string' ? v.author : null),
                        v.restored_from ? `restored from v${v.restored_from}` : null].filter(Boolean).join(' · '))),
                h('div.version-actions',
                    h('a.btn.small', {
                        href: `/api/v1${S(state.sid)}/versions/${encodePath(e.path)}?version=${encodeURIComponent(v.version)}`,
                        download: e.name, 'aria-label': `Download version ${v.version}`,
                    }, icon('download'), h('span.label', 'Download')),
                    current ? null : restore,
                    current ? null : delBtn),
                msg));
        }
        clear(body, ul);
    }
}

/* ========================================================= folder chooser === */
/* Resolves with the chosen folder path ("" = top), or undefined when dismissed. Folders in
 * `exclude` (what is being moved) cannot be entered: a folder cannot move into itself. */
export function chooseFolder(sid, start, title, exclude = []) {
    let cur = start;
    const list = h('ul.chooser', { 'aria-label': 'Folders' });
    const where = h('nav.breadcrumbs.small', { 'aria-label': 'Chooser path' });
    const status = h('p.muted', { 'aria-live': 'polite' });
    async function show(p) {
        cur = p;
        const parts = p ? p.split('/') : [];
        const ol = h('ol.crumbs');
        const crumb = (label, target, last) => h('li', last ? h('span', { 'aria-current': 'location' }, label)
            : h('button.link', { type: 'button', onclick: () => show(target) }, label));
        ol.append(crumb(currentStore()?.name || 'Top', '', !parts.length));
        parts.forEach((n, i) => ol.append(crumb(n, parts.slice(0, i + 1).join('/'), i === parts.length - 1)));
        clear(where, ol);
        clear(list);
        status.textContent = 'Loading…';
        try {
            const folders = (await listFolder(sid, p)).filter(e => e.type === 'folder');
            status.textContent = folders.length ? '' : 'No folders here.';
            for (const f of folders) {
                const blocked = exclude.includes(f.path);
                list.append(h('li', h('button.chooser-item', {
                    type: 'button', disabled: blocked, onclick: () => show(f.path),
                    title: blocked ? 'A folder cannot move into itself' : null,
                }, icon('folder'), fileName(f.name, 'bdi'), icon('chevron'))));
            }
        } catch (e) {
            status.textContent = e.message;
        }
    }
    show(start);
    return dialog({
        title, body: h('div', where, list, status), wide: true,
        actions: [{ label: 'Cancel' }, { label: 'Move here', primary: true, value: 'ok' }],
        onSubmit: () => cur,
    }).then(v => (v === undefined ? undefined : cur));
}

/* ============================================================= trash view === */
export class TrashView {
    constructor() {
        this.el = h('section.view.trash-view', { 'aria-label': 'Trash' });
        this.items = [];
        this.rowErrors = new Map();
    }

    async show(sid) {
        state.sid = String(sid);
        clear(this.el, h('p.muted', 'Loading the trash…'));
        try {
            const data = await api('GET', `${S(sid)}/trash`);
            this.items = Array.isArray(data) ? data : data?.items || data?.entries || [];
            this.counts = data && !Array.isArray(data) ? data : null;
            this.render();
        } catch (e) {
            clear(this.el, h('div.empty.error-state', { role: 'alert' }, icon('alert'), h('p', e.message)));
        }
    }

    render() {
        const sid = state.sid;
        const quotaNote = this.counts && 'counts_toward_quota' in this.counts
            ? (this.counts.counts_toward_quota ? 'Items in the trash count toward your quota.' : 'Items in the trash do not count toward your quota.')
            : 'Items in the trash still count toward your quota until they are deleted permanently.';
        const head = h('div.view-head', h('h1.view-title', icon('trash'), 'Trash'),
            h('div.view-actions', button('Empty trash', 'trash', () => this.empty(), { cls: 'danger-text' })));
        if (!this.items.length) {
            clear(this.el, head, h('div.empty', icon('trash'), h('p.empty-title', 'The trash is empty')));
            return;
        }
        const tbody = h('tbody');
        for (const it of this.items) {
            const path = it.path || it.original_path || it.name || '';
            const restore = button('Restore', 'restore', () => this.restore(it), { cls: 'small' });
            restore.setAttribute('aria-label', 'Restore ' + path);
            const del = button('Delete permanently', 'close', () => this.purge(it), { cls: 'icon-btn', iconOnly: true });
            del.setAttribute('aria-label', 'Delete ' + path + ' permanently');
            tbody.append(h('tr', { dataset: { id: String(it.id), path } },
                h('td.col-name', h('div.name-cell', h('span.file-icon' + (it.type === 'folder' ? '.folder' : ''), icon(it.type === 'folder' ? 'folder' : 'file')),
                    Object.assign(fileName(path), { title: path }))),
                h('td.col-size', formatBytes(it.size)),
                h('td.col-mtime', formatTime(it.deleted ?? it.time ?? it.deleted_at)),
                h('td.col-by', it.expires ? formatTime(it.expires) : ''),
                h('td.col-actions', h('div.row-actions', restore, del))));
            const err = this.rowErrors.get(String(it.id));
            if (err) tbody.append(h('tr.row-error', h('td', { colspan: '5', role: 'alert' }, icon('alert'), err)));
        }
        clear(this.el, head, h('p.muted.note', quotaNote), h('div.table-wrap', h('table.files.trash', { 'aria-label': 'Deleted items' },
            h('thead', h('tr', h('th', { scope: 'col' }, 'Original location'), h('th.col-size', { scope: 'col' }, 'Size'),
                h('th.col-mtime', { scope: 'col' }, 'Deleted'), h('th.col-by', { scope: 'col' }, 'Purged'),
                h('th.col-actions', { scope: 'col' }, h('span.sr-only', 'Actions')))),
            tbody)));
        void sid;
    }

    async restore(it) {
        try {
            const r = await api('POST', `${S(state.sid)}/trash/${encodeURIComponent(it.id)}/restore`);
            const where = r?.path || it.path;
            toast(r?.renamed ? `Restored as /${where} (the original name was taken).` : `Restored to /${where}.`, 'success');
            emit('usage');
            this.show(state.sid);
        } catch (e) {
            this.rowErrors.set(String(it.id), 'Could not restore: ' + e.message);
            this.render();
        }
    }

    async purge(it) {
        if (!await confirmDialog('Delete permanently', `Delete “${it.path || it.name}” for good? This cannot be undone.`, 'Delete', true)) return;
        try {
            await api('DELETE', `${S(state.sid)}/trash/${encodeURIComponent(it.id)}`);
            emit('usage');
            this.show(state.sid);
        } catch (e) {
            this.rowErrors.set(String(it.id), 'Could not delete: ' + e.message);
            this.render();
        }
    }

    async empty() {
        if (!await confirmDialog('Empty trash', 'Delete everything in the trash for good? This cannot be undone.', 'Empty trash', true)) return;
        try {
            await api('DELETE', `${S(state.sid)}/trash`);
            toast('The trash is empty.', 'success');
            emit('usage');
            this.show(state.sid);
        } catch (e) {
            toast('Could not empty the trash: ' + e.message, 'error');
        }
    }
}

/* ========================================================== store settings === */
/* GET .../config answers {"store","settings":{effective values},"overridden":[keys]}. The form
 * has a labelled field per known setting (limits, file types, versioning, trash) and a generic
 * one for any other; only changed settings are PATCHed ("versioning" as its whole object), and
 * a refusal names the field and appears under it. Above: the store's usage against its limit. */
const SETTINGS = {
    max_bytes: { label: 'Store size limit (bytes)', hint: 'Current files and the trash; 0 = no limit.', bytes: true },
    max_files: { label: 'Most files', hint: '0 = no limit.' },
    max_file_size: { label: 'Largest file (bytes)', hint: '0 = no limit.', bytes: true },
    allowed_extensions: { label: 'Only these extensions', hint: 'Comma-separated, without the dot; empty allows all.' },
    blocked_extensions: { label: 'Never these extensions', hint: 'Comma-separated, without the dot.' },
    allowed_types: { label: 'Only these types', hint: 'MIME types, image/* allowed; empty allows all.' },
    blocked_types: { label: 'Never these types', hint: 'MIME types.' },
    'versioning.enabled': { label: 'Keep old versions of files' },
    'versioning.max_versions': { label: 'Versions kept per file', hint: '1 to 1000.' },
    'versioning.max_age_days': { label: 'Keep versions for (days)', hint: '0 = no age limit.' },
    trash_retention_days: { label: 'Keep deleted files in the trash for (days)', hint: '0 to 36500.' },
};

/* A usage bar: parts (current files, old versions, trash) as segments when the answer has them. */
export function usageBar(u, label) {
    // null (or absent) is "no limit"; 0 is a quota that lets nothing in, not "no limit".
    const used = u.bytes ?? u.used ?? 0, limit = u.quota_bytes ?? u.quota ?? null;
    const quota = limit !== null, pct = !quota ? 0 : limit > 0 ? Math.min(100, Math.round((used / limit) * 100)) : 100;
    const parts = ['current', 'versions', 'trash'].filter(k => typeof u[k] === 'number');
    const names = { current: 'files', versions: 'old versions', trash: 'trash' };
    const bar = quota ? h('div.progress.usage-bar' + (pct >= 95 ? '.failed' : pct >= 80 ? '.warn' : ''), {
        role: 'progressbar', 'aria-label': label, 'aria-valuenow': String(pct), 'aria-valuemin': '0', 'aria-valuemax': '100',
        'aria-valuetext': `${formatBytes(used)} of ${formatBytes(limit)} (${pct}%)`,
    }, parts.length ? parts.map(k => h('div.progress-fill.part-' + k, {
        style: `width:${limit > 0 ? Math.min(100, (u[k] / limit) * 100) : 0}%`, title: `${names[k]}: ${formatBytes(u[k])}`,
    })) : h('div.progress-fill', { style: `width:${pct}%` })) : null;
    return h('div.usage-detail',
        h('div.usage-label', h('span', quota ? `${formatBytes(used)} of ${formatBytes(limit)} used` : `${formatBytes(used)} used (no limit)`)),
        bar,
        parts.length ? h('ul.usage-parts', parts.map(k => h('li', { dataset: { part: k } }, h('span.swatch.part-' + k), `${names[k]}: ${formatBytes(u[k])}`))) : null,
        u.files != null ? h('div.muted.small', `${u.files} files`) : null);
}

/* Where a store's chunks live, in words: "the local disk", "dav1", "2 copies of a, b, c",
 * "erasure 4+2 of a, b, c, d, e, f", each said encrypted or not (docs/storage.md "Backends"). */
export function describePlacement(p) {
    const of = (p?.of || []).join(', ');
    const where = p?.copies ? `${p.copies} copies of ${of}`
        : p?.erasure ? `erasure ${p.erasure.data}+${p.erasure.parity} of ${of}`
        : !p?.backend || p.backend === 'local' ? 'the local disk' : p.backend;
    return `${where}, ${p?.encrypt ? 'encrypted' : 'not encrypted'}`;
}

/* The settings dialog's "where the files are kept": the placement, a migration under way, and
 * for an administrator the move to another backend (PATCH .../config {"placement"}: a task). */
function placementSection(sid, p, storeName) {
    const box = h('div.store-placement', { dataset: { part: 'placement' } }, h('h3', 'Where the files are kept'),
        h('p.placement-now', { dataset: { backend: p.backend || '' } }, describePlacement(p)),
        p.migrating ? h('p.muted.placement-moving', `Being moved here from ${describePlacement(p.migrating.from)} (task ${p.migrating.task}).`) : null);
    if (!isAdmin()) return box;
    const target = h('select', { name: 'backend' }, h('option', { value: '' }, 'Loading…'));
    const enc = h('input', { type: 'checkbox', name: 'encrypt', id: 'move-encrypt', checked: !!p.encrypt });
    const msg = h('p.field-error', { role: 'alert', hidden: true });
    const move = button('Move the store', 'move', async () => {
        msg.hidden = true;
        move.disabled = true;
        try {
            const placement = { backend: target.value, encrypt: enc.checked };
            const r = await api('PATCH', `${S(sid)}/config`, { placement });
            if (!r?.task) {
                toast(`${storeName} is on ${describePlacement(placement)} already.`, 'info');
                return;
            }
            clear(box.querySelector('.placement-now'), describePlacement(placement));
            box.querySelector('.placement-now').after(h('p.muted.placement-moving', `Being moved here from ${describePlacement(p)} (task ${r.task}).`));
            const { watchTask } = await import('./app.js');
            watchTask(r.task, `Moving ${storeName}`, `${storeName} was moved to ${describePlacement(placement)}.`, t => {
                box.querySelector('.placement-moving')?.remove();
                if (t.state === 'cancelled') clear(box.querySelector('.placement-now'), describePlacement(p)); // it went back
            });
        } catch (e) {
            msg.textContent = 'Could not move the store: ' + e.message;
            msg.hidden = false;
        } finally {
            move.disabled = false;
        }
    });
    const sync = () => { enc.disabled = target.value === 'local'; if (enc.disabled) enc.checked = false; };
    target.addEventListener('change', sync);
    api('GET', '/admin/backends').then(list => {
        clear(target, list.map(b => h('option', { value: b.name, selected: b.name === (p.backend || 'local') },
            `${b.name === 'local' ? 'local disk' : b.name}${b.type && b.type !== 'local' ? ' (' + b.type + ')' : ''}${b.state === 'down' ? ', down' : ''}`)));
        sync();
    }).catch(e => { msg.textContent = 'Backends: ' + e.message; msg.hidden = false; });
    box.append(h('div.inline-form.placement-move', field('Move to', target), h('div.field.check', enc, h('label', { for: enc.id }, 'Encrypt')), move),
        h('p.hint', 'Files stay readable and writable while they move; the old copies go once all are copied.'), msg);
    return box;
}

export async function storeSettings(sid) {
    let cfg;
    try {
        cfg = await api('GET', `${S(sid)}/config`);
    } catch (e) {
        toast('Could not load the settings: ' + e.message, 'error');
        return;
    }
    const settings = cfg?.settings ?? cfg ?? {};
    const overridden = new Set(cfg?.overridden || []);
    // Flatten one level ("versioning.enabled") so each value has its own input.
    const flat = {};
    for (const [k, v] of Object.entries(settings)) {
        if (k === 'store') continue;
        if (v && typeof v === 'object' && !Array.isArray(v)) for (const [k2, v2] of Object.entries(v)) flat[k + '.' + k2] = v2;
        else flat[k] = v;
    }
    const inputs = {};
    const label = k => SETTINGS[k]?.label || k.replace(/[._]/g, ' ').replace(/^./, c => c.toUpperCase());
    const order = Object.keys(SETTINGS);
    const rank = k => (order.includes(k) ? order.indexOf(k) : order.length);
    const fields = Object.entries(flat).sort((a, b) => rank(a[0]) - rank(b[0])).map(([k, v]) => {
        const mark = overridden.has(k.split('.')[0]) ? null : h('span.muted.small', ' (default)');
        let input;
        if (typeof v === 'boolean') {
            input = h('input', { type: 'checkbox', name: k, checked: v });
            input.id = 'cfg-' + k.replace('.', '-');
            inputs[k] = input;
            return h('div.field.check', input, h('label', { for: input.id }, label(k), mark));
        }
        if (typeof v === 'number') input = h('input', { type: 'number', name: k, value: String(v), min: '0' });
        else if (Array.isArray(v)) input = h('input', { type: 'text', name: k, value: v.join(', '), placeholder: 'comma-separated' });
        else input = h('input', { type: 'text', name: k, value: v ?? '' });
        inputs[k] = input;
        const hint = [SETTINGS[k]?.hint, SETTINGS[k]?.bytes && v ? 'Now ' + formatBytes(v) + '.' : null].filter(Boolean).join(' ');
        const f = field(label(k), input, hint || null);
        if (mark) f.querySelector('label').append(mark);
        return f;
    });
    const usage = h('div.store-usage', { dataset: { part: 'usage' } });
    if (partEnabled('usage')) {
        api('GET', `${S(sid)}/usage`).then(u => clear(usage, h('h3', 'Usage'), usageBar(u, 'Store usage')))
            .catch(e => clear(usage, h('p.field-error', 'Usage: ' + e.message)));
    } else usage.hidden = true;
    const placement = cfg?.placement ? placementSection(sid, cfg.placement, currentStore()?.name || 'The store') : null;
    await dialog({
        title: `Settings of ${currentStore()?.name || 'this store'}`, wide: true,
        body: [usage, placement, h('div.settings-grid', fields.length ? fields : h('p.muted', 'This store has no settings.'))].filter(Boolean),
        actions: [{ label: 'Cancel' }, { label: 'Save', primary: true, value: 'ok' }],
        onSubmit: async () => {
            const patch = {};
            for (const [k, orig] of Object.entries(flat)) {
                const input = inputs[k];
                let v;
                if (typeof orig === 'boolean') v = input.checked;
                else if (typeof orig === 'number') {
                    v = Number(input.value);
                    if (input.value === '' || !Number.isFinite(v)) throw Object.assign(new Error('Enter a number.'), { field: k });
                } else if (Array.isArray(orig)) v = input.value.split(',').map(s => s.trim()).filter(Boolean);
                else v = input.value;
                if (JSON.stringify(v) === JSON.stringify(orig)) continue;
                const [top, sub] = k.split('.');
                if (sub) patch[top] = { ...(patch[top] || settings[top]), [sub]: v };
                else patch[top] = v;
            }
            if (!Object.keys(patch).length) return true;
            try {
                await api('PATCH', `${S(sid)}/config`, patch);
            } catch (e) {
                // The server names the field in `field`, or at least at the start of its sentence.
                const f = e.field || Object.keys(inputs).sort((a, b) => b.length - a.length)
                    .find(k => e.message.includes(k) || e.message.includes(k.split('.').pop()) && Object.hasOwn(patch, k.split('.')[0]));
                throw Object.assign(e, { field: f });
            }
            toast('Settings saved.', 'success');
            emit('usage');
        },
    });
}
