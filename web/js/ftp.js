/*
 * web/js/ftp.js — FTP access (module `ftp`): how to connect (host, user name, TLS) with copy
 * buttons, and the account's app passwords: create one per device (the password is shown once),
 * list, revoke. Opened from the account menu.
 *
 * The connection details come from GET /api/v1/ftp: what the server really listens on (its
 * conf.d/ftp.yaml and overrides), never the shipped defaults.
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
    const conn = h('div.ftp-connection', { 'aria-live': 'polite' }, h('p.muted', 'Loading…'));
    api('GET', '/ftp').then(d => clear(conn, connection(d)))
        .catch(e => clear(conn, h('p.form-error', { role: 'alert' }, 'Connection details unavailable: ' + e.message)));
    const body = h('div.ftp-access',
        h('h3', 'Connection'),
        conn,
        h('h3', 'App passwords'),
        h('p.muted', 'Give each device or program its own password instead of your account’s; revoke it on its own.'),
        h('div.inline-form', field('Name', name), add), addErr, created, list);
    load();
    await dialog({ title: 'FTP access', body, wide: true, actions: [{ label: 'Close', primary: true, value: 'ok' }], initialFocus: 'input[name=name]' });
}

/* The details a client needs, each with a copy button, and a sentence on encryption that says
 * what the server enforces. */
function connection(d) {
    const tls = d.tls_required
        ? 'Encryption: explicit TLS (“FTP over TLS”, AUTH TLS) is required, except from the server itself.'
        : 'Encryption: explicit TLS (“FTP over TLS”, AUTH TLS) is offered; plain FTP is accepted too.';
    const pasv = d.passive_ports.min + '–' + d.passive_ports.max;
    return h('div',
        h('div.conn-grid',
            copyField('Host', d.host, 'ftp-host'),
            copyField('Port', String(d.port), 'ftp-port'),
            copyField('User name', d.username || state.user?.username || '', 'ftp-user'),
            copyField('TLS', d.tls, 'ftp-tls'),
            d.implicit_tls ? copyField('Implicit TLS port', String(d.implicit_tls.port), 'ftp-implicit-port') : null,
            copyField('Passive ports', pasv, 'ftp-passive')),
        h('p.muted.small', tls + (d.implicit_tls ? ' Clients that speak TLS from the first byte (“implicit FTPS”) use port ' + d.implicit_tls.port + '.' : '')),
        d.loopback_only ? h('p.note', icon('alert'), 'The FTP server listens on this machine only (' + d.listen +
            '): other computers cannot reach it until the administrator sets listen in conf.d/ftp.yaml.') : null,
        h('p.muted.small', 'Log in with your account password or, better, an app password from below. ' +
            'Data connections use passive ports ' + pasv + (d.passive_address ? ' at ' + d.passive_address : '') + '.'));
}
