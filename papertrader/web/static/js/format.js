// How amounts and moments are shown: from exact values, never from floats.

import { Decimal, Timestamp } from "./protocol/index.js";

/** "12,345.60" from a Decimal: two places, more only when they are not zeros
 *  (a price stored with six places, 180.500000, shows as 180.50; 0.1234 stays). */
export function money(value) {
  if (value === null || value === undefined) return "—";
  let decimal = value instanceof Decimal ? value : Decimal.parse(String(value));
  while (decimal.scale > 2 && decimal.units % 10n === 0n) decimal = new Decimal(decimal.units / 10n, decimal.scale - 1);
  return (decimal.scale < 2 ? decimal.toFixed(2) : decimal).format();
}

/** A signed amount: "+1,234.50" or "-12.00". */
export function signedMoney(value) {
  const text = money(value);
  return value !== null && value !== undefined && !value.isNegative() && !value.isZero() ? `+${text}` : text;
}

/** A whole number with separators, from a bigint or number. */
export function quantity(value) {
  if (value === null || value === undefined) return "—";
  return Decimal.fromInteger(value).format();
}

/** "2025-01-31 14:05:09" in UTC (the server's clock). */
export function moment(value) {
  if (value === null || value === undefined) return "—";
  const iso = (value instanceof Timestamp ? value.toDate() : new Date(value)).toISOString();
  return `${iso.slice(0, 10)} ${iso.slice(11, 19)}`;
}

export function className(value) {
  if (!(value instanceof Decimal) || value.isZero()) return "";
  return value.isNegative() ? "down" : "up";
}

/** Cell helper: a <td> with text (never HTML). */
export function cell(text, classes = "") {
  const td = document.createElement("td");
  td.textContent = text;
  if (classes) td.className = classes;
  return td;
}
