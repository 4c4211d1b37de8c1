// Self-describing records inside payloads: a LIST of (name, value) pairs; an
// empty LIST is "no value" (null). As in Python, decoding is one level deep:
// a field that holds a record or a list of records is decoded by the caller,
// who knows the field (docs/PROTOCOL.md lists every record's fields).

import { ErrorCode, ProtocolError } from "./errors.js";

function isNull(value) {
  return Array.isArray(value) && value.length === 0;
}

/** A record as a plain object (empty LIST values become null). */
export function fromRecord(record) {
  if (!Array.isArray(record)) throw new ProtocolError(ErrorCode.BAD_ARGUMENT, "a record must be a list of (name, value) pairs");
  const fields = {};
  for (const pair of record) {
    if (!(Array.isArray(pair) && pair.length === 2 && typeof pair[0] === "string")) {
      throw new ProtocolError(ErrorCode.BAD_ARGUMENT, "a record field must be a (name, value) pair");
    }
    fields[pair[0]] = isNull(pair[1]) ? null : pair[1];
  }
  return fields;
}

/** A LIST of records. */
export function fromRecords(records) {
  if (!Array.isArray(records)) throw new ProtocolError(ErrorCode.BAD_ARGUMENT, "expected a list of records");
  return records.map(fromRecord);
}

/** A plain object as a record (null becomes the empty LIST; nested objects become records). */
export function toRecord(fields) {
  return Object.entries(fields).map(([name, value]) => [name, encodeField(value)]);
}

function encodeField(value) {
  if (value === null || value === undefined) return [];
  if (Array.isArray(value)) return value.map(encodeField);
  if (Object.getPrototypeOf(value) === Object.prototype) return toRecord(value);
  return value;
}
