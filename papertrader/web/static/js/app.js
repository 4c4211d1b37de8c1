// The web client's screens: sign in / register (signin.js), watchlist, asset chart with the
// order ticket (trade.js), portfolio with P&L (and equity.js's chart), history,
// competitions and their leaderboards (competitions.js). This module keeps the page's
// state, the routing between screens and the small screens. Plain DOM, text only (never
// innerHTML).

import { ClientError } from "./client.js";
import { CompetitionsScreen } from "./competitions.js";
import { EquityPanel } from "./equity.js";
import { cell, className, moment, money, quantity, signedMoney } from "./format.js";
import { $, SYMBOL_RE, explain, notice, placeholderRow, show, symbolOf } from "./page.js";
import { Decimal } from "./protocol/index.js";
import * as providerSignIn from "./provider_signin.js";
import { SignInScreen } from "./signin.js";
import { TradeScreen } from "./trade.js";
import { Trader } from "./trader.js";

const SCREENS = ["signin", "watchlist", "trade", "portfolio", "history", "competitions"];

const state = {
  config: { assets: [], update_interval: 5, starting_cash: null },
  trader: null,
  screen: null,
  competition: null, // the competition the address names
  lastPrice: new Map(), // the last close seen of each symbol, for the ticket's estimate
  timer: null,
  signin: null, // the sign-in screen (signin.js)
  trade: null, // the trade screen (trade.js)
  equity: null, // the portfolio screen's equity chart (equity.js)
  competitions: null, // the competitions screen (competitions.js)
};

// -- the watchlist, kept in this browser per user -----------------------------------------
function watchKey() {
  return `papertrader.watchlist.${state.trader.session?.username ?? ""}`;
}

function watchlist() {
  try {
    const saved = JSON.parse(localStorage.getItem(watchKey()));
    if (Array.isArray(saved)) return saved.filter((s) => SYMBOL_RE.test(s));
  } catch {
    // fall through to the default list
  }
  return state.config.assets.slice(0, 8);
}

function saveWatchlist(symbols) {
  localStorage.setItem(watchKey(), JSON.stringify(symbols));
}

/** The first cell of a symbol's row: the symbol, a link to its trade screen. */
function tradeCell(symbol) {
  const name = document.createElement("td");
  const link = document.createElement("a");
  link.href = `#/trade/${encodeURIComponent(symbol)}`;
  link.textContent = symbol;
  name.append(link);
  return name;
}

// -- screens ------------------------------------------------------------------------
function route() {
  const [, screen = "", symbol = ""] = location.hash.split("/");
  if (!state.trader.signedIn) return go("signin");
  const chosen = screen === "trade" ? symbolOf(decodeURIComponent(symbol)) : null;
  if (screen === "competitions") state.competition = symbol ? decodeURIComponent(symbol) : null;
  if (chosen !== null) state.trade.choose(chosen);
  go(SCREENS.includes(screen) && screen !== "signin" ? screen : "watchlist");
}

function go(screen) {
  state.screen = screen;
  for (const name of SCREENS) $(`screen-${name}`).hidden = name !== screen;
  for (const link of document.querySelectorAll("#nav a")) {
    if (link.dataset.screen === screen) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  const signedIn = state.trader.signedIn;
  $("nav").hidden = !signedIn;
  $("signout").hidden = !signedIn;
  $("whoami").hidden = !signedIn;
  $("whoami").textContent = signedIn ? state.trader.session.username : "";
  const titled = screen === "trade" ? state.trade.symbol : screen === "competitions" ? state.competition : null;
  document.title = `PaperTrader · ${titled || screen[0].toUpperCase() + screen.slice(1)}`;
  clearTimeout(state.timer);
  if (screen === "trade") state.trade.accountsStale = true; // a competition may have been joined
  refresh().catch(() => undefined);
  if (screen === "signin") state.signin.loadProviders();
}

async function refresh() {
  const screen = state.screen;
  try {
    if (screen === "watchlist") await refreshWatchlist();
    else if (screen === "trade") await state.trade.refresh();
    else if (screen === "portfolio") await refreshPortfolio();
    else if (screen === "history") await refreshHistory();
    else if (screen === "competitions") await state.competitions.refresh();
    if (screen !== "signin") notice("");
  } catch (error) {
    if (error instanceof ClientError && error.sessionProblem) return;
    notice(explain(error));
  } finally {
    if (state.screen === screen && ["watchlist", "trade", "competitions"].includes(screen)) {
      clearTimeout(state.timer);
      state.timer = setTimeout(() => refresh().catch(() => undefined), state.config.update_interval * 1000);
    }
  }
}

// -- watchlist ------------------------------------------------------------------------
async function refreshWatchlist() {
  const body = $("watch-table").tBodies[0];
  const rows = [];
  for (const symbol of watchlist()) {
    const row = document.createElement("tr");
    row.append(tradeCell(symbol));
    try {
      const quote = await state.trader.quote(symbol);
      const change = quote.close.sub(quote.open);
      state.lastPrice.set(symbol, quote.close);
      row.append(
        cell(money(quote.close), "num"),
        cell(signedMoney(change), `num ${className(change)}`),
        cell(money(quote.high), "num hide-narrow"),
        cell(money(quote.low), "num hide-narrow"),
        cell(moment(quote.time), "num hide-narrow"),
      );
    } catch (error) {
      if (!(error instanceof ClientError) || error.sessionProblem) throw error;
      const td = cell(error.reason, "muted");
      td.colSpan = 5;
      row.append(td);
    }
    const actions = document.createElement("td");
    const remove = document.createElement("button");
    remove.type = "button";
    remove.textContent = "Remove";
    remove.setAttribute("aria-label", `Remove ${symbol} from the watchlist`);
    remove.addEventListener("click", () => {
      saveWatchlist(watchlist().filter((s) => s !== symbol));
      refresh();
    });
    actions.append(remove);
    row.append(actions);
    rows.push(row);
  }
  body.replaceChildren(...rows);
  $("watch-updated").textContent = `Updated ${moment(new Date())} UTC.`;
}

async function addToWatchlist(event) {
  event.preventDefault();
  const input = $("watch-symbol");
  const symbol = symbolOf(input.value);
  const result = $("watch-result");
  if (symbol === null) return show(result, "Type a symbol such as AAPL (letters, digits, . - ^).", "bad");
  try {
    await state.trader.quote(symbol);
  } catch (error) {
    return show(result, explain(error), "bad");
  }
  const symbols = watchlist();
  if (!symbols.includes(symbol)) saveWatchlist([...symbols, symbol]);
  input.value = "";
  show(result, `${symbol} added.`, "ok");
  await refreshWatchlist();
}

// -- portfolio and history ------------------------------------------------------------------
async function refreshPortfolio() {
  const portfolio = await state.trader.portfolio();
  let pnl = new Decimal(0n, 2);
  const rows = portfolio.positions.map((p) => {
    // The master's P&L when it sends one (issue 13), else market value less cost, exactly.
    const cost = p.average_price ? p.average_price.mul(p.quantity) : null;
    const gain = p.unrealized_pnl ?? (p.market_value && cost ? p.market_value.sub(cost).toFixed(2) : null);
    if (gain) pnl = pnl.add(gain);
    const row = document.createElement("tr");
    row.append(
      tradeCell(p.symbol),
      cell(quantity(p.quantity), "num"),
      cell(money(p.average_price), "num"),
      cell(money(p.price), "num"),
      cell(money(p.market_value), "num"),
      cell(gain ? signedMoney(gain) : "—", `num ${className(gain)}`),
    );
    return row;
  });
  if (rows.length === 0) rows.push(placeholderRow("No positions yet: buy something on the Trade screen.", 6));
  $("portfolio-table").tBodies[0].replaceChildren(...rows);
  const unrealized = portfolio.unrealized_pnl ?? pnl;
  const items = [
    ["Cash", money(portfolio.cash)],
    ["Total value", money(portfolio.total_value)],
    ["Unrealised P&L", signedMoney(unrealized), className(unrealized)],
  ];
  if (portfolio.available_cash && portfolio.reserved_cash && !portfolio.reserved_cash.isZero()) {
    items.splice(1, 0, ["Available (open orders hold " + money(portfolio.reserved_cash) + ")", money(portfolio.available_cash)]);
  }
  if (portfolio.realized_pnl) items.push(["Realised P&L", signedMoney(portfolio.realized_pnl), className(portfolio.realized_pnl)]);
  if (portfolio.day_change) items.push(["Today", signedMoney(portfolio.day_change), className(portfolio.day_change)]);
  if (state.config.starting_cash) {
    const since = portfolio.total_value.sub(Decimal.parse(state.config.starting_cash));
    items.push(["Since you started", signedMoney(since), className(since)]);
  }
  $("portfolio-summary").replaceChildren(
    ...items.map(([term, value, classes]) => {
      const box = document.createElement("div");
      const dt = document.createElement("dt");
      const dd = document.createElement("dd");
      dt.textContent = term;
      dd.textContent = value;
      if (classes) dd.className = classes;
      box.append(dt, dd);
      return box;
    }),
  );
  $("portfolio-priced").textContent = portfolio.priced_at ? `Valued at the prices of ${moment(portfolio.priced_at)} UTC.` : "";
  await state.equity.refreshAccounts();
  await state.equity.refresh();
}

async function refreshHistory() {
  const entries = await state.trader.transactions();
  entries.sort((a, b) => (b.executed_at.micros > a.executed_at.micros ? 1 : -1));
  const rows = entries.map((e) => {
    const row = document.createElement("tr");
    row.append(
      cell(moment(e.executed_at)),
      cell(String(e.side)),
      cell(String(e.symbol)),
      cell(quantity(e.quantity), "num"),
      cell(money(e.price), "num"),
      cell(e.amount ? money(e.amount) : "—", "num"),
      cell(e.order_id ? String(e.order_id) : "", "hide-narrow mono"),
    );
    return row;
  });
  if (rows.length === 0) rows.push(placeholderRow("No transactions yet.", 7));
  $("history-table").tBodies[0].replaceChildren(...rows);
}

function onWorker(worker) {
  const badge = $("worker");
  const name = worker.name ?? new URL(worker.origin).host;
  badge.classList.toggle("up", worker.connected);
  badge.textContent = worker.connected ? `${name}${worker.moved ? " (moved here)" : ""}` : `reconnecting (${name} went away)`;
  badge.title = worker.connected ? `Connected to ${worker.origin}` : worker.reason ?? "";
  $("foot-worker").textContent = worker.connected ? `Served through ${name}.` : "";
}

function onSessionLost(reason) {
  notice(`You are signed out: ${reason}`);
  location.hash = "#/";
  route();
}

// -- start ------------------------------------------------------------------------------------
async function main() {
  // A provider's answer (code or ID token) leaves the address bar before anything else runs.
  const providerAnswer = providerSignIn.takeAnswer();
  try {
    const response = await fetch("/config.json", { cache: "no-cache" });
    if (response.ok) state.config = { ...state.config, ...(await response.json()) };
  } catch {
    // the defaults will do; the page still works
  }
  $("interval").textContent = `${state.config.update_interval} s`;
  $("known-symbols").replaceChildren(
    ...state.config.assets.map((symbol) => Object.assign(document.createElement("option"), { value: symbol })),
  );
  state.trader = new Trader(location.origin, { region: state.config.region ?? null, onWorker, onSessionLost });
  state.competitions = new CompetitionsScreen(state.trader, { chosen: () => state.competition });
  state.equity = new EquityPanel(state.trader, (error) => {
    if (!(error instanceof ClientError && error.sessionProblem)) notice(explain(error));
  });
  // Each screen wires its own controls.
  state.signin = new SignInScreen(state.trader, { route });
  state.trade = new TradeScreen(state.trader, {
    refresh,
    firstSymbol: () => watchlist()[0] ?? state.config.assets[0],
    lastPrice: state.lastPrice,
    updateInterval: () => state.config.update_interval,
  });
  $("watch-add").addEventListener("submit", addToWatchlist);
  $("join-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const code = $("join-code").value.trim();
    if (!code) return show($("join-result"), "Type the join code you were given, such as K7QPM2XD.", "bad");
    state.competitions.join("", code, $("join-submit"));
  });
  window.addEventListener("hashchange", () => {
    state.trade.chartFor = null;
    route();
    // A new screen: move keyboard and screen-reader focus to its heading.
    document.querySelector(`#screen-${state.screen} h1`)?.focus();
  });
  try {
    await state.trader.start(); // connects, and resumes a stored session
  } catch (error) {
    if (!(error instanceof ClientError && error.sessionProblem)) notice(explain(error));
  }
  await state.signin.loadProviders();
  route();
  await state.signin.finishProvider(providerAnswer);
  document.body.dataset.ready = "true";
}

main();