// The page's calls, on whichever worker of the region answers (the browser's failover).
//
// The page starts on the worker that served it. It asks that worker for the
// worker list (getWorkerList, answered by the master through it) and, when
// its worker goes away (crashed, booted off, out of service), moves to
// another one, same region first, and resumes the same session there with
// login(sessionID), as papertrader/client/failover.py does for the CLI:
//
// * every call is retried on the next worker: reads and session calls are
//   idempotent, and so are orders, which carry the client's own order id
//   (docs/PROTOCOL.md section 13.1: the same id never makes a second order);
// * an order whose outcome nobody can tell (OUTCOME_UNKNOWN, or no worker
//   answered) is OrderOutcomeUnknown with its id: it may still fill, so the
//   page says so, never "failed", and offers to send the same ticket again.

import { ClientError, ConnectionLost, WorkerConnection } from "./client.js";
import { CalendarDate, ErrorCode, NIL, Uuid, fromRecord, fromRecords, toRecord } from "./protocol/index.js";
import { forgetSession, loadSession, saveSession } from "./session.js";

const MAX_ATTEMPTS = 4;
const WORKERS_KEY = "papertrader.workers";
const LIST_REFRESH_MS = 60000;

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** The workers listed last time (so a reload can find another one if this one is away). */
function knownWorkers() {
  try {
    const saved = JSON.parse(localStorage.getItem(WORKERS_KEY));
    if (Array.isArray(saved)) return saved.filter((w) => w && typeof w.web_url === "string");
  } catch {
    // nothing usable saved
  }
  return [];
}

export class OrderOutcomeUnknown extends Error {
  constructor(reason, orderId = null) {
    super(reason);
    this.name = "OrderOutcomeUnknown";
    this.orderId = orderId;
  }
}

export const RANGES = Object.freeze({
  day: "GET_ASSET_VALUE_DAY",
  week: "GET_ASSET_VALUE_WEEK",
  month: "GET_ASSET_VALUE_MONTH",
  year: "GET_ASSET_VALUE_YEAR",
  all: "GET_ASSET_VALUE_ALL_TIME",
});

export class Trader {
  constructor(homeOrigin, { region = null, onWorker = () => {}, onSessionLost = () => {} } = {}) {
    this.home = homeOrigin;
    this.region = region;
    this.onWorker = onWorker;
    this.onSessionLost = onSessionLost;
    this.session = loadSession();
    this.conn = null;
    this.worker = { name: null, origin: homeOrigin };
    this.workers = knownWorkers();
    this.listedAt = 0;
    this.failovers = 0;
  }

  get signedIn() {
    return this.session !== null;
  }

  // -- choosing a worker -----------------------------------------------------------
  #candidates(avoid) {
    const known = this.workers.filter((w) => w.web_url);
    const shuffled = known.map((w) => [Math.random(), w]).sort((a, b) => a[0] - b[0]).map(([, w]) => w);
    shuffled.sort((a, b) => (a.region === this.region ? 0 : 1) - (b.region === this.region ? 0 : 1));
    const origins = [this.worker.origin, ...shuffled.map((w) => w.web_url), this.home];
    const unique = [...new Set(origins)];
    return [...unique.filter((o) => !avoid.has(o)), ...unique.filter((o) => avoid.has(o))];
  }

  async #connect(avoid) {
    let last = null;
    for (const origin of this.#candidates(avoid)) {
      const conn = new WorkerConnection(origin);
      try {
        await conn.open();
        if (this.session !== null) await this.#resume(conn);
      } catch (error) {
        conn.close();
        if (error instanceof ClientError && error.sessionProblem) {
          this.#dropSession();
          throw error;
        }
        avoid.add(origin);
        last = error;
        continue;
      }
      const moved = this.conn !== null && origin !== this.worker.origin;
      if (moved) this.failovers += 1;
      this.conn = conn;
      const listed = this.workers.find((w) => w.web_url === origin);
      this.worker = { name: listed ? listed.name : null, origin };
      conn.onclose = (reason) => this.onWorker({ ...this.worker, connected: false, reason });
      this.onWorker({ ...this.worker, connected: true, moved });
      this.#refreshList(conn).catch(() => undefined);
      return conn;
    }
    throw last ?? new ConnectionLost("no worker answered");
  }

  async #refreshList(conn, force = false) {
    if (!force && Date.now() - this.listedAt < LIST_REFRESH_MS) return;
    const listed = fromRecords(await conn.workerList()).map((w) => ({
      name: String(w.name),
      region: w.region === null ? null : String(w.region),
      web_url: w.web_url === null || w.web_url === undefined ? null : String(w.web_url),
    }));
    this.workers = listed;
    this.listedAt = Date.now();
    try {
      localStorage.setItem(WORKERS_KEY, JSON.stringify(listed)); // for a reload while this worker is away
    } catch {
      // storage full or disabled: the list is only kept in memory
    }
    const me = listed.find((w) => w.web_url === this.worker.origin);
    if (me) {
      this.worker = { ...this.worker, name: me.name };
      if (this.region === null) this.region = me.region;
      this.onWorker({ ...this.worker, connected: true, moved: false });
    }
  }

  async #resume(conn) {
    const reply = await conn.command("LOGIN_SESSION", [], this.session.id);
    this.#takeSession(reply, this.session.remember);
  }

  #takeSession(reply, remember) {
    const [id, expiresAt, username] = reply.args;
    this.session = { id, username: String(username), expiresAt: expiresAt.toISOString(), remember };
    saveSession(this.session);
  }

  #dropSession() {
    this.session = null;
    forgetSession();
  }

  /** Run ``operation(conn)`` on the current worker, moving on when it goes away. */
  async #call(operation) {
    const avoid = new Set();
    for (let attempt = 1; ; attempt += 1) {
      if (this.conn === null || this.conn.closed) {
        if (this.conn !== null) avoid.add(this.conn.origin);
        if (attempt > 1) await sleep(Math.min(2000, 250 * 2 ** (attempt - 2))); // do not hammer
        this.conn = await this.#connect(avoid);
      }
      const conn = this.conn;
      try {
        return await operation(conn);
      } catch (error) {
        if (error instanceof ConnectionLost) {
          avoid.add(conn.origin);
          conn.close();
          if (attempt >= MAX_ATTEMPTS) throw error;
          continue;
        }
        if (error instanceof ClientError && error.turnedAway && attempt < MAX_ATTEMPTS) {
          avoid.add(conn.origin);
          conn.close();
          continue;
        }
        if (error instanceof ClientError && error.sessionProblem && this.session !== null) {
          this.#dropSession();
          this.onSessionLost(error.reason);
        }
        throw error;
      }
    }
  }

  #sid() {
    if (this.session === null) throw new ClientError(ErrorCode.INVALID_SESSION, "sign in first");
    return this.session.id;
  }

  // -- accounts ----------------------------------------------------------------------
  async start() {
    await this.#call(async () => undefined);
    return this.session;
  }

  async login(username, password, remember) {
    const reply = await this.#call((c) => c.command("LOGIN", [username, password, remember]));
    this.#takeSession(reply, remember);
    return this.session;
  }

  /** The sign-in providers the master offers (GET_SIGN_IN_OPTIONS), maybe none. */
  async signInOptions() {
    const reply = await this.#call((c) => c.command("GET_SIGN_IN_OPTIONS"));
    return fromRecords(reply.args[0]).map((p) => ({
      name: String(p.name),
      display_name: String(p.display_name ?? p.name),
      issuer: String(p.issuer),
      client_id: String(p.client_id),
      client_secret: p.client_secret ? String(p.client_secret) : null,
      scopes: p.scopes ? String(p.scopes) : "openid email profile",
      web_client_id: p.web_client_id ? String(p.web_client_id) : null,
      web_flow: p.web_flow === "id_token" ? "id_token" : "code",
    }));
  }

  /** LOGIN_OIDC: the provider's ID token (and its nonce) opens a session, as a password
   *  does. ``username`` names the new account on a first sign-in (USERNAME_NEEDED). */
  async loginWithProvider(provider, idToken, nonce, remember, username = "") {
    const reply = await this.#call((c) => c.command("LOGIN_OIDC", [provider, idToken, nonce, remember, username]));
    this.#takeSession(reply, remember);
    return this.session;
  }

  /** PROVIDER_LINK: link the provider sign-in (its ID token and nonce) to this account. */
  async linkProvider(provider, idToken, nonce) {
    const sid = this.#sid();
    const reply = await this.#call((c) => c.command("PROVIDER_LINK", [provider, idToken, nonce], sid));
    return String(reply.args[0]);
  }

  async register(username, email, password) {
    const reply = await this.#call((c) => c.command("REGISTER", [username, email, password]));
    return String(reply.args[0]);
  }

  async logout() {
    const id = this.#sid();
    try {
      await this.#call((c) => c.command("LOGOUT", [], id));
    } finally {
      this.#dropSession();
    }
  }

  // -- market data ---------------------------------------------------------------------
  async quote(symbol) {
    const sid = this.#sid();
    return fromRecord(await this.#call((c) => c.data("GET_ASSET_VALUE_CURRENT", [symbol], sid)));
  }

  async assetInfo(symbol) {
    const sid = this.#sid();
    return fromRecord(await this.#call((c) => c.data("GET_ASSET_INFO", [symbol], sid)));
  }

  /** Bars of a range ending today (UTC), oldest first. */
  async bars(symbol, range, day = CalendarDate.utcOf(new Date())) {
    const sid = this.#sid();
    const instruction = RANGES[range];
    const args = range === "all" ? [symbol] : [symbol, day];
    return fromRecords(await this.#call((c) => c.data(instruction, args, sid)));
  }

  async forecast(symbol, horizon) {
    const sid = this.#sid();
    const record = fromRecord(await this.#call((c) => c.data("GET_ASSET_VALUE_PREDICTED", [symbol, BigInt(horizon)], sid)));
    record.points = fromRecords(record.points ?? []);
    return record;
  }

  // -- the account's money --------------------------------------------------------------
  async portfolio() {
    const sid = this.#sid();
    const record = fromRecord(await this.#call((c) => c.data("GET_USER_PORTFOLIO", [""], sid)));
    record.positions = fromRecords(record.positions ?? []);
    return record;
  }

  /** Equity over ``range`` (day, week, month, year, all), oldest first, ending with now:
   *  the practice account's, or (``account``: a competition's name) that competition
   *  account's (docs/PROTOCOL.md 13.9). */
  async equityHistory(range, account = "") {
    const sid = this.#sid();
    const [instruction, args] = account ? ["GET_ACCOUNT_EQUITY_HISTORY", [account, range]] : ["GET_EQUITY_HISTORY", [range]];
    return fromRecords(await this.#call((c) => c.data(instruction, args, sid)));
  }

  async transactions() {
    const sid = this.#sid();
    return fromRecords(await this.#call((c) => c.data("GET_USER_TRANSACTION_HISTORY", [""], sid)));
  }

  async userInfo() {
    const sid = this.#sid();
    return fromRecord(await this.#call((c) => c.data("GET_USER_INFO", [""], sid)));
  }

  /** Any order (docs/PROTOCOL.md section 13): the order record after the master's drain.
   *  ``ticket.clientOrderId`` makes it exactly-once, so a lost answer is simply asked again
   *  on the next worker; ClientError when refused; OrderOutcomeUnknown when nobody can say. */
  async placeOrder(ticket) {
    const sid = this.#sid();
    const fields = {
      client_order_id: ticket.clientOrderId,
      side: ticket.side,
      symbol: ticket.symbol,
      quantity: BigInt(ticket.quantity),
      type: ticket.type,
      time_in_force: ticket.timeInForce,
    };
    if (ticket.limitPrice) fields.limit_price = ticket.limitPrice;
    if (ticket.stopPrice) fields.stop_price = ticket.stopPrice;
    if (ticket.competition) fields.competition = ticket.competition;
    try {
      const reply = await this.#call((c) => c.command("PLACE_ORDER", [toRecord(fields)], sid));
      return fromRecord(reply.args[0]);
    } catch (error) {
      if (error instanceof ClientError && error.code === ErrorCode.OUTCOME_UNKNOWN) {
        throw new OrderOutcomeUnknown(error.reason, ticket.clientOrderId);
      }
      if (error instanceof ConnectionLost) {
        throw new OrderOutcomeUnknown(
          `no worker answered (${error.message}): the order ${ticket.clientOrderId} may have been queued. ` +
            "Sending it again is safe (it has the same id), or look at Orders.",
          ticket.clientOrderId,
        );
      }
      throw error;
    }
  }

  async getOrder(id) {
    const sid = this.#sid();
    return fromRecord(await this.#call((c) => c.data("GET_ORDER", [id], sid)));
  }

  /** The account's orders, newest first: status "open" (queued and open) or "all"; of the
   *  practice account, or of the user's account in ``competition``. */
  async orders(status = "open", limit = 50, competition = "") {
    const sid = this.#sid();
    return fromRecords(await this.#call((c) => c.data("GET_ORDERS", [competition, status, BigInt(limit)], sid)));
  }

  async cancelOrder(id) {
    const sid = this.#sid();
    const reply = await this.#call((c) => c.command("CANCEL_ORDER", [id], sid));
    return fromRecord(reply.args[0]);
  }

  // -- competitions (docs/PROTOCOL.md section 16) ----------------------------------------
  /** The competitions the user may see: public ones, private ones joined or created. */
  async competitions() {
    const sid = this.#sid();
    const listed = await this.#call((c) => c.data("GET_COMPETITIONS", [], sid));
    return fromRecords(listed ?? []).map(competitionOf);
  }

  /** One competition's record; for a member, with ``account``: their place, cash and
   *  positions in it. */
  async competition(name) {
    const sid = this.#sid();
    const record = competitionOf(fromRecord(await this.#call((c) => c.data("GET_COMPETITION", [name], sid))));
    if (record.account) {
      record.account = fromRecord(record.account);
      record.account.positions = fromRecords(record.account.positions ?? []);
    }
    return record;
  }

  /** Join by name (a public competition) or by join code (a private one). */
  async joinCompetition(name, code) {
    const sid = this.#sid();
    const reply = await this.#call((c) => c.command("JOIN_COMPETITION", [name, code], sid));
    return competitionOf(fromRecord(reply.args[0]));
  }

  /** The members ranked by return, best first (the master's prices). */
  async leaderboard(name, limit = 100) {
    const sid = this.#sid();
    const record = fromRecord(await this.#call((c) => c.data("GET_LEADERBOARD", [name, BigInt(limit)], sid)));
    record.entries = fromRecords(record.entries ?? []);
    return record;
  }

  async workerList() {
    await this.#call((c) => this.#refreshList(c, true));
    return this.workers;
  }
}

/** A competition record with its asset list as an array (empty: every asset). */
function competitionOf(record) {
  record.symbols = Array.isArray(record.symbols) ? record.symbols : [];
  return record;
}

export { ClientError, ConnectionLost, NIL, Uuid };
