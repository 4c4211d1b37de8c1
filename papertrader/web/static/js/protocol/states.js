// The connection state machine of docs/PROTOCOL.md section 7, in one table (from tables.js).
//
// Client and server run the same machine over the same messages, so both
// always agree on the state without it travelling on the wire. Connection is
// sans-IO like the Python one: it never touches a socket; the transport feeds
// it bytes and sends the bytes it returns.

import { ErrorCode, LocalProtocolError, ProtocolError } from "./errors.js";
import { FrameDecoder, encodeMessage, messageType } from "./frames.js";
import { CLIENT_EVENTS, CONNECTION_STATES, DEFAULT_MAX_DATA_SIZE, STATES, TRANSITIONS } from "./tables.js";

const TABLE = new Map(TRANSITIONS.map(([state, event, target]) => [`${state}/${event}`, target]));
const FROM_CLIENT = new Set(CLIENT_EVENTS);
const RETURN_EVENTS = {
  STATE_SWITCH_SUCCESS: "SWITCH_OK",
  STATE_SWITCH_FAIL: "SWITCH_FAIL",
  DATA_FAIL: "DATA_FAIL",
  ERROR: "ERROR",
};

/** The event (a name of EVENTS) a message stands for. */
export function classify(msg) {
  const type = messageType(msg.instruction);
  if (type === "COMMAND") return "COMMAND_REQUEST";
  if (type === "DATA_TRANSFER") return "DATA_REQUEST";
  if (msg.instruction === "GET_WORKER_LIST") return "WORKER_LIST_REQUEST";
  if (msg.instruction === "SWITCH_STATE") {
    const target = BigInt(msg.args[0]);
    if (target === BigInt(CONNECTION_STATES.DATA_TRANSFER)) return "SWITCH_TO_DATA";
    if (target === BigInt(CONNECTION_STATES.COMMAND)) return "SWITCH_TO_COMMAND";
    throw new ProtocolError(ErrorCode.BAD_ARGUMENT, `switchState to ${target}: the states are 0 (command) and 1 (data transfer)`);
  }
  if (msg.instruction === "DATA") return msg.packetNumber === msg.packetMax ? "LAST_PACKET" : "PACKET";
  return RETURN_EVENTS[msg.instruction] ?? "COMMAND_RETURN";
}

export const Role = Object.freeze({ CLIENT: "client", SERVER: "server" });

/** One side of a connection. */
export class Connection {
  constructor(role = Role.CLIENT, maxDataSize = DEFAULT_MAX_DATA_SIZE) {
    this.role = role;
    this.state = "COMMAND";
    this.maxDataSize = maxDataSize;
    this.decoder = new FrameDecoder(maxDataSize);
  }

  /** The state's readable name, e.g. "data transfer". */
  get stateName() {
    return STATES[this.state];
  }

  receiveData(bytes) {
    this.decoder.receiveData(bytes);
  }

  /** The peer's next message after moving the state machine, or null for "need more bytes". */
  nextMessage() {
    const msg = this.decoder.nextMessage();
    if (msg === null) return null;
    const event = classify(msg);
    if (FROM_CLIENT.has(event) !== (this.role === Role.SERVER)) {
      throw new ProtocolError(ErrorCode.TYPE_MISMATCH, `${msg.instruction} is not something a ${this.role === Role.SERVER ? "client" : "server"} sends`);
    }
    this.#apply(event, msg, ProtocolError);
    return msg;
  }

  /** The bytes of ``msg``; LocalProtocolError if it may not be sent now. */
  send(msg) {
    let event;
    try {
      event = classify(msg);
    } catch (error) {
      throw new LocalProtocolError(error.code, error.reason);
    }
    if (FROM_CLIENT.has(event) !== (this.role === Role.CLIENT)) {
      throw new LocalProtocolError(ErrorCode.TYPE_MISMATCH, `a ${this.role} does not send ${msg.instruction}`);
    }
    const bytes = encodeMessage(msg, this.maxDataSize);
    this.#apply(event, msg, LocalProtocolError);
    return bytes;
  }

  #apply(event, msg, ErrorType) {
    const target = TABLE.get(`${this.state}/${event}`);
    if (target === undefined) {
      throw new ErrorType(ErrorCode.WRONG_STATE, `${msg.instruction} is not valid in the ${STATES[this.state]} state`);
    }
    this.state = target;
  }
}
