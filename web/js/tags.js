/*
 * web/js/tags.js — tags in the file list (module tags, docs/api.md "Tags", docs/rules.md): chips on
 * each row and in the details panel, a filter bar (AND, NOT: a chip's ×/− toggles, typing a name adds
 * it), "Tags…" for the selected files, and the "Tags & rules" dialog: suggestions to accept or
 * dismiss, and the store's rules to edit, test on a file and run (dry run first) over the folder.
 *
 * The filter is the page's (one per tab): the file list asks listFolder with tagQuery(). Everything
 * here hides itself while the tags module is off (data-part="tags", web/js/modules.js).
 * Tag names and rule text are put into the page as text nodes only.
 */
import { api, encodePath } from './api.js';
import { h, clear, button, dialog, field, toast } from './ui.js';
import { partEnabled } from './modules.js';

const S = sid => `/stores/${encodeURIComponent(sid)}`;

/* The active filter: [{name, not}] */
const filter = [];

export function tagQuery() {
    if (!partEnabled('tags') || !filter.length) return '';
    return '?' + filter.map(f => 'tag=' + encodeURIComponent((f.not ? '-' : '') + f.name)).join('&');
}

function addFilter(name, not, reload) {
    const low = name.toLowerCase();
    const at = filter.findIndex(f => f.name.toLowerCase() === low);
    if (at >= 0) filter.splice(at, 1);
    filter.push({ name, not });
    reload();
}

/* The chips of one entry (the listing's "tags"); a click filters by that tag. */
export function tagChips(e, reload) {
    const tags = e.raw?.tags;
    if (!Array.isArray(tags) || !tags.length || !partEnabled('tags')) return null;
    return h('span.tag-chips', { dataset: { part: 'tags' } }, tags.map(t => h('button.tag-chip', {
        type: 'button', title: 'Show only files tagged ' + t, dataset: { tag: t },
        onclick: ev => { ev.stopPropagation(); addFilter(t, false, reload); },
    }, t)));
}

/* The filter bar above the list. */
export function tagBar(sid, path, reload) {
    if (!partEnabled('tags')) return null;
    const input = h('input.tag-filter-input', { type: 'text', placeholder: 'Filter by tag', 'aria-label': 'Filter by tag',
        autocomplete: 'off' });
    input.addEventListener('keydown', ev => {
        if (ev.key !== 'Enter' || !input.value.trim()) return;
        ev.preventDefault();
        const v = input.value.trim();
        addFilter(v.replace(/^-/, ''), v.startsWith('-'), reload);
    });
    const active = filter.map((f, i) => h('span.tag-filter' + (f.not ? '.not' : ''), { dataset: { tag: f.name } },
        h('button.tag-filter-mode', { type: 'button', title: f.not ? 'Without this tag: click for with' : 'With this tag: click for without',
            onclick: () => { f.not = !f.not; reload(); } }, (f.not ? 'not ' : '') + f.name),
        h('button.tag-filter-remove', { type: 'button', 'aria-label': 'Remove filter ' + f.name,
            onclick: () => { filter.splice(i, 1); reload(); } }, '×')));
    return h('div.tag-bar', { dataset: { part: 'tags' }, role: 'group', 'aria-label': 'Tag filter' },
        input, active, button('Tags & rules', 'settings', () => tagsDialog(sid, reload, path)));
}

async function change(sid, path, add, remove) {
    return api('POST', `${S(sid)}/tags/${encodePath(path)}`, { add, remove });
}

const splitNames = s => s.split(',').map(x => x.trim()).filter(Boolean);

/* "Tags…" for the selected entries: add some, remove some. */
export async function tagSelected(sid, entries, reload) {
    const have = [...new Set(entries.flatMap(e => e.raw?.tags || []))].sort();
    const add = field('Add tags', h('input', { name: 'add', type: 'text', placeholder: 'invoice, 2026' }), 'Separate tags with commas.');
    const boxes = have.map(t => h('label.check', h('input', { type: 'checkbox', name: 'remove', value: t }), ' ' + t));
    await dialog({
        title: `Tags of ${entries.length} ${entries.length === 1 ? 'item' : 'items'}`,
        body: [add, have.length ? h('fieldset.tag-remove', h('legend', 'Remove'), boxes) : null],
        actions: [{ label: 'Cancel' }, { label: 'Apply', primary: true, value: 'ok' }],
        onSubmit: async () => {
            const adds = splitNames(add.input.value);
            const removes = boxes.map(b => b.querySelector('input')).filter(i => i.checked).map(i => i.value);
            for (const e of entries) await change(sid, e.path, adds, removes);
        },
    }).then(v => { if (v) { toast('Tags changed.', 'success'); reload(); } });
}

/* The details panel's tags: chips with ×, and an input to add. */
export function tagEditor(sid, e, reload) {
    if (!partEnabled('tags')) return null;
    const box = h('div.tag-editor', { dataset: { part: 'tags' } });
    let tags = e.raw?.tags || [];
    /* Drawn again after each change: what is being typed meanwhile (a removal answered while
     * typing the next tag) stays in the new input, focused if it was. */
    const draw = () => {
        const was = box.querySelector('input.tag-add'), focused = was && document.activeElement === was;
        const input = h('input.tag-add', { type: 'text', placeholder: 'Add a tag', 'aria-label': 'Add a tag to ' + e.name });
        if (was) input.value = was.value;
        input.addEventListener('keydown', async ev => {
            if (ev.key !== 'Enter' || !input.value.trim()) return;
            ev.preventDefault();
            const typed = input.value;
            try {
                tags = (await change(sid, e.path, splitNames(typed), [])).tags; e.raw.tags = tags;
                const now = box.querySelector('input.tag-add');
                if (now && now.value === typed) now.value = '';
                draw(); reload();
            } catch (err) { toast(err.message, 'error'); }
        });
        clear(box, tags.map(t => h('span.tag-chip', t, h('button.tag-chip-remove', { type: 'button', 'aria-label': 'Remove tag ' + t,
            onclick: async () => {
                try { tags = (await change(sid, e.path, [], [t])).tags; e.raw.tags = tags; draw(); reload(); }
                catch (err) { toast(err.message, 'error'); }
            } }, '×'))), input);
        if (focused) input.focus();
    };
    draw();
    return box;
}

/* ---------------------------------------------------- the tags & rules dialog --- */

async function suggestionsPane(sid, pane, reload) {
    clear(pane, h('p.muted', 'Loading suggestions…'));
    let list;
    try { list = await api('GET', `${S(sid)}/suggestions`); } catch (err) { clear(pane, h('p.form-error', err.message)); return; }
    const decide = async (what, body) => {
        try { await api('POST', `${S(sid)}/suggestions/${what}`, body); reload(); suggestionsPane(sid, pane, reload); }
        catch (err) { toast(err.message, 'error'); }
    };
    if (!list.length) { clear(pane, h('p.muted', 'No suggestions.')); return; }
    clear(pane,
        h('div.tag-actions', button('Accept all', 'check', () => decide('accept', { all: true })),
            button('Dismiss all', 'close', () => decide('dismiss', { all: true }))),
        h('ul.tag-suggestions', list.map(s => h('li.tag-suggestion', { dataset: { path: s.path, tag: s.tag } },
            h('span.tag-chip', s.tag), ' ', h('bdi', s.path),
            h('span.muted', ` — ${s.rule}${s.reason ? ': ' + s.reason : ''}`),
            button('Accept', 'check', () => decide('accept', { path: s.path, tag: s.tag })),
            button('Dismiss', 'close', () => decide('dismiss', { path: s.path, tag: s.tag }))))));
}

async function waitTask(id, out) {
    for (;;) {
        const t = await api('GET', `/tasks/${id}`);
        out.textContent = `${t.message || t.state} ${t.progress ?? 0}%`;
        if (['done', 'failed', 'cancelled'].includes(t.state)) return t;
        await new Promise(r => setTimeout(r, 300));
    }
}

function resultList(changes) {
    if (!changes.length) return h('p.muted', 'No file gets a tag.');
    return h('ul.rule-result', changes.map(c => h('li', h('bdi', c.path), ': ',
        (c.apply || []).map(a => h('span.tag-chip', a.tag)),
        (c.suggest || []).map(a => h('span.tag-chip.suggested', a.tag + '?')))));
}

function rulesPane(sid, pane, folder, reload) {
    const name = h('input', { type: 'text', name: 'rule-name', placeholder: 'invoices', 'aria-label': 'Rule name' });
    const src = h('textarea.rule-source', { rows: 10, spellcheck: 'false', 'aria-label': 'Rule source (Lua)' },
        'function rule(file)\n  if file.name:lower():find("invoice") then\n    return {apply = {"invoice"}}\n  end\nend\n');
    const testPath = h('input', { type: 'text', placeholder: 'path/of/a/file.pdf', 'aria-label': 'File to test on' });
    const out = h('div.rule-output', { 'aria-live': 'polite' });
    const tableBox = h('div.rules-list', h('p.muted', 'Loading rules…'));
    const say = (text, cls = '') => clear(out, h('p' + cls, text));
    /* Only the list is drawn again after a change: what is being edited stays. */
    const drawTable = async () => {
        let rules;
        try { rules = await api('GET', `${S(sid)}/rules`); } catch (err) { clear(tableBox, h('p.form-error', err.message)); return; }
        clear(tableBox, !rules.length ? h('p.muted', 'No rules yet.') : h('table.rules',
            h('thead', h('tr', ['Rule', 'Scope', 'Runs', 'Errors', 'Last error', ''].map(x => h('th', x)))),
            h('tbody', rules.map(r => h('tr', { dataset: { rule: r.name } }, h('td', r.name), h('td', r.scope),
                h('td', String(r.runs)), h('td', String(r.errors)), h('td.muted', r.last_error || ''),
                h('td.rule-actions', r.scope === 'store' ? [
                    button('Edit', 'edit', async () => {
                        name.value = r.name;
                        src.value = await api('GET', `${S(sid)}/rules/${encodeURIComponent(r.name)}`);
                    }),
                    button('Delete', 'trash', async () => {
                        await api('DELETE', `${S(sid)}/rules/${encodeURIComponent(r.name)}`).catch(e => toast(e.message, 'error'));
                        drawTable();
                    }, { cls: 'danger-text' })] : null))))));
    };
    const save = async () => {
        if (!name.value.trim()) return say('Give the rule a name.', '.form-error');
        const r = await api('PUT', `${S(sid)}/rules/${encodeURIComponent(name.value.trim())}`, src.value,
            { headers: { 'Content-Type': 'text/x-lua' } }).catch(e => e);
        if (r instanceof Error) return say(r.message, '.form-error');
        say(`Saved ${name.value.trim()}.`);
        drawTable();
    };
    const test = async () => {
        const r = await api('POST', `${S(sid)}/rules/${encodeURIComponent(name.value.trim())}/test`, { path: testPath.value.trim() }).catch(e => e);
        if (r instanceof Error) return say(r.message, '.form-error');
        clear(out, r.error ? h('p.form-error', r.error) : null, resultList([{ path: testPath.value.trim(), apply: r.apply, suggest: r.suggest }]));
    };
    const run = async dry => {
        const r = await api('POST', `${S(sid)}/rules/run`, { path: folder, dry_run: dry }).catch(e => e);
        if (r instanceof Error) return say(r.message, '.form-error');
        const progress = h('p.muted');
        clear(out, progress);
        const t = await waitTask(r.task, progress);
        if (t.state !== 'done') return say(t.error || t.state, '.form-error');
        const changed = t.result.changed ?? t.result.changes.length;
        clear(out, h('p', `${dry ? 'Dry run' : 'Applied'}: ${t.result.files} files, ${changed} with tags` +
            (t.result.errors ? `, ${t.result.errors} rule errors` : '') +
            (changed > t.result.changes.length ? `; the first ${t.result.changes.length} are listed` : '') + '.'),
            resultList(t.result.changes));
        if (!dry) { reload(); drawTable(); }
    };
    clear(pane, tableBox,
        h('div.rule-editor', field('Name', name), field('Lua source', src, 'rule(file) returns {apply = {...}, suggest = {...}} (docs/rules.md).'),
            h('div.tag-actions', button('Save rule', 'check', save)),
            field('Test on a file', testPath), h('div.tag-actions', button('Test', 'info', test),
                button(`Dry run on ${folder ? '/' + folder : 'the store'}`, 'refresh', () => run(true)),
                button('Apply to existing files', 'check', () => run(false)))),
        out);
    drawTable();
}

export function tagsDialog(sid, reload, folder) {
    const pane = h('div.tags-pane');
    const here = folder || '';
    const tabs = h('div.tabs', { role: 'tablist' });
    const tab = (label, fn) => {
        const b = h('button.tab', { type: 'button', role: 'tab', 'aria-selected': 'false' }, label);
        b.addEventListener('click', () => {
            tabs.querySelectorAll('.tab').forEach(t => t.setAttribute('aria-selected', String(t === b)));
            fn();
        });
        return b;
    };
    tabs.append(tab('Suggestions', () => suggestionsPane(sid, pane, reload)), tab('Rules', () => rulesPane(sid, pane, here, reload)));
    const d = dialog({ title: 'Tags & rules', body: [tabs, pane], wide: true, actions: [{ label: 'Close' }] });
    tabs.firstChild.click();
    return d;
}
