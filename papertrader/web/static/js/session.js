// Where the page keeps its session between reloads.
//
// The session id is a bearer secret; the protocol carries it in every frame's
// header, so it must be readable by the page's script (an HttpOnly cookie
// would mean a second API that injects it). With "remember me" it goes to
// localStorage, so it survives closing the browser, like the CLI's session
// file, for the 30 days the master gives a remembered session; without it,
// to sessionStorage: it survives a reload of this tab and dies with the tab.
// What keeps other scripts from reading either is the Content-Security-Policy
// (no inline script, no script from anywhere but this worker).

import { Uuid } from "./protocol/index.js";

const KEY = "papertrader.session";

function stores() {
  return [globalThis.sessionStorage, globalThis.localStorage].filter(Boolean);
}

/** The stored session, or null: {id: Uuid, username, expiresAt: ISO text, remember}. */
export function loadSession() {
  for (const store of stores()) {
    try {
      const raw = store.getItem(KEY);
      if (raw === null) continue;
      const saved = JSON.parse(raw);
      if (Date.parse(saved.expiresAt) <= Date.now()) {
        store.removeItem(KEY);
        continue;
      }
      return { id: new Uuid(saved.id), username: String(saved.username), expiresAt: saved.expiresAt, remember: Boolean(saved.remember) };
    } catch {
      store.removeItem(KEY);
    }
  }
  return null;
}

export function saveSession(session) {
  forgetSession();
  const store = session.remember ? globalThis.localStorage : globalThis.sessionStorage;
  store.setItem(KEY, JSON.stringify({ id: session.id.toString(), username: session.username, expiresAt: session.expiresAt, remember: session.remember }));
}

export function forgetSession() {
  for (const store of stores()) store.removeItem(KEY);
}
