// The one error type of the codec, with the protocol's numeric codes.

import { ERROR_CODES } from "./tables.js";

const NAMES = Object.fromEntries(Object.entries(ERROR_CODES).map(([name, code]) => [code, name]));

/** Anything wrong with bytes or messages; ``fatal`` when the framing is lost. */
export class ProtocolError extends Error {
  constructor(code, reason, { fatal = false, header = null } = {}) {
    super(`${NAMES[code] ?? code}: ${reason}`);
    this.name = "ProtocolError";
    this.code = code;
    this.reason = reason;
    this.fatal = fatal;
    this.header = header;
  }
}

/** We were about to send something the protocol does not allow (a bug on our side). */
export class LocalProtocolError extends ProtocolError {
  constructor(code, reason) {
    super(code, reason);
    this.name = "LocalProtocolError";
  }
}

export const ErrorCode = ERROR_CODES;

export function errorName(code) {
  return NAMES[code] ?? `error ${code}`;
}
