// The protocol's value types that JavaScript has no exact built-in for.
//
// INT is a BigInt (i64 does not fit a JavaScript number); DECIMAL is a
// Decimal (decimal.js); ID, DATE and TIMESTAMP are the small classes here, so
// a decoded value always says which wire type it came from and encodes back
// to the same bytes.

const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/** A UUID (ID values, session ids, order ids): 16 bytes in RFC 4122 order. */
export class Uuid {
  constructor(text) {
    const lower = String(text).toLowerCase();
    if (!UUID_RE.test(lower)) throw new RangeError(`not a UUID: ${String(text).slice(0, 40)}`);
    this.text = lower;
    Object.freeze(this);
  }

  static fromBytes(bytes) {
    if (bytes.length !== 16) throw new RangeError("a UUID is 16 bytes");
    const hex = Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
    return new Uuid(`${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`);
  }

  static random() {
    const bytes = new Uint8Array(16);
    globalThis.crypto.getRandomValues(bytes);
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    return Uuid.fromBytes(bytes);
  }

  bytes() {
    const hex = this.text.replaceAll("-", "");
    const out = new Uint8Array(16);
    for (let i = 0; i < 16; i += 1) out[i] = parseInt(hex.slice(2 * i, 2 * i + 2), 16);
    return out;
  }

  isNil() {
    return this.text === NIL_TEXT;
  }

  equals(other) {
    return other instanceof Uuid && other.text === this.text;
  }

  toString() {
    return this.text;
  }

  toJSON() {
    return this.text;
  }
}

const NIL_TEXT = "00000000-0000-0000-0000-000000000000";
export const NIL = new Uuid(NIL_TEXT);

/** A calendar date (DATE): year 1..9999, a real day. */
export class CalendarDate {
  constructor(year, month, day) {
    const probe = new Date(Date.UTC(2000, month - 1, day));
    probe.setUTCFullYear(year);
    if (!Number.isInteger(year) || year < 1 || year > 9999 || probe.getUTCMonth() !== month - 1 || probe.getUTCDate() !== day) {
      throw new RangeError(`${year}-${month}-${day} is not a date`);
    }
    this.year = year;
    this.month = month;
    this.day = day;
    Object.freeze(this);
  }

  static parse(text) {
    const match = /^(\d{4})-(\d{2})-(\d{2})$/.exec(text);
    if (match === null) throw new RangeError(`not a YYYY-MM-DD date: ${text}`);
    return new CalendarDate(Number(match[1]), Number(match[2]), Number(match[3]));
  }

  /** The UTC date of a JavaScript Date (the server's ranges are UTC days). */
  static utcOf(date) {
    return new CalendarDate(date.getUTCFullYear(), date.getUTCMonth() + 1, date.getUTCDate());
  }

  toString() {
    const pad = (n, w) => String(n).padStart(w, "0");
    return `${pad(this.year, 4)}-${pad(this.month, 2)}-${pad(this.day, 2)}`;
  }

  toJSON() {
    return this.toString();
  }
}

export const MIN_MICROS = -62135596800000000n; // 0001-01-01T00:00:00Z
export const MAX_MICROS = 253402300799999999n; // 9999-12-31T23:59:59.999999Z

/** A moment (TIMESTAMP): microseconds since 1970-01-01T00:00:00Z, exact. */
export class Timestamp {
  constructor(micros) {
    const value = BigInt(micros);
    if (value < MIN_MICROS || value > MAX_MICROS) throw new RangeError(`timestamp ${value} is outside years 1-9999`);
    this.micros = value;
    Object.freeze(this);
  }

  static fromDate(date) {
    return new Timestamp(BigInt(date.getTime()) * 1000n);
  }

  /** Millisecond precision is all a Date holds: for display only. */
  toDate() {
    const millis = this.micros / 1000n - (this.micros < 0n && this.micros % 1000n !== 0n ? 1n : 0n);
    return new Date(Number(millis));
  }

  /** ISO 8601 in UTC with the microseconds, e.g. 2025-01-01T12:00:00.123456Z. */
  toISOString() {
    const iso = this.toDate().toISOString(); // ...:SS.mmmZ
    const micros = ((this.micros % 1000000n) + 1000000n) % 1000000n;
    return `${iso.slice(0, 19)}.${micros.toString().padStart(6, "0")}Z`;
  }

  toString() {
    return this.toISOString();
  }

  toJSON() {
    return this.toISOString();
  }
}
