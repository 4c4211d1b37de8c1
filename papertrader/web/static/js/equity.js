// The portfolio screen's equity chart: the value over time of the practice account or of
// a competition account of the user's (docs/PROTOCOL.md 13.9), over a chosen range.

import { EquityChart } from "./chart.js";
import { ClientError } from "./client.js";
import { moment, money } from "./format.js";
import { $, option } from "./page.js";

export class EquityPanel {
  /** ``onError`` shows what a refresh started by a click could not do. */
  constructor(trader, onError) {
    this.trader = trader;
    this.onError = onError;
    this.chart = new EquityChart($("equity-chart"));
    this.range = "week";
    for (const button of document.querySelectorAll("#equity-ranges button")) {
      button.addEventListener("click", () => {
        this.range = button.dataset.range;
        this.refresh().catch(onError);
      });
    }
    $("equity-account").addEventListener("change", () => this.refresh().catch(onError));
  }

  /** The accounts to chart: the practice account and every competition joined (an ended
   *  one keeps its history). The chooser shows only when there is a choice. */
  async refreshAccounts() {
    let joined = [];
    try {
      joined = (await this.trader.competitions()).filter((c) => c.joined);
    } catch (error) {
      if (!(error instanceof ClientError) || error.sessionProblem) throw error;
    }
    const select = $("equity-account");
    const chosen = select.value;
    select.replaceChildren(option("", "Practice account"), ...joined.map((c) => option(c.name, `${c.name} (competition)`)));
    select.value = joined.some((c) => c.name === chosen) ? chosen : "";
    $("equity-account-row").hidden = joined.length === 0;
  }

  async refresh() {
    for (const button of document.querySelectorAll("#equity-ranges button")) {
      button.setAttribute("aria-pressed", String(button.dataset.range === this.range));
    }
    const account = $("equity-account").value;
    const caption = $("equity-caption");
    const whose = account ? `${account} account` : "Practice account";
    let points = [];
    try {
      points = await this.trader.equityHistory(this.range, account);
    } catch (error) {
      if (!(error instanceof ClientError) || error.sessionProblem) throw error;
      this.chart.draw([], `${whose}: no equity chart`);
      caption.textContent = error.reason;
      return;
    }
    const last = points.at(-1);
    let label;
    if (points.length >= 2) {
      label = `${whose}, equity over the ${this.range}: ${points.length} points from ${moment(points[0].time)} to ${moment(last.time)} UTC; now ${money(last.equity)} (cash ${money(last.cash)})`;
    } else if (last) {
      label = `${whose}: equity now ${money(last.equity)} (cash ${money(last.cash)}); the chart fills in as the server records it, every few minutes`;
    } else {
      label = `${whose}: no equity recorded yet`;
    }
    this.chart.draw(points.length >= 2 ? points : [], label);
    caption.textContent = label;
  }
}
