/*
 * web/js/modules.js — which part of the page belongs to which server module.
 *
 * THE table below is the whole story: an element marked data-part="<part>" is shown only while
 * every module listed for that part is on (GET /api/v1/features -> {"features": [module names]},
 * what any signed-in user may know; versions and states are for admins only).
 * The page re-reads the features at start and after every module toggle in the admin view, so
 * switching a module off hides its part at once. This file touches no DOM at import time, so the browser
 * tests import the same table to know what to look for.
 */

export const PARTS = {
    // part            modules that must be active
    'trash':           ['trash'],                  // Trash view and its navigation entry, "Restore"
    'versions':        ['versioning'],             // the Versions tab of the side panel
    'store-create':    ['multistore', 'taskmgr'],  // "New store" in the store switcher
    'store-manage':    ['multistore'],             // rename / delete a store
    'usage':           ['quotas'],                 // the usage meter (used / quota)
    'admin-quotas':    ['quotas'],                 // admin: role and user quotas
    'settings':        ['storeconfig'],            // the store's settings dialog
    'integrity':       ['integrity'],              // admin: integrity findings
    'greeting':        ['hello'],                  // the server greeting in the About dialog
    'sharing':         ['sharing'],                // "Share…", the Shares view, the /s/{token} page
    'activity':        ['audit'],                  // a store's Activity view; admin: the audit log
    'webhooks':        ['webhooks'],               // a store's Webhooks view
    'ftp':             ['ftp'],                    // "FTP access…" (app passwords) in the account menu
    'discord':         ['discord'],                // a store's Discord view (backups, link, notifications)
    'tags':            ['tags'],                   // tag chips, the tag filter, "Tags…", the tags & rules dialog
};

/* The names of the modules that are on, from the last features answer. */
let active = new Set();

export function setFeatures(names) {
    active = new Set(names || []);
}

export function moduleActive(name) { return active.has(name); }

export function partEnabled(part) {
    const needs = PARTS[part];
    if (!needs) return true;
    return needs.every(moduleActive);
}

/* Show or hide every [data-part] element under root according to the table. */
export function applyParts(root = document) {
    root.querySelectorAll('[data-part]').forEach(el => {
        el.hidden = !partEnabled(el.dataset.part);
    });
}
