/*
 * web/js/search.js — the search box of the top bar (module search, docs/search.md): results as
 * you type (debounced, the previous request aborted), snippets with the matched words marked,
 * filters by type and date, and a click that opens the file's folder with the file selected
 * (through the `reveal(sid, path)` the shell passes in).
 *
 * Snippets come from the server HTML-escaped with <mark> around matches; they are turned into
 * text nodes and <mark> elements here, never assigned as HTML. The box hides itself while the
 * search module is not active (GET /api/v1/health, read by modules.js).
 */
import { api } from './api.js';
import { h, clear, formatBytes, formatTime } from './ui.js';
import { on } from './state.js';
import { moduleActive } from './modules.js';
import { openSharedHit } from './shares.js';

const DEBOUNCE_MS = 250;
const TYPES = [['', 'Any type'], ['document', 'Documents'], ['pdf', 'PDF'], ['spreadsheet', 'Spreadsheets'],
    ['presentation', 'Presentations'], ['image', 'Images'], ['email', 'E-mail'], ['text', 'Text']];
const DATES = [['', 'Any time'], ['1', 'Past day'], ['7', 'Past week'], ['31', 'Past month'], ['366', 'Past year']];
const ENTITIES = { amp: '&', lt: '<', gt: '>', quot: '"', '#39': "'" };

function magnifier() {
    const ns = 'http://www.w3.org/2000/svg';
    const svg = document.createElementNS(ns, 'svg');
    svg.setAttribute('viewBox', '0 0 24 24');
    svg.setAttribute('class', 'icon');
    svg.setAttribute('aria-hidden', 'true');
    const p = document.createElementNS(ns, 'path');
    p.setAttribute('d', 'M10 4a6 6 0 1 0 3.9 10.6l4.7 4.7 1.4-1.4-4.7-4.7A6 6 0 0 0 10 4zm0 2a4 4 0 1 1 0 8 4 4 0 0 1 0-8z');
    svg.append(p);
    return svg;
}

/* "a <mark>b</mark> &amp; c" -> text and <mark> nodes. */
export function snippetNodes(s) {
    const out = [];
    let marked = false;
    for (const part of (s || '').split(/(<mark>|<\/mark>)/)) {
        if (part === '<mark>') marked = true;
        else if (part === '</mark>') marked = false;
        else if (part) {
            const text = part.replace(/&(amp|lt|gt|quot|#39);/g, (_, e) => ENTITIES[e]);
            out.push(marked ? h('mark', text) : document.createTextNode(text));
        }
    }
    return out;
}

export function searchBox({ reveal }) {
    const input = h('input.search-input', {
        type: 'search', placeholder: 'Search files', 'aria-label': 'Search files', autocomplete: 'off',
        spellcheck: 'false', role: 'combobox', 'aria-expanded': 'false', 'aria-controls': 'search-results',
    });
    const type = h('select.search-type', { 'aria-label': 'Type' }, TYPES.map(([v, l]) => h('option', { value: v }, l)));
    const date = h('select.search-date', { 'aria-label': 'Modified' }, DATES.map(([v, l]) => h('option', { value: v }, l)));
    const list = h('ul.search-results', { id: 'search-results', role: 'listbox', 'aria-label': 'Search results' });
    const note = h('p.search-note', { 'aria-live': 'polite' });
    const panel = h('div.search-panel', { hidden: true }, h('div.search-filters', type, date), note, list);
    const el = h('div.search-box', { role: 'search' }, h('span.search-icon', magnifier()), input, panel);
    let timer = null, ctl = null, seq = 0;

    const show = open => {
        panel.hidden = !open;
        input.setAttribute('aria-expanded', String(open));
    };
    const query = () => {
        let q = input.value.trim();
        if (type.value) q += ' type:' + type.value;
        if (date.value) {
            const d = new Date(Date.now() - Number(date.value) * 86400000);
            q += ' modified>=' + d.toISOString().slice(0, 10);
        }
        return q.trim();
    };
    const render = (hits, next, newest) => {
        clear(list, hits.map(hit => {
            const folder = hit.path.includes('/') ? hit.path.slice(0, hit.path.lastIndexOf('/')) : '';
            const li = h('li.search-hit', { role: 'option', tabindex: '-1', dataset: { store: hit.store, path: hit.path } },
                h('div.search-hit-name', h('bdi', hit.name)),
                h('div.search-hit-where', (hit.share ? 'shared · ' : '') + (hit.store_name || '') + ' / ' + folder +
                    ' · ' + (hit.type === 'folder' ? 'folder' : formatBytes(hit.size)) + ' · ' + formatTime(hit.modified)),
                hit.snippet ? h('div.search-hit-snippet', snippetNodes(hit.snippet)) : null);
            li.addEventListener('click', () => open(hit));
            li.addEventListener('keydown', ev => {
                if (ev.key === 'Enter') open(hit);
                if (ev.key === 'ArrowDown') li.nextElementSibling?.focus();
                if (ev.key === 'ArrowUp') (li.previousElementSibling || input).focus();
            });
            return li;
        }));
        note.textContent = (hits.length ? (next ? `First ${hits.length} results` : `${hits.length} result${hits.length === 1 ? '' : 's'}`)
            : 'No file matches.') + (newest ? ` (best of the ${newest.toLocaleString()} newest matches: add a word or a filter to narrow)` : '');
    };
    const run = async () => {
        const q = query();
        if (!input.value.trim() && !type.value && !date.value) { show(false); return; }
        ctl?.abort();
        ctl = new AbortController();
        const mine = ++seq;
        show(true);
        note.textContent = 'Searching…';
        try {
            const r = await api('GET', '/search?limit=20&q=' + encodeURIComponent(q), undefined, { signal: ctl.signal });
            if (mine === seq) render(r.hits, r.next, r.ranked_newest);
        } catch (e) {
            if (e.name === 'AbortError' || mine !== seq) return;
            clear(list);
            note.textContent = e.message;
        }
    };
    const open = hit => {
        show(false);
        input.blur();
        if (hit.share) openSharedHit(hit); /* the owner's path: the grantee opens it through the share */
        else reveal(String(hit.store), hit.path);
    };
    const later = () => { clearTimeout(timer); timer = setTimeout(run, DEBOUNCE_MS); };
    input.addEventListener('input', later);
    type.addEventListener('change', run);
    date.addEventListener('change', run);
    input.addEventListener('focus', () => { if (list.firstChild) show(true); });
    input.addEventListener('keydown', ev => {
        if (ev.key === 'Escape') { show(false); input.select(); }
        if (ev.key === 'ArrowDown') list.firstElementChild?.focus();
        if (ev.key === 'Enter') { clearTimeout(timer); run(); }
    });
    document.addEventListener('pointerdown', ev => { if (!el.contains(ev.target)) show(false); });
    const applyModule = () => { el.hidden = !moduleActive('search'); if (el.hidden) show(false); };
    applyModule();
    const off = on('modules', applyModule);
    return { el, destroy: off };
}
