/*
 * web/js/ui.js — small DOM helpers every view uses: element builder, icons, toasts, modal
 * dialogs (native <dialog>: the rest of the page is inert while one is open, so focus stays in
 * it; Escape closes it), menus, and the formatting of sizes and times.
 *
 * No framework: views build their DOM with h() and re-render the parts that change. The page's
 * CSP forbids inline scripts and handlers, so every listener is attached here in code.
 */

/* h('button.primary', {onclick, type:'button'}, 'Text', child...) -> HTMLElement */
export function h(tag, attrs, ...children) {
    const [name, ...classes] = tag.split('.');
    const el = document.createElement(name || 'div');
    if (classes.length) el.className = classes.join(' ');
    if (attrs && (typeof attrs !== 'object' || attrs instanceof Node || Array.isArray(attrs))) {
        children.unshift(attrs);
        attrs = null;
    }
    for (const [k, v] of Object.entries(attrs || {})) {
        if (v === undefined || v === null || v === false) continue;
        if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
        else if (k === 'class') el.className += (el.className ? ' ' : '') + v;
        else if (k === 'dataset') Object.assign(el.dataset, v);
        else if (k === 'text') el.textContent = v;
        else if (k in el && typeof v !== 'string') el[k] = v;
        else el.setAttribute(k, v === true ? '' : v);
    }
    append(el, children);
    return el;
}

function append(el, children) {
    for (const c of children) {
        if (c === null || c === undefined || c === false) continue;
        if (Array.isArray(c)) append(el, c);
        else el.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
}

/* Characters that show nothing (or only move text around) and so can make a name look like
 * another: zero-width spaces and joiners, bidi marks and controls, the BOM, fillers. The server
 * refuses the bidi controls and the BOM in new names (docs/storage.md "Names"); the others are
 * legitimate in some scripts, and names made before the rule may still hold any of them. */
const INVISIBLE = /[\u00AD\u034F\u061C\u115F\u1160\u17B4\u17B5\u180E\u200B-\u200F\u2028-\u202E\u2060-\u206F\u3164\uFEFF\uFFA0\uFFF9-\uFFFB]/u;
const INVISIBLE_NAMES = {
    0x00AD: 'SOFT HYPHEN', 0x061C: 'ARABIC LETTER MARK', 0x200B: 'ZERO WIDTH SPACE', 0x200C: 'ZERO WIDTH NON-JOINER',
    0x200D: 'ZERO WIDTH JOINER', 0x200E: 'LEFT-TO-RIGHT MARK', 0x200F: 'RIGHT-TO-LEFT MARK', 0x202A: 'LEFT-TO-RIGHT EMBEDDING',
    0x202B: 'RIGHT-TO-LEFT EMBEDDING', 0x202C: 'POP DIRECTIONAL FORMATTING', 0x202D: 'LEFT-TO-RIGHT OVERRIDE',
    0x202E: 'RIGHT-TO-LEFT OVERRIDE', 0x2060: 'WORD JOINER', 0x2066: 'LEFT-TO-RIGHT ISOLATE', 0x2067: 'RIGHT-TO-LEFT ISOLATE',
    0x2068: 'FIRST STRONG ISOLATE', 0x2069: 'POP DIRECTIONAL ISOLATE', 0xFEFF: 'ZERO WIDTH NO-BREAK SPACE (BOM)',
};
// A joiner or non-joiner between two visible non-ASCII characters is doing its job (Persian, Indic
// scripts, emoji sequences such as the family emoji): left alone. Anywhere else (next to ASCII, at
// either end, beside another invisible character) it can only disguise a name: marked.
const visibleNonAscii = c => c !== undefined && c > '\u007f' && !INVISIBLE.test(c);
const joining = (cs, i) => (cs[i] === '\u200C' || cs[i] === '\u200D') && visibleNonAscii(cs[i - 1]) && visibleNonAscii(cs[i + 1]);

/* A file or folder name as the page shows it: a <bdi> (its direction is its own, so a right-to-left
 * name cannot reorder what stands around it, and nothing outside reorders it), each invisible
 * character replaced by a visible marker that says what it is (title and text). */
export function fileName(name, tag = 'bdi.fname') {
    const el = h(tag);
    const cs = [...String(name)];
    let run = '';
    cs.forEach((c, i) => {
        if (!INVISIBLE.test(c) || joining(cs, i)) { run += c; return; }
        if (run) el.append(run);
        run = '';
        const cp = c.codePointAt(0).toString(16).toUpperCase().padStart(4, '0');
        const what = 'U+' + cp + (INVISIBLE_NAMES[c.codePointAt(0)] ? ' ' + INVISIBLE_NAMES[c.codePointAt(0)] : '');
        el.append(h('span.invisible-char', { title: what, 'aria-label': what }, cp));
    });
    if (run) el.append(run);
    return el;
}

export function clear(el, ...children) {
    el.replaceChildren();
    append(el, children);
    return el;
}

/* ------------------------------------------------------------------ icons --- */
/* Inline SVG paths (24x24, stroke icons): no icon font, nothing fetched. */
const ICONS = {
    folder: 'M3 7a2 2 0 0 1 2-2h4l2 2h8a2 2 0 0 1 2 2v8a2 2 0 0 1-2 2H5a2 2 0 0 1-2-2z',
    file: 'M6 3h8l5 5v11a2 2 0 0 1-2 2H6a2 2 0 0 1-2-2V5a2 2 0 0 1 2-2zM14 3v5h5',
    image: 'M5 4h14a1 1 0 0 1 1 1v14a1 1 0 0 1-1 1H5a1 1 0 0 1-1-1V5a1 1 0 0 1 1-1zM4 16l5-5 4 4 3-3 4 4M15 9.5a1.5 1.5 0 1 0 0-.01',
    text: 'M6 3h8l5 5v11a2 2 0 0 1-2 2H6a2 2 0 0 1-2-2V5a2 2 0 0 1 2-2zM14 3v5h5M8 13h8M8 17h6',
    archive: 'M6 3h12a1 1 0 0 1 1 1v16a1 1 0 0 1-1 1H6a1 1 0 0 1-1-1V4a1 1 0 0 1 1-1zM11 5h2M11 8h2M11 11h2M10 14h4v4h-4z',
    media: 'M6 3h8l5 5v11a2 2 0 0 1-2 2H6a2 2 0 0 1-2-2V5a2 2 0 0 1 2-2zM10 11v6l5-3z',
    upload: 'M12 16V4M7 9l5-5 5 5M5 20h14',
    download: 'M12 4v12M7 11l5 5 5-5M5 20h14',
    plus: 'M12 5v14M5 12h14',
    folderPlus: 'M3 7a2 2 0 0 1 2-2h4l2 2h8a2 2 0 0 1 2 2v8a2 2 0 0 1-2 2H5a2 2 0 0 1-2-2zM12 10v6M9 13h6',
    trash: 'M4 7h16M9 7V4h6v3M6 7l1 13h10l1-13M10 11v6M14 11v6',
    edit: 'M4 20h4L19 9l-4-4L4 16zM14 6l4 4',
    move: 'M3 7a2 2 0 0 1 2-2h4l2 2h8a2 2 0 0 1 2 2v8a2 2 0 0 1-2 2H5a2 2 0 0 1-2-2zM10 13h6M13 10l3 3-3 3',
    more: 'M12 5.5a1 1 0 1 0 0-.01M12 12a1 1 0 1 0 0-.01M12 18.5a1 1 0 1 0 0-.01',
    bell: 'M6 16V11a6 6 0 0 1 12 0v5l2 2H4zM10 20a2 2 0 0 0 4 0',
    user: 'M12 12a4 4 0 1 0 0-8 4 4 0 0 0 0 8zM4 21a8 8 0 0 1 16 0',
    close: 'M6 6l12 12M18 6L6 18',
    menu: 'M4 6h16M4 12h16M4 18h16',
    chevron: 'M9 6l6 6-6 6',
    chevronDown: 'M6 9l6 6 6-6',
    history: 'M3 12a9 9 0 1 0 3-6.7M3 4v5h5M12 7v5l3 3',
    info: 'M12 22a10 10 0 1 0 0-20 10 10 0 0 0 0 20zM12 11v6M12 7.5v.01',
    settings: 'M12 15a3 3 0 1 0 0-6 3 3 0 0 0 0 6zM19 12a7 7 0 0 0-.1-1.2l2-1.6-2-3.4-2.4 1a7 7 0 0 0-2-1.2L14 3h-4l-.5 2.6a7 7 0 0 0-2 1.2l-2.4-1-2 3.4 2 1.6A7 7 0 0 0 5 12a7 7 0 0 0 .1 1.2l-2 1.6 2 3.4 2.4-1a7 7 0 0 0 2 1.2L10 21h4l.5-2.6a7 7 0 0 0 2-1.2l2.4 1 2-3.4-2-1.6A7 7 0 0 0 19 12z',
    shield: 'M12 3l8 3v6c0 5-3.5 8-8 9-4.5-1-8-4-8-9V6z',
    files: 'M3 7a2 2 0 0 1 2-2h4l2 2h8a2 2 0 0 1 2 2v8a2 2 0 0 1-2 2H5a2 2 0 0 1-2-2z',
    restore: 'M3 12a9 9 0 1 0 3-6.7M3 4v5h5',
    logout: 'M15 4h4v16h-4M10 8l-4 4 4 4M6 12h10',
    check: 'M5 12l5 5 9-10',
    alert: 'M12 3l10 18H2zM12 10v5M12 18v.01',
    store: 'M4 5h16v4H4zM4 9h16v10H4zM9 13h6',
    server: 'M4 4h16v6H4zM4 14h16v6H4zM8 7h.01M8 17h.01',
    refresh: 'M20 11a8 8 0 1 0-2.3 5.7M20 4v7h-7',
    power: 'M12 3v9M6.3 6.3a8 8 0 1 0 11.4 0',
    tasks: 'M9 6h11M9 12h11M9 18h11M4 6l1 1 2-2M4 12l1 1 2-2M4 18l1 1 2-2',
    users: 'M9 11a4 4 0 1 0 0-8 4 4 0 0 0 0 8zM2 21a7 7 0 0 1 14 0M16 3.5a4 4 0 0 1 0 7.5M22 21a7 7 0 0 0-4-6.3',
    pie: 'M12 3v9h9A9 9 0 1 1 12 3zM15 3.5A9 9 0 0 1 20.5 9H15z',
    puzzle: 'M10 4a2 2 0 1 1 4 0v2h4v4h-2a2 2 0 1 0 0 4h2v4h-4v-2a2 2 0 1 0-4 0v2H6v-4h2a2 2 0 1 0 0-4H6V6h4z',
};

export function icon(name, label) {
    const ns = 'http://www.w3.org/2000/svg';
    const svg = document.createElementNS(ns, 'svg');
    svg.setAttribute('viewBox', '0 0 24 24');
    svg.setAttribute('class', 'icon icon-' + name);
    if (label) {
        svg.setAttribute('role', 'img');
        svg.setAttribute('aria-label', label);
    } else {
        svg.setAttribute('aria-hidden', 'true');
    }
    const p = document.createElementNS(ns, 'path');
    p.setAttribute('d', ICONS[name] || ICONS.file);
    svg.append(p);
    return svg;
}

/* Which icon a file name gets. */
export function fileIcon(entry) {
    if (entry.type === 'folder') return 'folder';
    const ext = (entry.name.split('.').pop() || '').toLowerCase();
    if (['png', 'jpg', 'jpeg', 'gif', 'webp', 'svg', 'bmp', 'heic', 'tif', 'tiff'].includes(ext)) return 'image';
    if (['txt', 'md', 'pdf', 'doc', 'docx', 'odt', 'rtf', 'csv', 'json', 'yaml', 'yml', 'xml', 'html', 'c', 'h',
        'js', 'py', 'log'].includes(ext)) return 'text';
    if (['zip', 'tar', 'gz', 'tgz', 'xz', 'bz2', '7z', 'rar', 'zst'].includes(ext)) return 'archive';
    if (['mp3', 'wav', 'flac', 'ogg', 'mp4', 'mkv', 'mov', 'webm', 'avi', 'm4a'].includes(ext)) return 'media';
    return 'file';
}

/* A button with an icon; label is both the visible text (unless iconOnly) and the accessible name. */
export function button(label, iconName, onclick, opts = {}) {
    const b = h('button', {
        type: 'button', onclick, title: opts.iconOnly ? label : opts.title,
        'aria-label': opts.iconOnly ? label : null, dataset: opts.dataset,
    });
    if (iconName) b.append(icon(iconName));
    if (!opts.iconOnly) b.append(h('span.label', label));
    const cls = (opts.cls || '').split(/[ .]+/).filter(Boolean);
    if (!cls.includes('icon-btn')) cls.unshift('btn');
    b.classList.add(...cls);
    return b;
}

/* --------------------------------------------------------------- formats --- */
export function formatBytes(n) {
    if (n === undefined || n === null || isNaN(n)) return '—';
    const units = ['B', 'KB', 'MB', 'GB', 'TB', 'PB'];
    let i = 0;
    let v = Number(n);
    while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
    return (i === 0 ? v : v.toFixed(v < 10 ? 1 : 0)) + ' ' + units[i];
}

export function formatDuration(s) {
    if (!isFinite(s) || s < 0) return '—';
    s = Math.round(s);
    if (s < 60) return s + ' s';
    if (s < 3600) return Math.floor(s / 60) + ' min ' + (s % 60) + ' s';
    return Math.floor(s / 3600) + ' h ' + Math.floor((s % 3600) / 60) + ' min';
}

/* The API gives times as Unix seconds (or ms, or ISO strings from some modules): one parser. */
export function toDate(t) {
    if (t === undefined || t === null || t === '') return null;
    if (typeof t === 'number') return new Date(t < 1e11 ? t * 1000 : t);
    const d = new Date(t);
    return isNaN(d) ? null : d;
}

export function formatTime(t) {
    const d = toDate(t);
    if (!d) return '—';
    const now = new Date();
    const sameDay = d.toDateString() === now.toDateString();
    return sameDay ? d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' })
        : d.toLocaleDateString([], { year: 'numeric', month: 'short', day: 'numeric' }) + ' ' +
          d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
}

/* ----------------------------------------------------------------- toasts --- */
let toastHost;
export function toast(message, kind = 'info', opts = {}) {
    if (!toastHost) {
        toastHost = h('div.toasts', { role: 'region', 'aria-label': 'Notifications' });
        document.body.append(toastHost);
    }
    const t = h('div.toast.toast-' + kind, { role: kind === 'error' ? 'alert' : 'status' },
        icon(kind === 'error' ? 'alert' : kind === 'success' ? 'check' : 'info'),
        h('div.toast-text', opts.title ? h('strong', opts.title) : null, h('span', message)));
    const close = button('Dismiss', 'close', () => t.remove(), { cls: 'icon-btn', iconOnly: true });
    t.append(close);
    toastHost.append(t);
    // Three at most: older news makes way (task progress toasts stay).
    const plain = [...toastHost.querySelectorAll('.toast:not(.toast-task)')];
    plain.slice(0, Math.max(0, plain.length - 3)).forEach(x => x.remove());
    setTimeout(() => t.remove(), opts.timeout || (kind === 'error' ? 10000 : 5000));
    return t;
}

/* ---------------------------------------------------------------- dialogs --- */
/*
 * dialog({title, body, actions:[{label, primary, danger, value}], onSubmit}) -> Promise of the
 * chosen value (undefined when dismissed). onSubmit(value, api) may return false or throw to keep
 * the dialog open (api.error(msg, field) shows the reason next to the field).
 */
export function dialog({ title, body, actions = [], onSubmit, wide, initialFocus }) {
    return new Promise(resolve => {
        const titleId = 'dlg-' + Math.random().toString(36).slice(2);
        const errBox = h('p.form-error', { role: 'alert', hidden: true });
        const form = h('form.dialog-form', { method: 'dialog', novalidate: true });
        const footer = h('div.dialog-actions');
        const dlg = h('dialog.dialog' + (wide ? '.wide' : ''), { 'aria-labelledby': titleId },
            form);
        const head = h('div.dialog-head', h('h2', { id: titleId }, title),
            button('Close', 'close', () => finish(undefined), { cls: 'icon-btn', iconOnly: true }));
        form.append(head, h('div.dialog-body', body, errBox), footer);
        let pressed = null;
        for (const a of actions) {
            const b = h('button.btn' + (a.primary ? '.primary' : '') + (a.danger ? '.danger' : ''),
                { type: a.value === undefined ? 'button' : 'submit', value: a.value ?? '' }, a.label);
            if (a.value === undefined) b.addEventListener('click', () => finish(undefined));
            else b.addEventListener('click', () => { pressed = a.value; });
            footer.append(b);
        }
        const api = {
            error(msg, field) {
                form.querySelectorAll('.field-error').forEach(e => e.remove());
                form.querySelectorAll('[aria-invalid]').forEach(e => e.removeAttribute('aria-invalid'));
                errBox.hidden = true;
                if (!msg) return;
                const input = field && form.querySelector(`[name="${field}"]`);
                if (input) {
                    const id = titleId + '-' + field + '-err';
                    input.setAttribute('aria-invalid', 'true');
                    input.setAttribute('aria-describedby', id);
                    input.insertAdjacentElement('afterend', h('p.field-error', { id, role: 'alert' }, msg));
                    input.focus();
                } else {
                    errBox.textContent = msg;
                    errBox.hidden = false;
                }
            },
            busy(on) { footer.querySelectorAll('button').forEach(b => { b.disabled = on; }); },
            form, dialog: dlg, close: v => finish(v),
        };
        let done = false;
        function finish(v) {
            if (done) return;
            done = true;
            dlg.close();
            dlg.remove();
            resolve(v);
        }
        form.addEventListener('submit', async ev => {
            ev.preventDefault();
            const value = pressed ?? actions.find(a => a.primary)?.value ?? true;
            pressed = null;
            if (!onSubmit) return finish(value);
            api.error(null);
            api.busy(true);
            try {
                const r = await onSubmit(value, api);
                if (r !== false) finish(r === undefined || r === true ? value : r);
            } catch (e) {
                api.error(e.message || String(e), e.field);
            } finally {
                if (!done) api.busy(false);
            }
        });
        dlg.addEventListener('cancel', ev => { ev.preventDefault(); finish(undefined); });
        document.body.append(dlg);
        dlg.showModal();
        const f = initialFocus ? form.querySelector(initialFocus)
            : form.querySelector('.dialog-body input, .dialog-body select, .dialog-body textarea') ||
              footer.querySelector('.primary');
        if (f) { f.focus(); if (f.select && f.type === 'text') f.select(); }
    });
}

export function confirmDialog(title, message, label = 'OK', danger = false) {
    return dialog({
        title, body: h('p', message),
        actions: [{ label: 'Cancel' }, { label, primary: !danger, danger, value: 'ok' }],
    }).then(v => v === 'ok');
}

/* A labelled form field: returns the wrapper; the input is wrapper.input. */
export function field(label, input, hint) {
    const id = 'f-' + Math.random().toString(36).slice(2);
    input.id = id;
    const w = h('div.field', h('label', { for: id }, label), input, hint ? h('p.hint', hint) : null);
    w.input = input;
    return w;
}

/* ------------------------------------------------------------------ menus --- */
/* A popup menu anchored at a button; arrow keys move, Escape closes and returns focus. */
export function openMenu(anchor, items) {
    document.querySelectorAll('.menu').forEach(m => m.remove());
    const menu = h('div.menu', { role: 'menu' });
    for (const it of items) {
        if (!it) continue;
        const b = h('button.menu-item' + (it.danger ? '.danger' : ''), { type: 'button', role: 'menuitem' },
            it.icon ? icon(it.icon) : null, h('span', it.label));
        b.addEventListener('click', () => { close(); it.action(); });
        menu.append(b);
    }
    const r = anchor.getBoundingClientRect();
    menu.style.top = (r.bottom + window.scrollY + 4) + 'px';
    document.body.append(menu);
    const right = Math.max(8, window.innerWidth - r.right);
    menu.style.right = right + 'px';
    anchor.setAttribute('aria-expanded', 'true');
    const buttons = [...menu.querySelectorAll('button')];
    buttons[0]?.focus();
    function close(refocus) {
        menu.remove();
        anchor.setAttribute('aria-expanded', 'false');
        document.removeEventListener('mousedown', outside, true);
        if (refocus) anchor.focus();
    }
    function outside(ev) { if (!menu.contains(ev.target) && ev.target !== anchor) close(); }
    document.addEventListener('mousedown', outside, true);
    menu.addEventListener('keydown', ev => {
        const i = buttons.indexOf(document.activeElement);
        if (ev.key === 'Escape') { ev.preventDefault(); close(true); }
        else if (ev.key === 'ArrowDown') { ev.preventDefault(); buttons[(i + 1) % buttons.length].focus(); }
        else if (ev.key === 'ArrowUp') { ev.preventDefault(); buttons[(i - 1 + buttons.length) % buttons.length].focus(); }
        else if (ev.key === 'Tab') close();
    });
    return menu;
}
