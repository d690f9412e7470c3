/*
 * web/js/ftp.js — FTP access (module `ftp`): how to connect (host, user name, TLS) with copy
 * buttons, and the account's app passwords: create one per device (the password is shown once),
 * list, revoke. Opened from the account menu.
 *
 * The API does not tell the page the FTP port or whether TLS is required (those are the ftp
 * module's settings, conf.d/ftp.yaml), so the page shows the shipped defaults and says so.
 */
import { api } from './api.js';
import { h, icon, button, clear, dialog, field, toast, formatTime, fileName } from './ui.js';
import { state } from './state.js';
import { copyField } from './shares.js';

export async function ftpAccess() {
    const list = h('div.ftp-passwords', { 'aria-live': 'polite' });
    const name = h('input', { type: 'text', name: 'name', placeholder: 'laptop', autocomplete: 'off', maxlength: '64' });
    const created = h('div.ftp-created');
    const addErr = h('p.field-error', { role: 'alert', hidden: true });
    const add = button('Create app password', 'plus', async () => {
        addErr.hidden = true;
        if (!name.value.trim()) { addErr.textContent = 'Name the device or program it is for.'; addErr.hidden = false; name.focus(); return; }
        add.disabled = true;
        try {
            const r = await api('POST', '/ftp/passwords', { name: name.value.trim() });
            name.value = '';
            clear(created, h('div.card.secret-card',
                h('p', 'App password for ', fileName(r.name), ' — log in as ', h('strong', r.username), ' with:'),
                copyField('App password', r.password, 'app-password'),
                h('p.note', icon('alert'), 'This is the only time it is shown. Revoke it here when the device is gone.')));
            await load();
        } catch (e) {
            addErr.textContent = e.message;
            addErr.hidden = false;
        } finally { add.disabled = false; }
    }, { cls: 'primary' });
    name.addEventListener('keydown', ev => { if (ev.key === 'Enter') { ev.preventDefault(); add.click(); } });
    async function load() {
        let r;
        try { r = await api('GET', '/ftp/passwords'); }
        catch (e) { clear(list, h('p.form-error', { role: 'alert' }, e.message)); return; }
        const items = Array.isArray(r) ? r : r?.passwords || [];
        if (!items.length) { clear(list, h('p.muted', 'No app password yet.')); return; }
        clear(list, h('ul.app-passwords', items.map(p => {
            const err = h('span.field-error', { role: 'alert', hidden: true });
            const revoke = button('Revoke', 'close', async () => {
                try { await api('DELETE', '/ftp/passwords/' + encodeURIComponent(p.id)); toast('App password revoked: logins with it stop now.', 'success'); await load(); }
                catch (e) { err.textContent = e.message; err.hidden = false; }
            }, { cls: 'small danger-text' });
            revoke.setAttribute('aria-label', 'Revoke ' + p.name);
            return h('li', { dataset: { id: p.id } }, icon('shield'), fileName(p.name), h('span.muted.small', 'created ' + formatTime(p.created)), revoke, err);
        })));
    }
    const host = location.hostname;
    const body = h('div.ftp-access',
        h('h3', 'Connection'),
        h('div.conn-grid',
            copyField('Host', host, 'ftp-host'),
            copyField('Port', '2121', 'ftp-port'),
            copyField('User name', state.user?.username || '', 'ftp-user')),
        h('p.muted.small', 'Encryption: explicit TLS (“FTP over TLS”, AUTH TLS) — required except from the server itself. ' +
            'Port and TLS are the shipped defaults; your administrator may have changed them (conf.d/ftp.yaml).'),
        h('h3', 'App passwords'),
        h('p.muted', 'Give each device or program its own password instead of your account’s; revoke it on its own.'),
        h('div.inline-form', field('Name', name), add), addErr, created, list);
    load();
    await dialog({ title: 'FTP access', body, wide: true, actions: [{ label: 'Close', primary: true, value: 'ok' }], initialFocus: 'input[name=name]' });
}
