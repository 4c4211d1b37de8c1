// The web client's screens: sign in / register, watchlist, asset chart with the order
// ticket, portfolio with P&L, history, competitions and their leaderboards. Plain DOM,
// text only (never innerHTML).

import { PriceChart } from "./chart.js";
import { ClientError, ConnectionLost } from "./client.js";
import { CompetitionsScreen } from "./competitions.js";
import { EquityPanel } from "./equity.js";
import { cell, className, moment, money, quantity, signedMoney } from "./format.js";
import { Decimal, ErrorCode, Uuid } from "./protocol/index.js";
import * as providerSignIn from "./provider_signin.js";
import { OrderOutcomeUnknown, Trader } from "./trader.js";

const $ = (id) => document.getElementById(id);
const SCREENS = ["signin", "watchlist", "trade", "portfolio", "history", "competitions"];
const SYMBOL_RE = /^[A-Z0-9.\-^]{1,12}$/;

const state = {
  config: { assets: [], update_interval: 5, starting_cash: null },
  trader: null,
  screen: null,
  symbol: null,
  range: "day",
  lastPrice: new Map(),
  timer: null,
  chart: null,
  equity: null, // the portfolio screen's equity chart (equity.js)
  competitions: null, // the competitions screen (competitions.js)
  providers: null, // the sign-in providers, once a worker has told them
  // A provider sign-in waiting for its new account's username (USERNAME_NEEDED).
  unnamed: null,
  // A provider sign-in that may be linked once its account's owner signs in (LINK_REQUIRED).
  linkable: null,
};

// -- helpers ------------------------------------------------------------------------
function notice(text) {
  const box = $("notice");
  box.textContent = text ?? "";
  box.hidden = !text;
}

function show(el, text, kind = "") {
  el.textContent = text;
  el.className = `result ${kind}`.trim();
}

function explain(error) {
  if (error instanceof ClientError) {
    if (error.code === ErrorCode.RATE_LIMITED) return error.reason;
    return error.reason.charAt(0).toUpperCase() + error.reason.slice(1);
  }
  if (error instanceof ConnectionLost) return `No worker answered (${error.message}). Trying again shortly.`;
  return `Something went wrong on this page: ${error.message}`;
}

async function busy(button, work) {
  button.disabled = true;
  try {
    return await work();
  } finally {
    button.disabled = false;
  }
}

function symbolOf(text) {
  const symbol = String(text).trim().toUpperCase();
  return SYMBOL_RE.test(symbol) ? symbol : null;
}

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

// -- screens ------------------------------------------------------------------------
function route() {
  const [, screen = "", symbol = ""] = location.hash.split("/");
  if (!state.trader.signedIn) return go("signin");
  const chosen = screen === "trade" ? symbolOf(decodeURIComponent(symbol)) : null;
  if (screen === "competitions") state.competition = symbol ? decodeURIComponent(symbol) : null;
  if (chosen !== null && chosen !== state.symbol) {
    state.symbol = chosen;
    $("asset-symbol").value = chosen;
    $("ticket-symbol").value = chosen;
  }
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
  const titled = screen === "trade" ? state.symbol : screen === "competitions" ? state.competition : null;
  document.title = `PaperTrader · ${titled || screen[0].toUpperCase() + screen.slice(1)}`;
  clearTimeout(state.timer);
  if (screen === "trade") state.accountsStale = true; // a competition may have been joined
  refresh().catch(() => undefined);
  if (screen === "signin" && state.providers === null) loadProviders();
}

async function refresh() {
  const screen = state.screen;
  try {
    if (screen === "watchlist") await refreshWatchlist();
    else if (screen === "trade") await refreshTrade();
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
    const name = document.createElement("td");
    const link = document.createElement("a");
    link.href = `#/trade/${encodeURIComponent(symbol)}`;
    link.textContent = symbol;
    name.append(link);
    row.append(name);
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

// -- asset page and order ticket --------------------------------------------------------
async function refreshTrade() {
  const symbol = state.symbol ?? watchlist()[0] ?? state.config.assets[0];
  if (!symbol) return;
  state.symbol = symbol;
  $("asset-title").textContent = `Trade ${symbol}`;
  $("asset-symbol").value ||= symbol;
  if (!$("ticket-symbol").value) $("ticket-symbol").value = symbol;
  const quote = await state.trader.quote(symbol);
  state.lastPrice.set(symbol, quote.close);
  $("asset-quote").textContent = `${symbol} ${money(quote.close)} at ${moment(quote.time)} UTC`;
  updateEstimate();
  if (state.accountsStale !== false) await refreshAccounts();
  await refreshOrders();
  if (state.chartFor !== `${symbol}/${state.range}/${$("forecast-toggle").checked}`) await drawChart(symbol);
}

/** The ticket's accounts: the practice account, and each running competition one is in. */
async function refreshAccounts() {
  let running = [];
  try {
    running = (await state.trader.competitions()).filter((c) => c.joined && c.status === "running");
  } catch (error) {
    if (!(error instanceof ClientError) || error.sessionProblem) throw error;
  }
  const select = $("ticket-account");
  const chosen = select.value;
  const options = [Object.assign(document.createElement("option"), { value: "", textContent: "Practice account" })];
  for (const c of running) options.push(Object.assign(document.createElement("option"), { value: c.name, textContent: `${c.name} (competition)` }));
  select.replaceChildren(...options);
  select.value = running.some((c) => c.name === chosen) ? chosen : "";
  $("ticket-account-row").hidden = running.length === 0;
  state.accountsStale = false;
}

function accountName() {
  return $("ticket-account").value;
}

async function drawChart(symbol) {
  const range = state.range;
  const caption = $("chart-caption");
  let bars = [];
  try {
    bars = await state.trader.bars(symbol, range);
  } catch (error) {
    if (!(error instanceof ClientError) || error.sessionProblem) throw error;
    caption.textContent = error.reason;
  }
  let forecast = null;
  if ($("forecast-toggle").checked) {
    try {
      forecast = await state.trader.forecast(symbol, 30);
    } catch (error) {
      if (!(error instanceof ClientError) || error.sessionProblem) throw error;
    }
  }
  const last = bars.at(-1);
  const label = bars.length
    ? `${symbol}, ${range}: ${bars.length} bar${bars.length === 1 ? "" : "s"} from ${moment(bars[0].period_start)} to ${moment(last.period_start)} UTC, last close ${money(last.close)}` +
      (forecast ? `; forecast for ${forecast.points.length} updates, ending at ${money(forecast.points.at(-1).value)} (between ${money(forecast.points.at(-1).lower)} and ${money(forecast.points.at(-1).upper)})` : "")
    : `${symbol}, ${range}: no price history yet`;
  state.chart.draw(bars, forecast, label);
  if (bars.length) caption.textContent = label;
  state.chartFor = `${symbol}/${range}/${$("forecast-toggle").checked}`;
}

function chooseRange(range) {
  state.range = range;
  for (const button of document.querySelectorAll("#chart-ranges button")) {
    button.setAttribute("aria-pressed", String(button.dataset.range === range));
  }
  state.chartFor = null;
  refresh();
}

function ticketQuantity() {
  const text = $("ticket-quantity").value.trim();
  return /^[1-9][0-9]{0,8}$/.test(text) ? BigInt(text) : null;
}

function priceOf(id) {
  const text = $(id).value.trim();
  return Decimal.isText(text) && Decimal.parse(text).compare(0) > 0 ? Decimal.parse(text) : null;
}

function showTypeFields() {
  const type = $("ticket-type").value;
  $("ticket-limit-row").hidden = !(type === "limit" || type === "stop_limit");
  $("ticket-stop-row").hidden = !(type === "stop" || type === "stop_limit");
  updateEstimate();
}

function updateEstimate() {
  const symbol = symbolOf($("ticket-symbol").value);
  const qty = ticketQuantity();
  const type = $("ticket-type").value;
  const last = symbol ? state.lastPrice.get(symbol) : undefined;
  const limit = type === "limit" || type === "stop_limit" ? priceOf("ticket-limit") : null;
  let text = "";
  if (qty !== null && limit !== null) {
    text = `At most ${money(limit.mul(qty))} (${quantity(qty)} × ${money(limit)}); it fills only at the limit or better.`;
  } else if (qty !== null && last && type === "market") {
    text = `About ${money(last.mul(qty))} at the last price of ${money(last)}; the fill is at the next update's price.`;
  } else if (qty !== null && last) {
    text = `Last price ${money(last)}.`;
  }
  $("ticket-estimate").textContent = text;
}

function describeOrder(order) {
  const terms = `${order.side} ${quantity(order.quantity)} ${order.symbol}`;
  const type = order.order_type === "market" ? "market" : String(order.order_type).replace("_", "-");
  return `${type} ${terms}`;
}

/** One sentence for an order record (docs/PROTOCOL.md 13.4), in plain words. */
function orderOutcome(order) {
  const id = `Order ${order.order_id}.`;
  if (order.status === "filled") {
    const verb = order.side === "buy" ? "Bought" : "Sold";
    const amount = order.amount ?? order.price.mul(order.quantity);
    const pnl = order.realized_pnl ? ` Realised P&L ${signedMoney(order.realized_pnl)}.` : "";
    return [`${verb} ${quantity(order.quantity)} ${order.symbol} at ${money(order.price)} each, ${money(amount)} in all, at ${moment(order.executed_at)} UTC.${pnl} ${id}`, "ok"];
  }
  if (order.status === "open" || order.status === "queued") {
    const until = order.time_in_force === "gtc" ? "until you cancel it" : `until ${moment(order.expires_at)} UTC`;
    return [`Your ${describeOrder(order)} order is waiting for its price (${until}). ${id}`, "ok"];
  }
  const why = order.reason ? `: ${order.reason}` : "";
  return [`Not done: the ${describeOrder(order)} order was ${order.status}${why}. ${id}`, "bad"];
}

async function refreshOrders() {
  const result = $("orders-result");
  let orders;
  try {
    orders = await state.trader.orders("open", 50, accountName());
  } catch (error) {
    if (!(error instanceof ClientError) || error.sessionProblem) throw error;
    show(result, explain(error), "bad");
    return;
  }
  const rows = orders.map((order) => {
    const row = document.createElement("tr");
    const actions = document.createElement("td");
    const cancel = document.createElement("button");
    cancel.type = "button";
    cancel.textContent = "Cancel";
    cancel.setAttribute("aria-label", `Cancel the ${describeOrder(order)} order`);
    cancel.addEventListener("click", () => cancelOrder(order, cancel));
    actions.append(cancel);
    row.append(
      cell(moment(order.received_at)),
      cell(describeOrder(order)),
      cell(order.limit_price ? money(order.limit_price) : "—", "num"),
      cell(order.stop_price ? money(order.stop_price) : "—", "num"),
      cell(order.triggered_at ? `${order.status} (stop reached)` : String(order.status)),
      cell(order.time_in_force === "gtc" ? "until canceled" : `day, to ${moment(order.expires_at)}`, "hide-narrow"),
      actions,
    );
    return row;
  });
  if (rows.length === 0) {
    const td = cell("No open orders: limit and stop orders wait here until their price comes.", "muted");
    td.colSpan = 7;
    const row = document.createElement("tr");
    row.append(td);
    rows.push(row);
  }
  // Rows are replaced only when what they show has changed: a refresh every update
  // interval must not take a Cancel button away under the pointer or the keyboard focus.
  const shown = orders.map((order) => order.order_id).join(",") + "\n" + rows.map((row) => row.textContent).join("\n");
  const body = $("orders-table").tBodies[0];
  if (body.dataset.shown === shown) return;
  body.dataset.shown = shown;
  body.replaceChildren(...rows);
}

async function cancelOrder(order, button) {
  const result = $("orders-result");
  await busy(button, async () => {
    try {
      const canceled = await state.trader.cancelOrder(order.order_id);
      show(result, `The ${describeOrder(canceled)} order is ${canceled.status}. Order ${canceled.order_id}.`, "ok");
    } catch (error) {
      show(result, error instanceof OrderOutcomeUnknown ? error.message : explain(error), "bad");
    }
  });
  await refreshOrders();
}

function ticketFromForm() {
  const side = document.querySelector("input[name=side]:checked").value;
  const symbol = symbolOf($("ticket-symbol").value);
  const qty = ticketQuantity();
  const type = $("ticket-type").value;
  if (symbol === null) return [null, "Type the symbol to trade, such as AAPL."];
  if (qty === null) return [null, "The quantity is a whole number of units, at least 1."];
  const ticket = { clientOrderId: Uuid.random(), side, symbol, quantity: qty, type, timeInForce: $("ticket-tif").value, limitPrice: null, stopPrice: null, competition: accountName() };
  if (type === "limit" || type === "stop_limit") {
    ticket.limitPrice = priceOf("ticket-limit");
    if (ticket.limitPrice === null) return [null, "Type the limit price, a number above 0 such as 180.50."];
  }
  if (type === "stop" || type === "stop_limit") {
    ticket.stopPrice = priceOf("ticket-stop");
    if (ticket.stopPrice === null) return [null, "Type the stop price, a number above 0 such as 175.00."];
  }
  return [ticket, null];
}

async function sendTicket(ticket) {
  const result = $("ticket-result");
  const retry = $("ticket-retry");
  retry.hidden = true;
  const waits = ticket.type === "market" ? `Market orders fill at the next update (within ${state.config.update_interval} s).` : "";
  show(result, `Sending: ${ticket.side} ${quantity(ticket.quantity)} ${ticket.symbol}. ${waits}`);
  await busy($("ticket-submit"), async () => {
    try {
      const order = await state.trader.placeOrder(ticket);
      const [text, kind] = orderOutcome(order);
      show(result, ticket.competition ? `${text} In ${ticket.competition}.` : text, kind);
    } catch (error) {
      if (error instanceof OrderOutcomeUnknown) {
        show(result, `Outcome unknown: ${error.message}`, "unknown");
        state.unsentTicket = ticket; // the same client order id: sending it again is safe
        retry.hidden = false;
      } else if (error instanceof ClientError) {
        const id = error.orderId && !error.orderId.isNil() ? ` (order ${error.orderId})` : "";
        show(result, `Not done: ${explain(error)}${id}`, "bad");
      } else {
        show(result, explain(error), "bad");
      }
    }
  });
  await refreshOrders().catch(() => undefined);
}

async function placeOrder(event) {
  event.preventDefault();
  const [ticket, problem] = ticketFromForm();
  if (ticket === null) return show($("ticket-result"), problem, "bad");
  await sendTicket(ticket);
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
    const name = document.createElement("td");
    const link = document.createElement("a");
    link.href = `#/trade/${encodeURIComponent(p.symbol)}`;
    link.textContent = p.symbol;
    name.append(link);
    row.append(
      name,
      cell(quantity(p.quantity), "num"),
      cell(money(p.average_price), "num"),
      cell(money(p.price), "num"),
      cell(money(p.market_value), "num"),
      cell(gain ? signedMoney(gain) : "—", `num ${className(gain)}`),
    );
    return row;
  });
  if (rows.length === 0) {
    const td = cell("No positions yet: buy something on the Trade screen.", "muted");
    td.colSpan = 6;
    const row = document.createElement("tr");
    row.append(td);
    rows.push(row);
  }
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
  if (rows.length === 0) {
    const td = cell("No transactions yet.", "muted");
    td.colSpan = 7;
    const row = document.createElement("tr");
    row.append(td);
    rows.push(row);
  }
  $("history-table").tBodies[0].replaceChildren(...rows);
}

// -- signing in -------------------------------------------------------------------------------
async function signIn(event) {
  event.preventDefault();
  const result = $("signin-result");
  const username = $("signin-username").value.trim();
  const password = $("signin-password").value;
  if (!username || !password) return show(result, "Type your username and password.", "bad");
  await busy($("signin-submit"), async () => {
    try {
      await state.trader.login(username, password, $("signin-remember").checked);
      $("signin-password").value = "";
      show(result, "");
      show($("provider-result"), "");
      location.hash = "#/watchlist";
      route();
      offerLink();
    } catch (error) {
      show(result, explain(error), "bad");
      $("signin-password").focus();
    }
  });
}

// -- signing in with a provider (provider_signin.js runs the flow) -------------------------
/** Ask for the providers until a worker has answered (the sign-in screen asks again). */
async function loadProviders() {
  if (state.providers !== null) return;
  try {
    showProviders(await state.trader.signInOptions());
  } catch {
    // no worker answered: password sign-in only for now, as the notice says
  }
}

function showProviders(options) {
  state.providers = options;
  $("provider-buttons").replaceChildren(
    ...options.map((option) => {
      const button = document.createElement("button");
      button.type = "button";
      button.id = `provider-${option.name}`;
      button.textContent = `Sign in with ${option.display_name}`;
      button.addEventListener("click", () => startProvider(option, button));
      return button;
    }),
  );
  $("providers").hidden = options.length === 0;
}

async function startProvider(option, button) {
  show($("provider-result"), `Going to ${option.display_name}…`);
  await busy(button, async () => {
    try {
      await providerSignIn.start(option, { remember: $("signin-remember").checked });
    } catch (error) {
      show($("provider-result"), error.message, "bad");
    }
  });
}

/** After the provider sent the visitor back: finish the flow and sign in with its token. */
async function finishProvider(answer) {
  let signedIn;
  try {
    signedIn = await providerSignIn.finish(answer);
  } catch (error) {
    if (!(error instanceof providerSignIn.ProviderSignInError)) throw error;
    show($("provider-result"), error.message, "bad");
    return;
  }
  if (signedIn !== null) await providerLogin(signedIn, "");
}

async function providerLogin(signedIn, username) {
  const result = username ? $("provider-username-result") : $("provider-result");
  try {
    await state.trader.loginWithProvider(signedIn.provider, signedIn.idToken, signedIn.nonce, signedIn.remember, username);
  } catch (error) {
    if (!(error instanceof ClientError)) return show(result, explain(error), "bad");
    if (error.code === ErrorCode.USERNAME_NEEDED || (username && error.code === ErrorCode.USERNAME_TAKEN) || (username && error.code === ErrorCode.INVALID_USERNAME)) {
      return askUsername(signedIn, username ? explain(error) : "");
    }
    hideUsernameForm();
    if (error.code === ErrorCode.LINK_REQUIRED) {
      // Never linked silently: the account's owner signs in with its password first.
      state.linkable = signedIn;
      show(
        $("provider-result"),
        `An account with your ${signedIn.title} e-mail address already exists. If it is yours, sign in to it with its password above: ` +
          `you will then be asked whether to link ${signedIn.title} to it. Nothing is linked without the password.`,
        "bad",
      );
      $("signin-username").focus();
      return;
    }
    return show($("provider-result"), explain(error), "bad");
  }
  hideUsernameForm();
  state.linkable = null;
  show($("provider-result"), "");
  location.hash = "#/watchlist";
  route();
}

function askUsername(signedIn, problem) {
  state.unnamed = signedIn;
  $("provider-username-intro").textContent =
    `This is your first sign-in with ${signedIn.title}: choose the username of your new PaperTrader account.`;
  show($("provider-username-result"), problem, problem ? "bad" : "");
  $("provider-username-form").hidden = false;
  $("provider-username").focus();
}

function hideUsernameForm() {
  state.unnamed = null;
  $("provider-username-form").hidden = true;
}

async function chooseUsername(event) {
  event.preventDefault();
  const username = $("provider-username").value.trim();
  if (!username) return show($("provider-username-result"), "Type the username you want.", "bad");
  if (state.unnamed === null) return hideUsernameForm();
  await busy($("provider-username-submit"), () => providerLogin(state.unnamed, username));
}

function offerLink() {
  const linkable = state.linkable;
  $("link-offer").hidden = linkable === null;
  if (linkable === null) return;
  $("link-offer-title").textContent = `Link ${linkable.title} to ${state.trader.session.username}?`;
  $("link-offer-text").textContent =
    `You came here with a ${linkable.title} sign-in. Link it to ${state.trader.session.username}, ` +
    `and "Sign in with ${linkable.title}" opens this account from now on.`;
  show($("link-offer-result"), "");
  $("link-offer-accept").hidden = false;
  $("link-offer-decline").textContent = "Not now";
  $("link-offer-title").focus();
}

async function acceptLink() {
  const linkable = state.linkable;
  if (linkable === null) return;
  await busy($("link-offer-accept"), async () => {
    try {
      const said = await state.trader.linkProvider(linkable.provider, linkable.idToken, linkable.nonce);
      show($("link-offer-result"), `${said.charAt(0).toUpperCase()}${said.slice(1)}.`, "ok");
    } catch (error) {
      show($("link-offer-result"), explain(error), "bad");
    }
  });
  state.linkable = null;
  $("link-offer-accept").hidden = true;
  $("link-offer-decline").textContent = "Close";
}

function closeLinkOffer() {
  state.linkable = null;
  $("link-offer").hidden = true;
}

async function register(event) {
  event.preventDefault();
  const result = $("register-result");
  const username = $("register-username").value.trim();
  const email = $("register-email").value.trim();
  const password = $("register-password").value;
  if (!username || !email || !password) return show(result, "Fill in the username, e-mail address and password.", "bad");
  await busy($("register-submit"), async () => {
    try {
      const name = await state.trader.register(username, email, password);
      show(result, `Welcome, ${name}: your account is ready. Signing you in…`, "ok");
      await state.trader.login(name, password, false);
      $("register-password").value = "";
      location.hash = "#/watchlist";
      route();
    } catch (error) {
      show(result, explain(error), "bad");
    }
  });
}

async function signOut() {
  closeLinkOffer();
  try {
    await state.trader.logout();
  } catch (error) {
    notice(explain(error));
  }
  location.hash = "#/";
  route();
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
  state.chart = new PriceChart($("chart"));
  state.trader = new Trader(location.origin, { region: state.config.region ?? null, onWorker, onSessionLost });
  state.competitions = new CompetitionsScreen(state.trader, { busy, show, explain, chosen: () => state.competition });
  state.equity = new EquityPanel(state.trader, (error) => {
    if (!(error instanceof ClientError && error.sessionProblem)) notice(explain(error));
  });
  $("signin-form").addEventListener("submit", signIn);
  $("register-form").addEventListener("submit", register);
  $("provider-username-form").addEventListener("submit", chooseUsername);
  $("provider-username-cancel").addEventListener("click", () => {
    hideUsernameForm();
    show($("provider-result"), "Canceled: no account was made.");
  });
  $("link-offer-accept").addEventListener("click", acceptLink);
  $("link-offer-decline").addEventListener("click", closeLinkOffer);
  $("signout").addEventListener("click", signOut);
  $("watch-add").addEventListener("submit", addToWatchlist);
  $("asset-pick").addEventListener("submit", (event) => {
    event.preventDefault();
    const symbol = symbolOf($("asset-symbol").value);
    if (symbol === null) return;
    location.hash = `#/trade/${encodeURIComponent(symbol)}`;
  });
  for (const button of document.querySelectorAll("#chart-ranges button")) {
    button.addEventListener("click", () => chooseRange(button.dataset.range));
  }
  $("forecast-toggle").addEventListener("change", () => {
    state.chartFor = null;
    refresh();
  });
  $("ticket-symbol").addEventListener("input", updateEstimate);
  $("ticket-quantity").addEventListener("input", updateEstimate);
  $("ticket").addEventListener("submit", placeOrder);
  $("ticket-type").addEventListener("change", showTypeFields);
  $("ticket-account").addEventListener("change", () => refreshOrders().catch((error) => notice(explain(error))));
  $("ticket-limit").addEventListener("input", updateEstimate);
  $("ticket-retry").addEventListener("click", () => state.unsentTicket && sendTicket(state.unsentTicket));
  $("join-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const code = $("join-code").value.trim();
    if (!code) return show($("join-result"), "Type the join code you were given, such as K7QPM2XD.", "bad");
    state.competitions.join("", code, $("join-submit"));
  });
  window.addEventListener("hashchange", () => {
    state.chartFor = null;
    route();
    // A new screen: move keyboard and screen-reader focus to its heading.
    document.querySelector(`#screen-${state.screen} h1`)?.focus();
  });
  try {
    await state.trader.start(); // connects, and resumes a stored session
  } catch (error) {
    if (!(error instanceof ClientError && error.sessionProblem)) notice(explain(error));
  }
  await loadProviders();
  route();
  await finishProvider(providerAnswer);
  document.body.dataset.ready = "true";
}

main();
