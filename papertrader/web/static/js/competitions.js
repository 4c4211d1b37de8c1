// The competitions screen (docs/PROTOCOL.md section 16): the competitions the user may see,
// joining one by name or by code, the chosen one's leaderboard and, for a member, their
// account in it (cash, positions, place).

import { ClientError } from "./client.js";
import { cell, className, moment, money, quantity, signedMoney } from "./format.js";
import { $, busy, explain, placeholderRow, show } from "./page.js";

export function competitionLink(competition) {
  return `#/competitions/${encodeURIComponent(competition.name)}`;
}

export class CompetitionsScreen {
  /** ``app``: ``chosen()``, the competition the address names (or null). */
  constructor(trader, app) {
    this.trader = trader;
    this.app = app;
  }

  async refresh() {
    const competitions = await this.trader.competitions();
    const named = this.app.chosen();
    const rows = competitions.map((c) => this.#row(c, named));
    if (rows.length === 0) rows.push(placeholderRow("No competitions yet: join one with the code you were given.", 6));
    $("competitions-table").tBodies[0].replaceChildren(...rows);
    const chosen = competitions.find((c) => c.name === named) ?? competitions.find((c) => c.joined) ?? competitions[0];
    if (!chosen) {
      $("leaderboard-card").hidden = true;
      $("my-competition-card").hidden = true;
      return;
    }
    await this.#leaderboard(chosen);
    await this.#account(chosen);
  }

  #row(c, named) {
    const row = document.createElement("tr");
    const name = document.createElement("td");
    const link = document.createElement("a");
    link.href = competitionLink(c);
    link.textContent = c.name;
    link.setAttribute("aria-label", `${c.name}: show its leaderboard`);
    if (c.name === named) link.setAttribute("aria-current", "true");
    name.append(link);
    const kind = c.private ? "private" : "public";
    const actions = document.createElement("td");
    if (c.joined) {
      actions.textContent = "You are in it";
    } else if (!c.private && c.status !== "ended") {
      const join = document.createElement("button");
      join.type = "button";
      join.textContent = "Join";
      join.setAttribute("aria-label", `Join ${c.name}`);
      join.addEventListener("click", () => this.join(c.name, "", join));
      actions.append(join);
    } else if (c.join_code) {
      actions.textContent = `Join code ${c.join_code}`;
    }
    const assets = c.symbols.length ? c.symbols.join(", ") : "every asset";
    row.title = `${kind}; trades ${assets}`;
    row.append(
      name,
      cell(`${c.status} (${kind})`),
      cell(moment(c.ends_at), "hide-narrow"),
      cell(money(c.starting_cash), "num hide-narrow"),
      cell(quantity(c.members), "num"),
      actions,
    );
    return row;
  }

  async #leaderboard(competition) {
    const board = await this.trader.leaderboard(competition.name);
    $("leaderboard-card").hidden = false;
    $("leaderboard-title").textContent = `Leaderboard: ${board.competition}`;
    const members = `${quantity(board.members)} member${board.members === 1n ? "" : "s"}`;
    const you = board.your_rank !== null && board.your_rank !== undefined ? `You are #${board.your_rank} of ${members}.` : `${members[0].toUpperCase()}${members.slice(1)}.`;
    const assets = competition.symbols.length ? competition.symbols.join(", ") : "every asset";
    const priced = board.priced_at ? ` Prices of ${moment(board.priced_at)} UTC.` : "";
    $("leaderboard-summary").textContent = `${you} ${board.status[0].toUpperCase()}${board.status.slice(1)}: ${moment(competition.starts_at)} to ${moment(competition.ends_at)} UTC; starting cash ${money(board.starting_cash)}; trades ${assets}.${priced}`;
    const rows = board.entries.map((e) => {
      const row = document.createElement("tr");
      if (e.username === this.trader.session?.username) row.className = "mine";
      row.append(
        cell(String(e.rank), "num"),
        cell(String(e.username)),
        cell(money(e.equity), "num"),
        cell(signedMoney(e.gain), `num hide-narrow ${className(e.gain)}`),
        cell(`${signedMoney(e.return_percent)} %`, `num ${className(e.return_percent)}`),
      );
      return row;
    });
    if (rows.length === 0) rows.push(placeholderRow("No members yet.", 5));
    $("leaderboard-table").tBodies[0].replaceChildren(...rows);
  }

  /** A member's own account in the competition: cash, positions and place. */
  async #account(competition) {
    const card = $("my-competition-card");
    if (!competition.joined) {
      card.hidden = true;
      return;
    }
    let account = null;
    try {
      account = (await this.trader.competition(competition.name)).account;
    } catch (error) {
      if (!(error instanceof ClientError) || error.sessionProblem) throw error;
    }
    if (!account) {
      card.hidden = true;
      return;
    }
    card.hidden = false;
    $("my-competition-title").textContent = `Your account in ${competition.name}`;
    $("my-competition-summary").textContent = `Rank ${account.rank}: equity ${money(account.equity)} (cash ${money(account.cash)}); ${signedMoney(account.gain)} since the start (${signedMoney(account.return_percent)} %).`;
    const rows = account.positions.map((p) => {
      const row = document.createElement("tr");
      row.append(
        cell(String(p.symbol)),
        cell(quantity(p.quantity), "num"),
        cell(money(p.average_price), "num"),
        cell(money(p.price), "num"),
        cell(money(p.market_value), "num"),
      );
      return row;
    });
    if (rows.length === 0) rows.push(placeholderRow("No positions yet: trade in it from the Trade screen.", 5));
    $("my-competition-table").tBodies[0].replaceChildren(...rows);
  }

  async join(name, code, button) {
    const result = $("join-result");
    await busy(button, async () => {
      try {
        const joined = await this.trader.joinCompetition(name, code);
        $("join-code").value = "";
        show(result, `You are in ${joined.name}: your account there holds ${money(joined.starting_cash)} to start.`, "ok");
        if (location.hash === competitionLink(joined)) await this.refresh();
        else location.hash = competitionLink(joined);
      } catch (error) {
        show(result, explain(error), "bad");
      }
    });
  }
}
