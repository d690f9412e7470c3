/*
 * web/js/webhooks.js — a store's webhooks (module `webhooks`): list with on/off, create (the
 * signing secret is shown once, with a copy button), delete, and each hook's delivery log with
 * every attempt's status or error and a Redeliver button.
 */
import { api } from './api.js';
import { h, icon, button, clear, dialog, confirmDialog, field, toast, formatTime, fileName } from './ui.js';
import { currentStore } from './state.js';
import { copyField } from './shares.js';

const W = sid => `/stores/${encodeURIComponent(sid)}/webhooks`;

export class WebhooksView {
    constructor() {
        this.el = h('section.view.webhooks-view', { 'aria-label': 'Webhooks' });
        this.open = new Set(); // hooks whose delivery log is unfolded
    }

    async show(sid) {
        this.sid = sid;
        const store = currentStore();
        const head = h('div.view-head', h('h1.view-title', 'Webhooks of ', store ? fileName(store.name) : 'this store'),
            h('div.view-actions', button('Add webhook', 'plus', () => this.create(), { cls: 'primary' })));
        let list;
        try {
            const r = await api('GET', W(sid));
            list = Array.isArray(r) ? r : r?.webhooks || r?.hooks || [];
        } catch (e) {
            clear(this.el, head, h('div.empty.error-state', { role: 'alert' }, icon('alert'), h('p', e.message)));
            return;
        }
        const cards = [];
        for (const w of list) cards.push(await this.card(w));
        clear(this.el, head,
            h('p.muted', 'MByte POSTs a signed JSON message to each URL when one of its events happens in this store (see docs/api.md, “What the receiver gets”).'),
            cards.length ? cards : h('div.empty', icon('refresh'), h('p.empty-title', 'No webhook yet')));
    }

    async card(w) {
        const err = h('p.field-error', { role: 'alert', hidden: true });
        const fail = e => { err.textContent = e.message; err.hidden = false; };
        const sw = h('button.switch', { type: 'button', role: 'switch', 'aria-checked': String(!!w.active), 'aria-label': 'Active: ' + w.url },
            h('span.knob'));
        sw.addEventListener('click', async () => {
            try { await api('PATCH', `${W(this.sid)}/${encodeURIComponent(w.id)}`, { active: !w.active }); await this.show(this.sid); }
            catch (e) { fail(e); }
        });
        const del = button('Delete', 'trash', async () => {
            if (!await confirmDialog('Delete webhook', `Delete the webhook to ${w.url} and its delivery log?`, 'Delete', true)) return;
            try { await api('DELETE', `${W(this.sid)}/${encodeURIComponent(w.id)}`); toast('Webhook deleted.', 'success'); await this.show(this.sid); }
            catch (e) { fail(e); }
        }, { cls: 'small danger-text' });
        const shown = this.open.has(w.id);
        const log = h('div.deliveries');
        const toggle = button(shown ? 'Hide deliveries' : 'Deliveries', 'history', async () => {
            if (this.open.has(w.id)) this.open.delete(w.id); else this.open.add(w.id);
            await this.show(this.sid);
        }, { cls: 'small' });
        toggle.setAttribute('aria-expanded', String(shown));
        if (shown) await this.deliveries(w, log);
        return h('div.card.hook', { dataset: { hook: w.id } },
            h('div.hook-head', sw, h('code.hook-url', w.url),
                w.active ? null : h('span.badge.state-failed', 'off'),
                h('div.view-actions', toggle, del)),
            h('p.muted.small', 'Events: ', (w.events || []).join(', '),
                w.failures ? ` · ${w.failures} failed in a row` : '', w.created ? ' · created ' + formatTime(w.created) : ''),
            err, log);
    }

    async deliveries(w, host) {
        let r;
        try { r = await api('GET', `${W(this.sid)}/${encodeURIComponent(w.id)}/deliveries`); }
        catch (e) { clear(host, h('p.form-error', { role: 'alert' }, e.message)); return; }
        const list = r?.deliveries || [];
        if (!list.length) { clear(host, h('p.muted', 'No delivery yet.')); return; }
        const tbody = h('tbody');
        for (const d of list) {
            const last = (d.attempts || []).at(-1);
            const err = h('span.field-error', { role: 'alert', hidden: true });
            const again = button('Redeliver', 'refresh', async () => {
                again.disabled = true;
                try {
                    await api('POST', `${W(this.sid)}/${encodeURIComponent(w.id)}/deliveries/${encodeURIComponent(d.id)}/redeliver`);
                    toast('Sent again as a new delivery.', 'success');
                    await this.show(this.sid);
                } catch (e) { err.textContent = e.message; err.hidden = false; again.disabled = false; }
            }, { cls: 'small' });
            again.setAttribute('aria-label', 'Redeliver ' + d.id);
            tbody.append(h('tr', { dataset: { delivery: d.id, state: d.state } },
                h('td.col-mtime', formatTime(d.created)),
                h('td', h('code', d.event), d.redelivery_of ? h('span.muted.small', ' (redelivery)') : null),
                h('td', h('span.badge.state-' + (d.state === 'delivered' ? 'done' : d.state === 'failed' || d.state === 'skipped' ? 'failed' : 'running'), d.state)),
                h('td.small', `${(d.attempts || []).length} attempt${(d.attempts || []).length === 1 ? '' : 's'}`,
                    last ? h('div.muted', last.status ? 'HTTP ' + last.status : '', last.error ? ' ' + last.error : '') : null),
                h('td.col-actions', again, err)));
        }
        clear(host, h('table.files.deliveries-table', { 'aria-label': 'Deliveries to ' + w.url },
            h('thead', h('tr', ['When', 'Event', 'State', 'Attempts', ''].map(t => h('th', { scope: 'col' }, t)))), tbody));
    }

    async create() {
        const url = h('input', { type: 'text', name: 'url', placeholder: 'https://example.org/hook', autocomplete: 'off', spellcheck: 'false' });
        const events = h('input', { type: 'text', name: 'events', value: 'file.*', autocomplete: 'off', spellcheck: 'false' });
        let made = null;
        await dialog({
            title: 'Add webhook', wide: true,
            body: [field('URL', url, 'http or https; it gets a POST for every event.'),
                field('Events', events, 'Comma-separated: file.created, file.deleted, share.created, … a prefix ending in *, or * for all.')],
            actions: [{ label: 'Cancel' }, { label: 'Add webhook', primary: true, value: 'ok' }],
            onSubmit: async () => {
                const ev = events.value.split(',').map(s => s.trim()).filter(Boolean);
                try { made = await api('POST', W(this.sid), { url: url.value.trim(), events: ev }); }
                catch (e) { throw Object.assign(e, { field: e.field || (/^events/.test(e.message) ? 'events' : 'url') }); }
            },
        });
        if (!made) return;
        await dialog({
            title: 'Webhook added',
            body: [h('p', 'Each message is signed with this secret (header X-MByte-Signature). Put it in your receiver.'),
                copyField('Secret', made.secret || '', 'secret'),
                h('p.note', icon('alert'), 'This is the only time the secret is shown.')],
            actions: [{ label: 'Done', primary: true, value: 'ok' }],
        });
        await this.show(this.sid);
    }
}
