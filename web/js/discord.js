/*
 * web/js/discord.js — Discord backups of the current store (module `discord`, docs/discord.md):
 * connect a channel to a folder, each backup's state (last message, last run, errors), Run now,
 * Remove; and the user's own Discord settings: their Discord user id (for /mbyte commands) and
 * which notifications go to their Discord webhook.
 */
import { api } from './api.js';
import { h, icon, button, clear, field, toast, formatTime } from './ui.js';

export class DiscordView {
    constructor() {
        this.el = h('section.view.discord-view', { 'aria-label': 'Discord' });
    }

    async show(sid) {
        this.sid = sid;
        const err = h('p.form-error', { role: 'alert', hidden: true });
        const fail = e => { err.textContent = e.message; err.hidden = false; };
        let list = [], link = {}, notif = { events: [], available: [] };
        try {
            [list, link, notif] = await Promise.all([
                api('GET', '/discord/backups').then(r => (r?.backups || []).filter(b => String(b.store) === String(sid))),
                api('GET', '/discord/link'), api('GET', '/discord/notifications')]);
        } catch (e) {
            clear(this.el, h('div.empty.error-state', { role: 'alert' }, icon('alert'), h('p', e.message)));
            return;
        }
        const channel = h('input', { type: 'text', inputmode: 'numeric', required: true, placeholder: '1234567890123456789' });
        const folder = h('input', { type: 'text', value: 'discord', required: true });
        const form = h('form.discord-connect',
            field('Channel id', channel, 'In Discord: Developer Mode on, right-click the channel, “Copy Channel ID”.'),
            field('Folder', folder, 'Messages go to <folder>/<channel>/<day>.jsonl and .md, attachments to <folder>/attachments/.'),
            h('button.btn.primary', { type: 'submit' }, 'Connect'));
        form.addEventListener('submit', async ev => {
            ev.preventDefault();
            try {
                await api('POST', '/discord/backups', { channel: channel.value.trim(), store: Number(sid), folder: folder.value.trim() });
                toast('Channel connected.', 'success');
                await this.show(sid);
            } catch (e) { fail(e); }
        });
        const rows = list.map(b => h('tr', { dataset: { backup: b.id } },
            h('td', h('code', b.channel), b.name ? ' #' + b.name : ''),
            h('td', h('code', b.folder || '/')),
            h('td', h('span.badge.state-' + (b.state === 'error' ? 'failed' : b.state === 'ok' ? 'done' : 'queued'), b.state)),
            h('td', String(b.messages ?? 0), b.threads ? ` (${b.threads} threads)` : ''),
            h('td', b.last_run ? formatTime(b.last_run) : '—'),
            h('td.small', b.last_error ? h('span.field-error', b.last_error) : b.last_message ? h('code', b.last_message) : '—'),
            h('td', button('Run now', 'refresh', async () => {
                try { const r = await api('POST', `/discord/backups/${encodeURIComponent(b.id)}/run`); toast(`Backup started (task ${r.task}).`, 'success'); }
                catch (e) { fail(e); }
            }, { cls: 'small' }), button('Remove', 'trash', async () => {
                try { await api('DELETE', `/discord/backups/${encodeURIComponent(b.id)}`); await this.show(sid); }
                catch (e) { fail(e); }
            }, { cls: 'small danger-text' }))));
        const table = rows.length ? h('table.list',
            h('thead', h('tr', ...['Channel', 'Folder', 'State', 'Messages', 'Last run', 'Last message / error', ''].map(t => h('th', t)))),
            h('tbody', rows)) : h('div.empty', icon('refresh'), h('p.empty-title', 'No channel backed up into this store yet'));

        // Linking proves the Discord account: a one-time code from here, typed in Discord as /mbyte link <code>.
        const linked = h('p.discord-link', link?.discord_user
            ? `Linked to the Discord account ${link.discord_user}.` : 'No Discord account linked.');
        const codeOut = h('p.discord-code');
        const getCode = button('Get a link code', 'shield', async () => {
            try {
                const r = await api('POST', '/discord/link/code');
                clear(codeOut, 'In Discord, type ', h('code', `/mbyte link ${r.code}`),
                    ` within ${Math.round((r.expires * 1000 - Date.now()) / 60000)} minutes.`);
            } catch (e) { fail(e); }
        }, { cls: 'small' });
        const unlink = button('Unlink', 'trash', async () => {
            try { await api('DELETE', '/discord/link'); await this.show(sid); toast('Unlinked.', 'success'); }
            catch (e) { fail(e); }
        }, { cls: 'small danger-text' });
        const hook = h('input', { type: 'text', inputmode: 'url', value: notif?.webhook_url || '', placeholder: 'https://discord.com/api/v10/webhooks/…' });
        const boxes = (notif?.available || []).map(name => h('label.check',
            h('input', { type: 'checkbox', value: name, checked: (notif.events || []).includes(name) }), ' ', name));
        const saveNotif = button('Save notifications', 'bell', async () => {
            try {
                await api('PUT', '/discord/notifications', {
                    webhook_url: hook.value.trim() || null,
                    events: boxes.map(b => b.querySelector('input')).filter(i => i.checked).map(i => i.value),
                });
                toast('Notifications saved.', 'success');
            } catch (e) { fail(e); }
        }, { cls: 'small' });
        clear(this.el,
            h('div.view-head', h('h1.view-title', 'Discord backups')),
            err, form, table,
            h('h2.discord-head', 'Your Discord account'),
            linked, h('div.discord-link-actions', getCode, link?.discord_user ? unlink : null), codeOut,
            h('h2.discord-head', 'Notifications'),
            field('Discord webhook URL', hook, 'Channel settings > Integrations > Webhooks > Copy Webhook URL.'),
            h('div.discord-events', boxes), saveNotif);
    }
}
