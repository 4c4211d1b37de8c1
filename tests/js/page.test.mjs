// The page's helpers that need no browser: money formatting, where the session is kept,
// the WebSocket address of a worker's page, the provider sign-in's PKCE (node --test, run by
// tests/test_web_codec.py).

import assert from "node:assert/strict";
import { test } from "node:test";

class MemoryStorage {
  constructor() { this.items = new Map(); }
  getItem(key) { return this.items.has(key) ? this.items.get(key) : null; }
  setItem(key, value) { this.items.set(key, String(value)); }
  removeItem(key) { this.items.delete(key); }
}
globalThis.localStorage = new MemoryStorage();
globalThis.sessionStorage = new MemoryStorage();

const { money, signedMoney, quantity, moment } = await import("./format.js");
const { loadSession, saveSession, forgetSession } = await import("./session.js");
const { socketUrl } = await import("./client.js");
const { Decimal, Timestamp, Uuid } = await import("./protocol/index.js");
const { answerIn, base64url, codeChallenge, randomToken } = await import("./provider_signin.js");

test("amounts are shown from exact decimals, two places at least", () => {
  assert.equal(money(Decimal.parse("1234567.5")), "1,234,567.50");
  assert.equal(money(Decimal.parse("0.1234")), "0.1234");
  assert.equal(money(Decimal.parse("189.25")), "189.25");
  assert.equal(money(Decimal.parse("180.500000")), "180.50");
  assert.equal(money(Decimal.parse("0.123400")), "0.1234");
  assert.equal(money(null), "—");
  assert.equal(signedMoney(Decimal.parse("12.5")), "+12.50");
  assert.equal(signedMoney(Decimal.parse("-3")), "-3.00");
  assert.equal(signedMoney(Decimal.parse("0")), "0.00");
  assert.equal(quantity(1234567n), "1,234,567");
  assert.equal(moment(new Timestamp(1735732800123456n)), "2025-01-01 12:00:00");
});

test("a remembered session lives in localStorage, another one in sessionStorage only", () => {
  const id = Uuid.random();
  const later = new Date(Date.now() + 3600_000).toISOString();
  saveSession({ id, username: "alice", expiresAt: later, remember: true });
  assert.ok(localStorage.getItem("papertrader.session"));
  assert.equal(sessionStorage.getItem("papertrader.session"), null);
  assert.equal(loadSession().id.toString(), id.toString());
  saveSession({ id, username: "alice", expiresAt: later, remember: false });
  assert.equal(localStorage.getItem("papertrader.session"), null);
  assert.equal(loadSession().remember, false);
  forgetSession();
  assert.equal(loadSession(), null);
});

test("an expired or damaged stored session is dropped", () => {
  saveSession({ id: Uuid.random(), username: "bob", expiresAt: new Date(Date.now() - 1000).toISOString(), remember: true });
  assert.equal(loadSession(), null);
  localStorage.setItem("papertrader.session", "{not json");
  assert.equal(loadSession(), null);
  assert.equal(localStorage.getItem("papertrader.session"), null);
});

test("a page origin's WebSocket is /ws on the same host and port, wss for https", () => {
  assert.equal(socketUrl("https://trade.example.org"), "wss://trade.example.org/ws");
  assert.equal(socketUrl("http://127.0.0.1:8443"), "ws://127.0.0.1:8443/ws");
});

test("provider sign-in: the S256 challenge, fresh verifiers, the answer in the address", async () => {
  // The challenge Authlib's create_s256_code_challenge (the CLI's) makes of this verifier.
  assert.equal(await codeChallenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r7wW1gFWFOEjXk"), "bwWFMyPfdG9qreDhH2lmftFx_dFeLDalzcT1gb_j68g");
  assert.equal(base64url(new Uint8Array([251, 255, 191])), "-_-_");
  const [one, two] = [randomToken(), randomToken()];
  assert.match(one, /^[A-Za-z0-9_-]{43}$/);
  assert.notEqual(one, two);
  assert.deepEqual(answerIn("?code=c1&state=s1", "#/watchlist"), { params: { code: "c1", state: "s1" }, fragment: false });
  assert.equal(answerIn("?error=access_denied&state=s1").params.error, "access_denied");
  assert.deepEqual(answerIn("", "#id_token=h.p.s&state=s2"), { params: { id_token: "h.p.s", state: "s2" }, fragment: true });
  assert.equal(answerIn("", ""), null);
  assert.equal(answerIn("?utm=1", "#/trade/AAPL"), null);
});
