// Typed, length-prefixed values (docs/PROTOCOL.md section 4), little-endian.
//
// Decoded values: STR string, INT bigint, DECIMAL Decimal, BOOL boolean,
// ID Uuid, DATE CalendarDate, TIMESTAMP Timestamp, BYTES Uint8Array,
// LIST Array. Encoding takes the type from the instruction's schema; inside
// a LIST it is inferred from the JavaScript value, and a JavaScript number
// that is not a whole number is refused: money never travels as a float.

import { Decimal } from "./decimal.js";
import { ErrorCode, ProtocolError } from "./errors.js";
import { MAX_DECIMAL_TEXT, MAX_LIST_DEPTH, VALUE_TYPES as T } from "./tables.js";
import { CalendarDate, Timestamp, Uuid } from "./types.js";

const TYPE_NAMES = Object.fromEntries(Object.entries(T).map(([name, tag]) => [tag, name]));
const DECIMAL_RE = /^-?[0-9]+(\.[0-9]+)?$/;
const I64_MIN = -(2n ** 63n);
const I64_MAX = 2n ** 63n - 1n;
const utf8 = new TextEncoder();
// A UTF-16 surrogate without its partner cannot be encoded as UTF-8.
const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;
const strictUtf8 = new TextDecoder("utf-8", { fatal: true });

function bad(reason) {
  return new ProtocolError(ErrorCode.BAD_ARGUMENT, reason);
}

/** A growing byte buffer with little-endian writers. */
export class Writer {
  constructor(size = 256) {
    this.buffer = new Uint8Array(size);
    this.view = new DataView(this.buffer.buffer);
    this.length = 0;
  }

  #room(extra) {
    if (this.length + extra <= this.buffer.length) return;
    let size = this.buffer.length * 2;
    while (size < this.length + extra) size *= 2;
    const grown = new Uint8Array(size);
    grown.set(this.buffer.subarray(0, this.length));
    this.buffer = grown;
    this.view = new DataView(grown.buffer);
  }

  u8(n) { this.#room(1); this.view.setUint8(this.length, n); this.length += 1; }
  u16(n) { this.#room(2); this.view.setUint16(this.length, n, true); this.length += 2; }
  u32(n) { this.#room(4); this.view.setUint32(this.length, n, true); this.length += 4; }
  i64(n) { this.#room(8); this.view.setBigInt64(this.length, n, true); this.length += 8; }
  raw(bytes) { this.#room(bytes.length); this.buffer.set(bytes, this.length); this.length += bytes.length; }

  bytes() {
    return this.buffer.slice(0, this.length);
  }
}

/** The wire type a JavaScript value is sent as inside a LIST. */
export function inferType(value) {
  if (typeof value === "boolean") return T.BOOL;
  if (typeof value === "bigint") return T.INT;
  if (typeof value === "number") {
    if (Number.isSafeInteger(value)) return T.INT;
    throw bad(`cannot send ${value}: numbers travel as INT (whole) or DECIMAL (a Decimal), never as a float`);
  }
  if (typeof value === "string") return T.STR;
  if (value instanceof Decimal) return T.DECIMAL;
  if (value instanceof Uuid) return T.ID;
  if (value instanceof CalendarDate) return T.DATE;
  if (value instanceof Timestamp) return T.TIMESTAMP;
  if (value instanceof Uint8Array) return T.BYTES;
  if (Array.isArray(value)) return T.LIST;
  throw bad(`cannot send a value of type ${value === null ? "null" : typeof value}`);
}

function asInt(value) {
  let big;
  if (typeof value === "bigint") big = value;
  else if (typeof value === "number" && Number.isSafeInteger(value)) big = BigInt(value);
  else throw bad(`INT needs a whole number, not ${String(value).slice(0, 40)}`);
  if (big < I64_MIN || big > I64_MAX) throw bad("integer does not fit in 64 bits");
  return big;
}

/** Append the tagged encoding of ``value`` as wire type ``type`` (a tag number). */
export function encodeValue(type, value, writer, depth = 0) {
  writer.u8(type);
  switch (type) {
    case T.BOOL:
      if (typeof value !== "boolean") throw bad("BOOL needs true or false");
      writer.u8(value ? 1 : 0);
      return;
    case T.INT:
      writer.i64(asInt(value));
      return;
    case T.STR: {
      if (typeof value !== "string") throw bad("STR needs a string");
      if (LONE_SURROGATE.test(value)) throw bad("string is not valid Unicode");
      const raw = utf8.encode(value);
      writer.u32(raw.length);
      writer.raw(raw);
      return;
    }
    case T.DECIMAL: {
      const decimal = value instanceof Decimal ? value : null;
      if (decimal === null) throw bad("DECIMAL needs a Decimal (exact), not a JavaScript number");
      const text = decimal.toString();
      if (text.length > MAX_DECIMAL_TEXT) throw bad(`decimal has more than ${MAX_DECIMAL_TEXT} characters`);
      writer.u16(text.length);
      writer.raw(utf8.encode(text));
      return;
    }
    case T.ID:
      if (!(value instanceof Uuid)) throw bad("ID needs a Uuid");
      writer.raw(value.bytes());
      return;
    case T.TIMESTAMP:
      if (!(value instanceof Timestamp)) throw bad("TIMESTAMP needs a Timestamp");
      writer.i64(value.micros);
      return;
    case T.DATE:
      if (!(value instanceof CalendarDate)) throw bad("DATE needs a CalendarDate");
      writer.u16(value.year);
      writer.u8(value.month);
      writer.u8(value.day);
      return;
    case T.BYTES:
      if (!(value instanceof Uint8Array)) throw bad("BYTES needs a Uint8Array");
      writer.u32(value.length);
      writer.raw(value);
      return;
    case T.LIST:
      if (!Array.isArray(value)) throw bad("LIST needs an array");
      if (depth >= MAX_LIST_DEPTH) throw bad(`lists nest deeper than ${MAX_LIST_DEPTH}`);
      writer.u32(value.length);
      for (const item of value) encodeValue(inferType(item), item, writer, depth + 1);
      return;
    default:
      throw bad(`unknown value type ${type}`);
  }
}

/** A cursor over a data field; every read checks the bounds first. */
export class Reader {
  constructor(bytes) {
    this.bytes = bytes;
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    this.pos = 0;
  }

  get left() {
    return this.bytes.length - this.pos;
  }

  #need(size, what) {
    if (this.pos + size > this.bytes.length) throw bad(`${what} runs past the end of the data field`);
  }

  take(size, what) {
    this.#need(size, what);
    const chunk = this.bytes.slice(this.pos, this.pos + size);
    this.pos += size;
    return chunk;
  }

  u8(what) { this.#need(1, what); const v = this.view.getUint8(this.pos); this.pos += 1; return v; }
  u16(what) { this.#need(2, what); const v = this.view.getUint16(this.pos, true); this.pos += 2; return v; }
  u32(what) { this.#need(4, what); const v = this.view.getUint32(this.pos, true); this.pos += 4; return v; }
  i64(what) { this.#need(8, what); const v = this.view.getBigInt64(this.pos, true); this.pos += 8; return v; }

  value(depth = 0) {
    const tag = this.u8("type tag");
    switch (tag) {
      case T.BOOL: {
        const flag = this.u8("bool");
        if (flag > 1) throw bad(`bool byte is ${flag}, not 0 or 1`);
        return flag === 1;
      }
      case T.INT:
        return this.i64("int");
      case T.STR: {
        const size = this.u32("string length");
        try {
          return strictUtf8.decode(this.take(size, "string"));
        } catch (error) {
          if (error instanceof ProtocolError) throw error;
          throw bad("string is not valid UTF-8");
        }
      }
      case T.DECIMAL: {
        const size = this.u16("decimal length");
        if (size > MAX_DECIMAL_TEXT) throw bad(`decimal has more than ${MAX_DECIMAL_TEXT} characters`);
        const text = String.fromCharCode(...this.take(size, "decimal"));
        if (!DECIMAL_RE.test(text)) throw bad("decimal is not plain decimal text");
        return Decimal.parse(text);
      }
      case T.ID:
        return Uuid.fromBytes(this.take(16, "id"));
      case T.TIMESTAMP: {
        const micros = this.i64("timestamp");
        try {
          return new Timestamp(micros);
        } catch {
          throw bad(`timestamp ${micros} is out of range`);
        }
      }
      case T.DATE: {
        const year = this.u16("date");
        const month = this.u8("date");
        const day = this.u8("date");
        try {
          return new CalendarDate(year, month, day);
        } catch {
          throw bad(`${year}-${month}-${day} is not a date`);
        }
      }
      case T.BYTES:
        return this.take(this.u32("bytes length"), "bytes");
      case T.LIST: {
        if (depth >= MAX_LIST_DEPTH) throw bad(`lists nest deeper than ${MAX_LIST_DEPTH}`);
        const count = this.u32("list count");
        if (count > this.left) throw bad("list count is larger than the data left");
        const items = [];
        for (let i = 0; i < count; i += 1) items.push(this.value(depth + 1));
        return items;
      }
      default:
        throw bad(`unknown value type tag ${tag}`);
    }
  }
}

/** The wire type name of a tag (for messages). */
export function typeName(tag) {
  return TYPE_NAMES[tag] ?? `tag ${tag}`;
}

/** Decode exactly ``count`` values that fill ``bytes`` completely. */
export function decodeValues(bytes, count) {
  const reader = new Reader(bytes);
  const values = [];
  for (let i = 0; i < count; i += 1) values.push(reader.value());
  if (reader.left !== 0) {
    throw new ProtocolError(ErrorCode.TRAILING_DATA, `${reader.left} bytes left after ${count} arguments`);
  }
  return values;
}

/** A data-transfer payload: one value (usually a list). */
export function encodePayload(value, type = inferType(value)) {
  const writer = new Writer();
  encodeValue(type, value, writer);
  return writer.bytes();
}

export function decodePayload(bytes) {
  return decodeValues(bytes, 1)[0];
}
