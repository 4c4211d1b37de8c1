// The helpers every screen of the page uses: finding an element, the page's notice, a
// result line, an error in plain words, a button busy while its work runs, a symbol as
// typed, the muted row of an empty table, and a select's option. Plain DOM, text only
// (never innerHTML).

import { ClientError, ConnectionLost } from "./client.js";
import { cell } from "./format.js";
import { ErrorCode } from "./protocol/index.js";

export const $ = (id) => document.getElementById(id);
export const SYMBOL_RE = /^[A-Z0-9.\-^]{1,12}$/;

/** The page's notice above every screen; none when ``text`` is empty. */
export function notice(text) {
  const box = $("notice");
  box.textContent = text ?? "";
  box.hidden = !text;
}

/** A result line under a form: ``kind`` is "ok", "bad", "unknown" or none. */
export function show(el, text, kind = "") {
  el.textContent = text;
  el.className = `result ${kind}`.trim();
}

export function explain(error) {
  if (error instanceof ClientError) {
    if (error.code === ErrorCode.RATE_LIMITED) return error.reason;
    return error.reason.charAt(0).toUpperCase() + error.reason.slice(1);
  }
  if (error instanceof ConnectionLost) return `No worker answered (${error.message}). Trying again shortly.`;
  return `Something went wrong on this page: ${error.message}`;
}

export async function busy(button, work) {
  button.disabled = true;
  try {
    return await work();
  } finally {
    button.disabled = false;
  }
}

/** The symbol typed, in capitals, or null when it cannot be one. */
export function symbolOf(text) {
  const symbol = String(text).trim().toUpperCase();
  return SYMBOL_RE.test(symbol) ? symbol : null;
}

/** The one row of an empty table, saying why it is empty across its ``columns``. */
export function placeholderRow(text, columns) {
  const td = cell(text, "muted");
  td.colSpan = columns;
  const row = document.createElement("tr");
  row.append(td);
  return row;
}

export function option(value, text) {
  return Object.assign(document.createElement("option"), { value, textContent: text });
}
