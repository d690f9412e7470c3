/*
 * web/js/state.js — what every view shares: the signed-in user, the stores, the current store and
 * folder, and a tiny event bus ("stores", "modules", "usage", "task", "notification", "files")
 * so that views refresh themselves without knowing each other.
 */
export const state = {
    user: null,        // {id, username, role}
    stores: [],        // [{id, name, ...}]
    sid: null,         // the current store id (string)
    path: '',          // the current folder ("" is the root)
    version: '',       // the server's version from health
};

const listeners = new Map();
export function on(topic, fn) {
    if (!listeners.has(topic)) listeners.set(topic, new Set());
    listeners.get(topic).add(fn);
    return () => listeners.get(topic).delete(fn);
}
export function emit(topic, data) {
    for (const fn of listeners.get(topic) || []) {
        try { fn(data); } catch (e) { console.error(topic, e); }
    }
}

export function currentStore() {
    return state.stores.find(s => String(s.id) === String(state.sid)) || null;
}

export function isAdmin() { return state.user?.role === 'admin'; }
