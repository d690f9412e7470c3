/*
 * web/js/tus.js — a small tus 1.0 client (core + creation + termination, checksum when the
 * server offers sha256 or sha1 and the page runs in a secure context), and a plain-PUT fallback
 * for servers without /api/v1/uploads.
 *
 * An upload is POST /api/v1/uploads (Upload-Length, Upload-Metadata with store, path, filename,
 * filetype) -> Location; then PATCHes of CHUNK bytes at Upload-Offset. A broken connection is
 * retried with backoff after a HEAD that tells where the server stands. The upload URL is kept in
 * localStorage under the store, path, and the file's name, size and mtime, so that picking the
 * same file again after a reload resumes instead of starting over. Cancel aborts the PATCH in
 * flight and DELETEs the upload (termination).
 */
import { authHeaders, errorFrom, ApiError, fileUrl } from './api.js';

export const CHUNK = 8 * 1024 * 1024;
const TUS = { 'Tus-Resumable': '1.0.0' };
const STORE_KEY = 'mbyte.tus.';
const RETRIES = [1000, 2000, 4000, 8000, 15000, 30000, 30000, 30000];

/* What the server offers, asked once per page (OPTIONS is public in tus). */
let caps;
export async function tusCapabilities(force) {
    if (caps && !force) return caps;
    try {
        const r = await fetch('/api/v1/uploads', { method: 'OPTIONS', headers: TUS, credentials: 'same-origin' });
        if (!r.ok && r.status !== 204) throw new Error('no tus');
        const ext = (r.headers.get('Tus-Extension') || '').split(',').map(s => s.trim());
        const algos = (r.headers.get('Tus-Checksum-Algorithm') || '').split(',').map(s => s.trim().toLowerCase());
        caps = {
            tus: (r.headers.get('Tus-Version') || r.headers.get('Tus-Resumable') || '').includes('1.0.0'),
            termination: ext.includes('termination'), checksum: ext.includes('checksum') ? algos : [],
            maxSize: Number(r.headers.get('Tus-Max-Size')) || 0,
        };
    } catch {
        caps = { tus: false };
    }
    return caps;
}
export function resetCapabilities() { caps = undefined; }

function b64(s) {
    const bytes = new TextEncoder().encode(s);
    let bin = '';
    for (const b of bytes) bin += String.fromCharCode(b);
    return btoa(bin);
}

function keyFor(sid, path, file) {
    return STORE_KEY + [sid, path, file.name, file.size, file.lastModified].join('\u0000');
}

/* One XHR as a promise (fetch has no upload progress). Resolves with the XHR whatever the
 * status; rejects only on a network failure or abort. */
function xhr(method, url, headers, body, onProgress, track) {
    return new Promise((resolve, reject) => {
        const x = new XMLHttpRequest();
        x.open(method, url);
        x.withCredentials = true;
        for (const [k, v] of Object.entries(headers)) x.setRequestHeader(k, v);
        if (onProgress) x.upload.onprogress = e => onProgress(e.loaded);
        x.onload = () => resolve(x);
        x.onerror = () => reject(new ApiError('The connection to the server broke.'));
        x.onabort = () => reject(Object.assign(new Error('cancelled'), { name: 'AbortError' }));
        if (track) track(x);
        x.send(body);
    });
}

async function xhrError(x) {
    const resp = new Response(x.response || x.responseText || '', {
        status: x.status, headers: { 'Content-Type': x.getResponseHeader('Content-Type') || '' },
    });
    return errorFrom(resp);
}

async function checksumHeader(blob, algos) {
    if (!algos?.length || !globalThis.crypto?.subtle) return null;
    const algo = algos.includes('sha256') ? ['sha256', 'SHA-256'] : algos.includes('sha1') ? ['sha1', 'SHA-1'] : null;
    if (!algo) return null;
    const digest = new Uint8Array(await crypto.subtle.digest(algo[1], await blob.arrayBuffer()));
    let bin = '';
    for (const b of digest) bin += String.fromCharCode(b);
    return algo[0] + ' ' + btoa(bin);
}

/*
 * new Upload(file, {store, path, onProgress(sentBytes), onStatus(text)}); await up.start();
 * up.cancel(). start() resolves when the server has every byte and rejects with ApiError (its
 * message is for a person) or an AbortError after cancel().
 */
export class Upload {
    constructor(file, { store, path, onProgress, onStatus }) {
        this.file = file;
        this.store = store;
        this.path = path;
        this.onProgress = onProgress || (() => {});
        this.onStatus = onStatus || (() => {});
        this.key = keyFor(store, path, file);
        this.url = null;
        this.offset = 0;
        this.cancelled = false;
        this.current = null;
        this.resumed = false;
    }

    async start() {
        const c = await tusCapabilities();
        // An empty file has nothing to resume: one PUT creates it.
        if (!c.tus || this.file.size === 0) return this.putWhole();
        if (c.maxSize && this.file.size > c.maxSize)
            throw new ApiError(`The file is larger than the server accepts (${c.maxSize} bytes).`, 413, 'too_large');
        this.caps = c;
        const saved = localStorage.getItem(this.key);
        if (saved) {
            const off = await this.head(saved).catch(() => null);
            if (off !== null && off <= this.file.size) {
                this.url = saved;
                this.offset = off;
                this.resumed = off > 0;
                this.onProgress(off);
            } else {
                localStorage.removeItem(this.key);
            }
        }
        if (!this.url) await this.create();
        let attempt = 0;
        while (this.offset < this.file.size) {
            if (this.cancelled) throw abortError();
            try {
                await this.patch();
                attempt = 0;
            } catch (e) {
                if (e.name === 'AbortError' || this.cancelled) throw abortError();
                // Broken connection or a refusal about the offset: ask where the server stands.
                const retriable = e.code === 'network' || e.status === 409 || e.status >= 500 && e.status !== 507;
                if (!retriable || attempt >= RETRIES.length) throw e;
                this.onStatus(`Connection lost; retrying in ${Math.round(RETRIES[attempt] / 1000)} s…`);
                await sleep(RETRIES[attempt++]);
                if (this.cancelled) throw abortError();
                const off = await this.head(this.url).catch(() => null);
                if (off === null) continue; // still down: back off again
                this.offset = off;
                this.onProgress(off);
                this.onStatus('');
            }
        }
        localStorage.removeItem(this.key);
        return { path: this.path, size: this.file.size };
    }

    async head(url) {
        const r = await fetch(url, { method: 'HEAD', headers: { ...TUS }, credentials: 'same-origin', cache: 'no-store' });
        if (r.status === 404 || r.status === 410 || r.status === 403) return null;
        if (!r.ok) throw new ApiError(`The server answered ${r.status} while resuming.`, r.status);
        const off = Number(r.headers.get('Upload-Offset'));
        return Number.isFinite(off) ? off : null;
    }

    async create() {
        const meta = [['store', String(this.store)], ['path', this.path], ['filename', this.file.name],
            ['filetype', this.file.type || 'application/octet-stream']]
            .map(([k, v]) => k + ' ' + b64(v)).join(',');
        const x = await xhr('POST', '/api/v1/uploads', authHeaders('POST', {
            ...TUS, 'Upload-Length': String(this.file.size), 'Upload-Metadata': meta,
        }), null, null, t => { this.current = t; });
        if (x.status !== 201) throw await xhrError(x);
        const loc = x.getResponseHeader('Location');
        if (!loc) throw new ApiError('The server created the upload but did not say where it is.');
        this.url = new URL(loc, location.href).href;
        this.offset = Number(x.getResponseHeader('Upload-Offset')) || 0;
        localStorage.setItem(this.key, this.url);
    }

    async patch() {
        const end = Math.min(this.offset + CHUNK, this.file.size);
        const blob = this.file.slice(this.offset, end);
        const hd = authHeaders('PATCH', {
            ...TUS, 'Upload-Offset': String(this.offset), 'Content-Type': 'application/offset+octet-stream',
        });
        const sum = await checksumHeader(blob, this.caps.checksum);
        if (sum) hd['Upload-Checksum'] = sum;
        const base = this.offset;
        const x = await xhr('PATCH', this.url, hd, blob, n => this.onProgress(base + n), t => { this.current = t; });
        this.current = null;
        if (x.status !== 204 && x.status !== 200) {
            const err = await xhrError(x);
            if (x.status === 404 || x.status === 410) localStorage.removeItem(this.key);
            throw err;
        }
        const off = Number(x.getResponseHeader('Upload-Offset'));
        this.offset = Number.isFinite(off) && x.getResponseHeader('Upload-Offset') !== null ? off : end;
        this.onProgress(this.offset);
    }

    /* No tus on this server: one PUT, progress from the XHR. Not resumable. */
    async putWhole() {
        const x = await xhr('PUT', fileUrl(this.store, this.path) + '?parents=true',
            authHeaders('PUT', { 'Content-Type': this.file.type || 'application/octet-stream' }),
            this.file, n => this.onProgress(n), t => { this.current = t; });
        this.current = null;
        if (x.status !== 200 && x.status !== 201) throw await xhrError(x);
        this.onProgress(this.file.size);
        try { return JSON.parse(x.responseText); } catch { return { path: this.path }; }
    }

    async cancel() {
        this.cancelled = true;
        if (this.current) this.current.abort();
        localStorage.removeItem(this.key);
        if (this.url && this.caps?.termination !== false) {
            await fetch(this.url, { method: 'DELETE', headers: authHeaders('DELETE', TUS), credentials: 'same-origin' })
                .catch(() => {});
        }
    }
}

function abortError() { return Object.assign(new Error('cancelled'), { name: 'AbortError' }); }
function sleep(ms) { return new Promise(r => setTimeout(r, ms)); }
