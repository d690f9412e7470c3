/*
 * web/js/thumbs.js — thumbnails on the page (module `thumbnails`, docs/thumbnails.md): a small
 * picture in each file row, a grid view for folders of pictures, and a preview at the top of the
 * side panel. Each one first draws the blurred ThumbHash the listing carries ("thumb": {"state",
 * "hash"}), then the thumbnail once the server has it; while the server answers a placeholder
 * (X-Thumbnail: placeholder, state pending) it asks again a few times.
 *
 * files.js calls thumbCell, previewFor and gridFor; nothing here runs when the module is off.
 */
import { encodePath } from './api.js';
import { h } from './ui.js';
import { moduleActive } from './modules.js';

export const thumbsOn = () => moduleActive('thumbnails');

const thumbUrl = (sid, path, size) =>
    `/api/v1/stores/${encodeURIComponent(sid)}/thumbnails/${encodePath(path)}?size=${size}`;

/* ---------------------------------------------------------------- ThumbHash --- */
/* The decoder of the published algorithm (evanw.github.io/thumbhash): the hash's DCT factors back
 * into an RGBA picture of at most 32 px. */
export function thumbHashToRGBA(hash) {
    const { PI, min, max, cos, round } = Math;
    const h24 = hash[0] | (hash[1] << 8) | (hash[2] << 16), h16 = hash[3] | (hash[4] << 8);
    const lDc = (h24 & 63) / 63, pDc = ((h24 >> 6) & 63) / 31.5 - 1, qDc = ((h24 >> 12) & 63) / 31.5 - 1;
    const lScale = ((h24 >> 18) & 31) / 31, hasAlpha = h24 >> 23;
    const pScale = ((h16 >> 3) & 63) / 63, qScale = ((h16 >> 9) & 63) / 63, landscape = h16 >> 15;
    const lx = max(3, landscape ? (hasAlpha ? 5 : 7) : h16 & 7);
    const ly = max(3, landscape ? h16 & 7 : (hasAlpha ? 5 : 7));
    const aDc = hasAlpha ? (hash[5] & 15) / 15 : 1, aScale = (hash[5] >> 4) / 15;
    const start = hasAlpha ? 6 : 5;
    let idx = 0;
    const channel = (nx, ny, scale) => {
        const ac = [];
        for (let cy = 0; cy < ny; cy++)
            for (let cx = cy ? 0 : 1; cx * ny < nx * (ny - cy); cx++, idx++)
                ac.push((((hash[start + (idx >> 1)] >> ((idx & 1) << 2)) & 15) / 7.5 - 1) * scale);
        return ac;
    };
    const lAc = channel(lx, ly, lScale), pAc = channel(3, 3, pScale * 1.25), qAc = channel(3, 3, qScale * 1.25);
    const aAc = hasAlpha && channel(5, 5, aScale);
    const ratio = thumbHashAspect(hash);
    const w = round(ratio > 1 ? 32 : 32 * ratio), ht = round(ratio > 1 ? 32 / ratio : 32);
    const rgba = new Uint8ClampedArray(w * ht * 4), fx = [], fy = [];
    for (let y = 0, i = 0; y < ht; y++) {
        for (let x = 0; x < w; x++, i += 4) {
            let l = lDc, p = pDc, q = qDc, a = aDc;
            for (let cx = 0, n = max(lx, hasAlpha ? 5 : 3); cx < n; cx++) fx[cx] = cos(PI / w * (x + 0.5) * cx);
            for (let cy = 0, n = max(ly, hasAlpha ? 5 : 3); cy < n; cy++) fy[cy] = cos(PI / ht * (y + 0.5) * cy);
            for (let cy = 0, j = 0; cy < ly; cy++)
                for (let cx = cy ? 0 : 1, f2 = fy[cy] * 2; cx * ly < lx * (ly - cy); cx++, j++) l += lAc[j] * fx[cx] * f2;
            for (let cy = 0, j = 0; cy < 3; cy++)
                for (let cx = cy ? 0 : 1, f2 = fy[cy] * 2; cx < 3 - cy; cx++, j++) {
                    const f = fx[cx] * f2;
                    p += pAc[j] * f;
                    q += qAc[j] * f;
                }
            if (hasAlpha)
                for (let cy = 0, j = 0; cy < 5; cy++)
                    for (let cx = cy ? 0 : 1, f2 = fy[cy] * 2; cx < 5 - cy; cx++, j++) a += aAc[j] * fx[cx] * f2;
            const b = l - 2 / 3 * p, r = (3 * l - b + q) / 2, g = r - q;
            rgba[i] = max(0, 255 * min(1, r));
            rgba[i + 1] = max(0, 255 * min(1, g));
            rgba[i + 2] = max(0, 255 * min(1, b));
            rgba[i + 3] = max(0, 255 * min(1, a));
        }
    }
    return { w, h: ht, rgba };
}

export function thumbHashAspect(hash) {
    const hasAlpha = hash[2] & 0x80, landscape = hash[4] & 0x80;
    const lx = landscape ? (hasAlpha ? 5 : 7) : hash[3] & 7;
    const ly = landscape ? hash[3] & 7 : (hasAlpha ? 5 : 7);
    return lx / ly;
}

const hashUrls = new Map(); // base64 -> data: URL (a folder redraws often)

/* The blurred picture of a listing's hash as a data: URL, or null. */
export function hashDataUrl(b64) {
    if (!b64) return null;
    if (hashUrls.has(b64)) return hashUrls.get(b64);
    let url = null;
    try {
        const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
        if (bytes.length >= 5) {
            const { w, h: ht, rgba } = thumbHashToRGBA(bytes);
            const c = document.createElement('canvas');
            c.width = w;
            c.height = ht;
            c.getContext('2d').putImageData(new ImageData(rgba, w, ht), 0, 0);
            url = c.toDataURL();
        }
    } catch { url = null; }
    hashUrls.set(b64, url);
    return url;
}

/* ------------------------------------------------------------- the pictures --- */

/* An <img> that shows the hash, then the thumbnail; a pending one is asked for again. */
function thumbImg(sid, e, size, cls) {
    const t = e.raw?.thumb || {};
    const blur = hashDataUrl(t.hash);
    const img = h('img' + cls, { alt: '', loading: 'lazy', decoding: 'async', dataset: { thumbState: t.state || 'pending' } });
    if (blur) {
        img.style.backgroundImage = `url("${blur}")`;
        if (size === 1024) { // the preview keeps its shape until the picture comes
            img.style.aspectRatio = String(thumbHashAspect(Uint8Array.from(atob(t.hash), c => c.charCodeAt(0))));
            img.style.width = '100%';
        }
        // once the picture is there the hash goes (it would show around a contained or transparent one)
        img.addEventListener('load', () => {
            if (img.dataset.thumbState !== 'ready') return;
            img.style.backgroundImage = img.style.width = img.style.aspectRatio = '';
        });
    }
    let tries = 0;
    const load = async () => {
        try {
            const r = await fetch(thumbUrl(sid, e.path, size), { credentials: 'same-origin' });
            if (!r.ok) return;
            const state = r.headers.get('X-Thumbnail') === 'ready' ? 'ready' : r.headers.get('X-Thumbnail-State') || 'none';
            img.dataset.thumbState = state;
            if (state === 'ready' || !blur) { // a placeholder only when there is no hash to show
                const old = img.src;
                img.src = URL.createObjectURL(await r.blob());
                if (old.startsWith('blob:')) URL.revokeObjectURL(old);
            }
            if (state === 'pending' && ++tries < 15 && img.isConnected !== false)
                setTimeout(load, Math.min(8000, 500 * 2 ** tries));
        } catch { /* the row keeps its hash or icon */ }
    };
    load();
    return img;
}

/* The small picture of a file row, or null (folders, module off, a type without one). */
export function thumbCell(sid, e) {
    return hasThumb(e) ? thumbImg(sid, e, 64, '.thumb-small') : null;
}

/* Ready, or pending for a type that gets one (a pending archive keeps its icon). */
function hasThumb(e) {
    const t = e.raw?.thumb;
    if (!thumbsOn() || e.type !== 'file' || !t || t.state === 'none') return false;
    const ct = e.raw.ctype || '';
    return t.state === 'ready' || /^(image\/|text\/|application\/pdf)/.test(ct) && ct !== 'image/svg+xml';
}

/* The preview at the top of the side panel: the 1024 px picture (images, PDF pages, text). */
export function previewFor(sid, e) {
    if (!hasThumb(e)) return null;
    return h('figure.thumb-preview', thumbImg(sid, e, 1024, '.thumb-big'));
}

/* A folder where most files are pictures with thumbnails is shown as a grid. */
export function wantsGrid(entries) {
    if (!thumbsOn()) return false;
    const files = entries.filter(e => e.type === 'file');
    const pictures = files.filter(e => hasThumb(e) && (e.raw.ctype || '').startsWith('image/'));
    return files.length >= 2 && pictures.length * 3 >= files.length * 2;
}

/* The grid: one tile per entry; `open(e)` is what a click does (the panel, or the folder). */
export function gridFor(sid, entries, open) {
    const grid = h('ul.thumb-grid', { 'aria-label': 'Folder contents as pictures' });
    for (const e of entries) {
        const pic = hasThumb(e)
            ? thumbImg(sid, e, 256, '.thumb-tile') : h('span.thumb-tile.thumb-none', e.type === 'folder' ? '📁' : '📄');
        const b = h('button.thumb-item', { type: 'button', title: e.name, dataset: { path: e.path } }, pic,
            h('span.thumb-name', e.name));
        b.addEventListener('click', () => open(e));
        grid.append(h('li', b));
    }
    return grid;
}

/* Styles live here so the module's part of the page is one file. */
const css = `
img.thumb-small{width:28px;height:28px;object-fit:cover;border-radius:4px;background-size:cover;flex:none}
figure.thumb-preview{margin:0 0 12px;text-align:center}
img.thumb-big{max-width:100%;max-height:50vh;border-radius:6px;background-size:cover;min-height:64px}
ul.thumb-grid{list-style:none;margin:0;padding:8px;display:grid;grid-template-columns:repeat(auto-fill,minmax(150px,1fr));gap:12px}
button.thumb-item{display:flex;flex-direction:column;align-items:center;gap:6px;width:100%;padding:6px;border:1px solid transparent;border-radius:8px;background:none;cursor:pointer;font:inherit;color:inherit}
button.thumb-item:hover,button.thumb-item:focus-visible{border-color:currentColor}
.thumb-tile{width:140px;height:140px;object-fit:contain;background-size:cover;background-position:center;border-radius:6px}
.thumb-none{display:flex;align-items:center;justify-content:center;font-size:48px}
.thumb-name{max-width:140px;overflow:hidden;text-overflow:ellipsis;white-space:nowrap;font-size:.85em}
`;
if (typeof document !== 'undefined' && !document.getElementById('thumbs-css'))
    document.head.append(h('style', { id: 'thumbs-css' }, css));
