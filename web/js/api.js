/*
 * web/js/api.js — the one place the page talks to /api/v1.
 *
 * The page logs in with {"session": true}: the server keeps the session in an HttpOnly cookie
 * (scripts never see it) and hands back a CSRF token, kept here and in sessionStorage (it survives
 * a reload of this tab, not a new tab), and sent as X-CSRF-Token on every unsafe method.
 * Every failure becomes an ApiError whose message is the server's problem+json `detail` (a
 * sentence for a person) or a plain sentence for a network failure; a 401 from any call also
 * tells the app to show the login screen.
 */

const CSRF_KEY = 'mbyte.csrf';
let csrf = sessionStorage.getItem(CSRF_KEY) || '';
let onUnauthorized = () => {};

export class ApiError extends Error {
    constructor(message, status = 0, code = 'network', field = undefined) {
        super(message);
        this.status = status;
        this.code = code;
        this.field = field;
    }
}

export function setUnauthorizedHandler(fn) { onUnauthorized = fn; }
export function csrfToken() { return csrf; }
export function setCsrf(token) {
    csrf = token || '';
    if (csrf) sessionStorage.setItem(CSRF_KEY, csrf);
    else sessionStorage.removeItem(CSRF_KEY);
}

export const UNSAFE = new Set(['POST', 'PUT', 'PATCH', 'DELETE']);

/* Headers every request of the page carries (also used by the uploader's XHRs). */
export function authHeaders(method, extra = {}) {
    const hd = { ...extra };
    if (UNSAFE.has(method) && csrf) hd['X-CSRF-Token'] = csrf;
    return hd;
}

/* Turn a non-2xx answer into an ApiError with the server's sentence. */
export async function errorFrom(resp, fallback) {
    let detail = '', code = '', field;
    try {
        const ct = resp.headers.get('Content-Type') || '';
        if (ct.includes('json')) {
            const p = await resp.json();
            detail = p.detail || p.title || '';
            code = p.code || '';
            field = p.field;
        }
    } catch { /* not JSON: fall through to the status sentence */ }
    if (!detail) detail = fallback || statusSentence(resp.status);
    return new ApiError(detail, resp.status, code || String(resp.status), field);
}

export function statusSentence(status) {
    return ({
        400: 'The server did not accept the request.', 401: 'Please sign in again.',
        403: 'You are not allowed to do that.', 404: 'It is not there (any more).',
        409: 'That conflicts with something that exists.', 413: 'That is too large.',
        429: 'Too many attempts; wait a moment and try again.', 507: 'There is not enough space left.',
        502: 'The server is not reachable right now.', 503: 'The server is busy; try again shortly.',
    })[status] || `The server answered ${status}.`;
}

/*
 * api(method, path, body?, opts?) -> parsed JSON (or null for an empty answer, or the Response
 * when opts.raw). path is below /api/v1 ("/stores").
 */
export async function api(method, path, body, opts = {}) {
    const headers = authHeaders(method, opts.headers);
    let payload = body;
    if (body !== undefined && !(body instanceof Blob) && typeof body !== 'string') {
        headers['Content-Type'] = 'application/json';
        payload = JSON.stringify(body);
    }
    let resp;
    try {
        resp = await fetch('/api/v1' + path, {
            method, headers, body: payload, credentials: 'same-origin', signal: opts.signal,
        });
    } catch (e) {
        if (e.name === 'AbortError') throw e;
        throw new ApiError('The server cannot be reached. Check your network connection and try again.');
    }
    if (resp.status === 401 && !opts.noAuthRedirect) {
        const err = await errorFrom(resp);
        onUnauthorized(err);
        throw err;
    }
    if (!resp.ok) throw await errorFrom(resp);
    if (opts.raw) return resp;
    const text = await resp.text();
    if (!text) return null;
    try { return JSON.parse(text); } catch { return text; }
}

/* A store path ("a/b c/d.txt") as URL segments, each encoded. */
export function encodePath(path) {
    return path.split('/').filter(Boolean).map(encodeURIComponent).join('/');
}

export function fileUrl(sid, path) {
    return `/api/v1/stores/${encodeURIComponent(sid)}/files/${encodePath(path)}`;
}
