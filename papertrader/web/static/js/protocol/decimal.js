// Exact decimal numbers for money: the wire's DECIMAL text, never a binary float.
//
// A Decimal is an integer number of units (BigInt) and a scale (digits after
// the point), exactly as written: "0.10" keeps its two places. Sums,
// differences and products are exact; rounding happens only when asked
// (toFixed, half to even like the server's money()). Money is shown from
// these, never from a JavaScript number.

const PATTERN = /^(-?)([0-9]+)(?:\.([0-9]+))?$/;

export class Decimal {
  /** @param {bigint} units  @param {number} scale */
  constructor(units, scale) {
    if (typeof units !== "bigint" || !Number.isInteger(scale) || scale < 0) {
      throw new TypeError("Decimal(units: bigint, scale: integer >= 0)");
    }
    this.units = units;
    this.scale = scale;
    Object.freeze(this);
  }

  /** Plain decimal text as on the wire: -?[0-9]+(.[0-9]+)? ; anything else throws. */
  static parse(text) {
    const match = PATTERN.exec(String(text).trim());
    if (match === null) throw new RangeError(`not a plain decimal number: ${String(text).slice(0, 40)}`);
    const [, sign, whole, fraction = ""] = match;
    const units = BigInt(whole + fraction);
    return new Decimal(sign === "-" ? -units : units, fraction.length);
  }

  /** A whole number (bigint, safe integer, or integer text). */
  static fromInteger(value) {
    if (typeof value === "number" && !Number.isSafeInteger(value)) {
      throw new RangeError(`${value} is not a safe whole number`);
    }
    return new Decimal(BigInt(value), 0);
  }

  static isText(text) {
    return PATTERN.test(String(text).trim());
  }

  #aligned(other) {
    const o = other instanceof Decimal ? other : Decimal.fromInteger(other);
    const scale = Math.max(this.scale, o.scale);
    return [this.units * 10n ** BigInt(scale - this.scale), o.units * 10n ** BigInt(scale - o.scale), scale];
  }

  add(other) {
    const [a, b, scale] = this.#aligned(other);
    return new Decimal(a + b, scale);
  }

  sub(other) {
    const [a, b, scale] = this.#aligned(other);
    return new Decimal(a - b, scale);
  }

  mul(other) {
    const o = other instanceof Decimal ? other : Decimal.fromInteger(other);
    return new Decimal(this.units * o.units, this.scale + o.scale);
  }

  /** -1, 0 or 1. */
  compare(other) {
    const [a, b] = this.#aligned(other);
    return a < b ? -1 : a > b ? 1 : 0;
  }

  isZero() {
    return this.units === 0n;
  }

  isNegative() {
    return this.units < 0n;
  }

  neg() {
    return new Decimal(-this.units, this.scale);
  }

  /** Rounded (half to even) or padded to ``places`` digits after the point. */
  toFixed(places) {
    if (places >= this.scale) {
      return new Decimal(this.units * 10n ** BigInt(places - this.scale), places);
    }
    const divisor = 10n ** BigInt(this.scale - places);
    const negative = this.units < 0n;
    const magnitude = negative ? -this.units : this.units;
    let quotient = magnitude / divisor;
    const twice = (magnitude % divisor) * 2n;
    if (twice > divisor || (twice === divisor && quotient % 2n === 1n)) quotient += 1n;
    return new Decimal(negative ? -quotient : quotient, places);
  }

  /** The wire text: no exponent, trailing zeros kept, never "-0". */
  toString() {
    const negative = this.units < 0n;
    let digits = (negative ? -this.units : this.units).toString();
    if (this.scale > 0) {
      digits = digits.padStart(this.scale + 1, "0");
      digits = `${digits.slice(0, -this.scale)}.${digits.slice(-this.scale)}`;
    }
    return negative && this.units !== 0n ? `-${digits}` : digits;
  }

  /** For display: thousands separated with commas, e.g. 12,345.60 (no rounding). */
  format() {
    const text = this.toString();
    const negative = text.startsWith("-");
    const [whole, fraction] = (negative ? text.slice(1) : text).split(".");
    const grouped = whole.replace(/\B(?=(\d{3})+(?!\d))/g, ",");
    return `${negative ? "-" : ""}${grouped}${fraction === undefined ? "" : `.${fraction}`}`;
  }

  /** Only for drawing (pixel positions on a chart), never for amounts shown or sent. */
  toNumberForPlotting() {
    return Number(this.toString());
  }

  toJSON() {
    return this.toString();
  }
}
