/*
 * web/js/uploads.js — the upload queue and its panel: a progress bar per file and one overall,
 * speed and time left, cancel per file or all, and the reason when a file fails (the server's
 * sentence, on that file's row). Files go through tus.js (resumable) two at a time.
 */
import { h, icon, button, formatBytes, formatDuration, clear, fileName } from './ui.js';
import { Upload } from './tus.js';
import { api, ApiError } from './api.js';

const PARALLEL = 2;

class Item {
    constructor(file, store, path) {
        this.file = file;
        this.store = store;
        this.path = path;
        this.sent = 0;
        this.state = 'queued'; // queued | uploading | done | failed | cancelled
        this.message = '';
        this.upload = null;
    }
}

export class Uploads {
    constructor({ onFileDone }) {
        this.items = [];
        this.running = 0;
        this.onFileDone = onFileDone || (() => {});
        this.samples = [];
        this.collapsed = false;
        this.el = h('section.uploads', { 'aria-label': 'Uploads', hidden: true });
        document.body.append(this.el);
        this.timer = null;
    }

    /* entries: [{file, path}] where path is the destination in the store (folders included). */
    async add(store, entries) {
        if (!entries.length) return;
        // Folders of a folder upload are created first (parents before children), so files can
        // go through any door (tus or PUT) whether or not it creates parents itself.
        const folders = new Set();
        for (const e of entries) {
            const parts = e.path.split('/');
            for (let i = 1; i < parts.length; i++) folders.add(parts.slice(0, i).join('/'));
        }
        for (const f of [...folders].sort((a, b) => a.split('/').length - b.split('/').length)) {
            try {
                await api('POST', `/stores/${encodeURIComponent(store)}/folders`, { path: f });
            } catch (e) {
                if (e.status !== 409) {
                    const it = new Item({ name: f + '/', size: 0 }, store, f);
                    it.state = 'failed';
                    it.message = e.message;
                    this.items.push(it);
                }
            }
        }
        for (const e of entries) this.items.push(new Item(e.file, store, e.path));
        this.el.hidden = false;
        this.collapsed = false;
        this.pump();
        this.render();
        if (!this.timer) this.timer = setInterval(() => this.render(), 500);
    }

    pump() {
        while (this.running < PARALLEL) {
            const next = this.items.find(i => i.state === 'queued');
            if (!next) break;
            this.run(next);
        }
        if (!this.running && !this.items.some(i => i.state === 'queued')) {
            clearInterval(this.timer);
            this.timer = null;
            this.samples = [];
            // All went well: fold the list away so it does not cover the files; a failure stays open.
            if (!this.items.some(i => i.state === 'failed')) {
                setTimeout(() => {
                    if (!this.timer && !this.items.some(i => i.state === 'failed')) { this.collapsed = true; this.render(); }
                }, 2500);
            }
        }
    }

    async run(it) {
        this.running++;
        it.state = 'uploading';
        it.upload = new Upload(it.file, {
            store: it.store, path: it.path,
            onProgress: n => { it.sent = n; },
            onStatus: s => { it.message = s; this.render(); },
        });
        try {
            await it.upload.start();
            it.sent = it.file.size;
            it.state = 'done';
            it.message = it.upload.resumed ? 'Resumed and finished' : '';
            this.onFileDone(it.store, it.path);
        } catch (e) {
            if (e.name === 'AbortError') {
                it.state = 'cancelled';
            } else {
                it.state = 'failed';
                it.message = e instanceof ApiError ? e.message : 'The upload failed: ' + e.message;
            }
        }
        this.running--;
        this.pump();
        this.render();
    }

    cancel(it) {
        if (it.state === 'queued') it.state = 'cancelled';
        else if (it.state === 'uploading') it.upload.cancel();
        this.render();
    }

    cancelAll() { this.items.forEach(it => this.cancel(it)); }

    clearFinished() {
        this.items = this.items.filter(i => i.state === 'queued' || i.state === 'uploading');
        if (!this.items.length) this.el.hidden = true;
        this.render();
    }

    totals() {
        const live = this.items.filter(i => i.state !== 'cancelled' && i.file.size !== undefined);
        const total = live.reduce((a, i) => a + i.file.size, 0);
        const sent = live.reduce((a, i) => a + Math.min(i.sent, i.file.size), 0);
        const now = performance.now();
        this.samples.push([now, sent]);
        while (this.samples.length > 2 && now - this.samples[0][0] > 5000) this.samples.shift();
        const [t0, s0] = this.samples[0];
        const speed = now - t0 > 300 ? (sent - s0) / ((now - t0) / 1000) : 0;
        return { total, sent, speed, left: speed > 0 ? (total - sent) / speed : Infinity };
    }

    render() {
        // The panel is rebuilt twice a second: keep keyboard focus on the same control.
        const focused = this.el.contains(document.activeElement) ? document.activeElement.getAttribute('aria-label') ||
            document.activeElement.textContent : null;
        this.paint();
        if (focused) {
            const again = [...this.el.querySelectorAll('button')].find(b =>
                (b.getAttribute('aria-label') || b.textContent) === focused);
            again?.focus();
        }
    }

    paint() {
        const t = this.totals();
        const active = this.items.filter(i => i.state === 'uploading' || i.state === 'queued').length;
        const failed = this.items.filter(i => i.state === 'failed').length;
        const pct = t.total ? Math.floor((t.sent / t.total) * 100) : (active ? 0 : 100);
        const title = active ? `Uploading ${active} file${active === 1 ? '' : 's'}`
            : failed ? `${failed} upload${failed === 1 ? '' : 's'} failed` : 'Uploads complete';
        const list = h('ul.upload-list', this.items.map(it => this.row(it)));
        list.hidden = this.collapsed;
        clear(this.el,
            h('div.upload-head',
                h('div.upload-title', h('strong', title),
                    h('span.muted', active ? `${formatBytes(t.sent)} of ${formatBytes(t.total)} · ` +
                        `${t.speed ? formatBytes(t.speed) + '/s' : '…'} · ${isFinite(t.left) ? formatDuration(t.left) + ' left' : ''}`
                        : `${formatBytes(t.total)}`)),
                h('div.upload-tools',
                    active ? button('Cancel all', null, () => this.cancelAll(), { cls: 'small' }) :
                        button('Clear', null, () => this.clearFinished(), { cls: 'small' }),
                    button(this.collapsed ? 'Expand' : 'Collapse', this.collapsed ? 'chevronDown' : 'chevron',
                        () => { this.collapsed = !this.collapsed; this.render(); }, { cls: 'icon-btn', iconOnly: true }))),
            bar(pct, 'Overall upload progress', active ? '' : failed ? 'failed' : 'done'),
            list);
    }

    row(it) {
        const pct = it.file.size ? Math.floor((Math.min(it.sent, it.file.size) / it.file.size) * 100)
            : it.state === 'done' ? 100 : 0;
        const status = it.state === 'done' ? (it.message || 'Done') : it.state === 'failed' ? it.message
            : it.state === 'cancelled' ? 'Cancelled' : it.state === 'queued' ? 'Waiting'
            : it.message || `${pct}% · ${formatBytes(it.sent)} of ${formatBytes(it.file.size)}`;
        return h('li.upload-item.' + it.state, { dataset: { path: it.path } },
            icon(it.state === 'done' ? 'check' : it.state === 'failed' ? 'alert' : 'file'),
            h('div.upload-body',
                h('div.upload-name', { title: it.path }, fileName(it.path)),
                bar(pct, it.path, it.state),
                h('div.upload-status' + (it.state === 'failed' ? '.error' : ''),
                    { role: it.state === 'failed' ? 'alert' : null }, status)),
            (it.state === 'uploading' || it.state === 'queued')
                ? button('Cancel upload of ' + it.path, 'close', () => this.cancel(it), { cls: 'icon-btn', iconOnly: true })
                : null);
    }
}

function bar(pct, label, state) {
    return h('div.progress' + (state ? '.' + state : ''), {
        role: 'progressbar', 'aria-label': label, 'aria-valuemin': '0', 'aria-valuemax': '100',
        'aria-valuenow': String(pct),
    }, h('div.progress-fill', { style: `width:${pct}%` }));
}

/* Files from a drop, with folders walked (webkitGetAsEntry): [{file, relPath}]. */
export async function filesFromDrop(dataTransfer) {
    const out = [];
    const entries = [...dataTransfer.items].map(i => i.webkitGetAsEntry?.()).filter(Boolean);
    if (!entries.length) return [...dataTransfer.files].map(f => ({ file: f, relPath: f.name }));
    async function walk(entry, prefix) {
        if (entry.isFile) {
            const file = await new Promise((res, rej) => entry.file(res, rej));
            out.push({ file, relPath: prefix + file.name });
        } else if (entry.isDirectory) {
            const reader = entry.createReader();
            let batch;
            do {
                batch = await new Promise((res, rej) => reader.readEntries(res, rej));
                for (const e of batch) await walk(e, prefix + entry.name + '/');
            } while (batch.length);
        }
    }
    for (const e of entries) await walk(e, '');
    return out;
}
