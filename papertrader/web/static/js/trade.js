// The trade screen: an asset's quote and chart over a chosen range (with the forecast band
// when asked), the order ticket with its estimate, and the open orders with their Cancel
// buttons, for the practice account or a competition account.

import { PriceChart } from "./chart.js";
import { ClientError } from "./client.js";
import { cell, moment, money, quantity, signedMoney } from "./format.js";
import { $, busy, explain, notice, option, placeholderRow, show, symbolOf } from "./page.js";
import { Decimal, Uuid } from "./protocol/index.js";
import { OrderOutcomeUnknown } from "./trader.js";

function ticketQuantity() {
  const text = $("ticket-quantity").value.trim();
  return /^[1-9][0-9]{0,8}$/.test(text) ? BigInt(text) : null;
}

function priceOf(id) {
  const text = $(id).value.trim();
  return Decimal.isText(text) && Decimal.parse(text).compare(0) > 0 ? Decimal.parse(text) : null;
}

function accountName() {
  return $("ticket-account").value;
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

export class TradeScreen {
  /** ``app``: what the page owns: ``refresh()``, which refreshes the screen shown and sets
   *  its next update; ``firstSymbol()``, the symbol to show when none was chosen;
   *  ``lastPrice``, the last close seen of each symbol (the watchlist's too); and
   *  ``updateInterval()``, in seconds. */
  constructor(trader, app) {
    this.trader = trader;
    this.app = app;
    this.chart = new PriceChart($("chart"));
    this.symbol = null;
    this.range = "day";
    this.chartFor = null; // what the chart shows: symbol/range/forecast
    this.accountsStale = true;
    this.unsentTicket = null;
    $("asset-pick").addEventListener("submit", (event) => {
      event.preventDefault();
      const symbol = symbolOf($("asset-symbol").value);
      if (symbol === null) return;
      location.hash = `#/trade/${encodeURIComponent(symbol)}`;
    });
    for (const button of document.querySelectorAll("#chart-ranges button")) {
      button.addEventListener("click", () => this.#chooseRange(button.dataset.range));
    }
    $("forecast-toggle").addEventListener("change", () => {
      this.chartFor = null;
      app.refresh();
    });
    $("ticket-symbol").addEventListener("input", () => this.#updateEstimate());
    $("ticket-quantity").addEventListener("input", () => this.#updateEstimate());
    $("ticket").addEventListener("submit", (event) => this.#placeOrder(event));
    $("ticket-type").addEventListener("change", () => this.#showTypeFields());
    $("ticket-account").addEventListener("change", () => this.#refreshOrders().catch((error) => notice(explain(error))));
    $("ticket-limit").addEventListener("input", () => this.#updateEstimate());
    $("ticket-retry").addEventListener("click", () => this.unsentTicket && this.#sendTicket(this.unsentTicket));
  }

  /** The symbol the address names, on the screen and in the ticket. */
  choose(symbol) {
    if (symbol === this.symbol) return;
    this.symbol = symbol;
    $("asset-symbol").value = symbol;
    $("ticket-symbol").value = symbol;
  }

  async refresh() {
    const symbol = this.symbol ?? this.app.firstSymbol();
    if (!symbol) return;
    this.symbol = symbol;
    $("asset-title").textContent = `Trade ${symbol}`;
    $("asset-symbol").value ||= symbol;
    if (!$("ticket-symbol").value) $("ticket-symbol").value = symbol;
    const quote = await this.trader.quote(symbol);
    this.app.lastPrice.set(symbol, quote.close);
    $("asset-quote").textContent = `${symbol} ${money(quote.close)} at ${moment(quote.time)} UTC`;
    this.#updateEstimate();
    if (this.accountsStale !== false) await this.#refreshAccounts();
    await this.#refreshOrders();
    if (this.chartFor !== `${symbol}/${this.range}/${$("forecast-toggle").checked}`) await this.#drawChart(symbol);
  }

  /** The ticket's accounts: the practice account, and each running competition one is in. */
  async #refreshAccounts() {
    let running = [];
    try {
      running = (await this.trader.competitions()).filter((c) => c.joined && c.status === "running");
    } catch (error) {
      if (!(error instanceof ClientError) || error.sessionProblem) throw error;
    }
    const select = $("ticket-account");
    const chosen = select.value;
    select.replaceChildren(option("", "Practice account"), ...running.map((c) => option(c.name, `${c.name} (competition)`)));
    select.value = running.some((c) => c.name === chosen) ? chosen : "";
    $("ticket-account-row").hidden = running.length === 0;
    this.accountsStale = false;
  }

  async #drawChart(symbol) {
    const range = this.range;
    const caption = $("chart-caption");
    let bars = [];
    try {
      bars = await this.trader.bars(symbol, range);
    } catch (error) {
      if (!(error instanceof ClientError) || error.sessionProblem) throw error;
      caption.textContent = error.reason;
    }
    let forecast = null;
    if ($("forecast-toggle").checked) {
      try {
        forecast = await this.trader.forecast(symbol, 30);
      } catch (error) {
        if (!(error instanceof ClientError) || error.sessionProblem) throw error;
      }
    }
    const last = bars.at(-1);
    const label = bars.length
      ? `${symbol}, ${range}: ${bars.length} bar${bars.length === 1 ? "" : "s"} from ${moment(bars[0].period_start)} to ${moment(last.period_start)} UTC, last close ${money(last.close)}` +
        (forecast ? `; forecast for ${forecast.points.length} updates, ending at ${money(forecast.points.at(-1).value)} (between ${money(forecast.points.at(-1).lower)} and ${money(forecast.points.at(-1).upper)})` : "")
      : `${symbol}, ${range}: no price history yet`;
    this.chart.draw(bars, forecast, label);
    if (bars.length) caption.textContent = label;
    this.chartFor = `${symbol}/${range}/${$("forecast-toggle").checked}`;
  }

  #chooseRange(range) {
    this.range = range;
    for (const button of document.querySelectorAll("#chart-ranges button")) {
      button.setAttribute("aria-pressed", String(button.dataset.range === range));
    }
    this.chartFor = null;
    this.app.refresh();
  }

  #showTypeFields() {
    const type = $("ticket-type").value;
    $("ticket-limit-row").hidden = !(type === "limit" || type === "stop_limit");
    $("ticket-stop-row").hidden = !(type === "stop" || type === "stop_limit");
    this.#updateEstimate();
  }

  #updateEstimate() {
    const symbol = symbolOf($("ticket-symbol").value);
    const qty = ticketQuantity();
    const type = $("ticket-type").value;
    const last = symbol ? this.app.lastPrice.get(symbol) : undefined;
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

  async #refreshOrders() {
    const result = $("orders-result");
    let orders;
    try {
      orders = await this.trader.orders("open", 50, accountName());
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
      cancel.addEventListener("click", () => this.#cancelOrder(order, cancel));
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
    if (rows.length === 0) rows.push(placeholderRow("No open orders: limit and stop orders wait here until their price comes.", 7));
    // Rows are replaced only when what they show has changed: a refresh every update
    // interval must not take a Cancel button away under the pointer or the keyboard focus.
    const shown = orders.map((order) => order.order_id).join(",") + "\n" + rows.map((row) => row.textContent).join("\n");
    const body = $("orders-table").tBodies[0];
    if (body.dataset.shown === shown) return;
    body.dataset.shown = shown;
    body.replaceChildren(...rows);
  }

  async #cancelOrder(order, button) {
    const result = $("orders-result");
    await busy(button, async () => {
      try {
        const canceled = await this.trader.cancelOrder(order.order_id);
        show(result, `The ${describeOrder(canceled)} order is ${canceled.status}. Order ${canceled.order_id}.`, "ok");
      } catch (error) {
        show(result, error instanceof OrderOutcomeUnknown ? error.message : explain(error), "bad");
      }
    });
    await this.#refreshOrders();
  }

  async #sendTicket(ticket) {
    const result = $("ticket-result");
    const retry = $("ticket-retry");
    retry.hidden = true;
    const waits = ticket.type === "market" ? `Market orders fill at the next update (within ${this.app.updateInterval()} s).` : "";
    show(result, `Sending: ${ticket.side} ${quantity(ticket.quantity)} ${ticket.symbol}. ${waits}`);
    await busy($("ticket-submit"), async () => {
      try {
        const order = await this.trader.placeOrder(ticket);
        const [text, kind] = orderOutcome(order);
        show(result, ticket.competition ? `${text} In ${ticket.competition}.` : text, kind);
      } catch (error) {
        if (error instanceof OrderOutcomeUnknown) {
          show(result, `Outcome unknown: ${error.message}`, "unknown");
          this.unsentTicket = ticket; // the same client order id: sending it again is safe
          retry.hidden = false;
        } else if (error instanceof ClientError) {
          const id = error.orderId && !error.orderId.isNil() ? ` (order ${error.orderId})` : "";
          show(result, `Not done: ${explain(error)}${id}`, "bad");
        } else {
          show(result, explain(error), "bad");
        }
      }
    });
    await this.#refreshOrders().catch(() => undefined);
  }

  async #placeOrder(event) {
    event.preventDefault();
    const [ticket, problem] = ticketFromForm();
    if (ticket === null) return show($("ticket-result"), problem, "bad");
    await this.#sendTicket(ticket);
  }
}
