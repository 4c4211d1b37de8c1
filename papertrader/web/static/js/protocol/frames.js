// Frames: the fixed 80-byte header and the data field (docs/PROTOCOL.md sections 2 and 8).
//
// A message is a plain object:
//   { instruction: "LOGIN", args: [...], requestId, sessionId, workerUuid,
//     clientAddress, timestamp, packetNumber, packetMax }
// where instruction is the name in INSTRUCTIONS, sessionId and workerUuid are
// Uuids, clientAddress is null or the address text ("203.0.113.7", "2001:db8::1"),
// timestamp a bigint of microseconds. ``message(...)`` fills the defaults.

import { ErrorCode, LocalProtocolError, ProtocolError } from "./errors.js";
import { DEFAULT_MAX_DATA_SIZE, HEADER_SIZE, INSTRUCTIONS, MESSAGE_TYPES, VALUE_TYPES } from "./tables.js";
import { NIL, Uuid } from "./types.js";
import { Reader, Writer, decodeValues, encodeValue, inferType, typeName } from "./values.js";

const MAGIC = [0x50, 0x54]; // "PT"
const VERSION = 1;
const BY_CODE = Object.fromEntries(Object.entries(INSTRUCTIONS).map(([name, info]) => [info.code, name]));
const TYPE_BY_CODE = Object.fromEntries(Object.entries(MESSAGE_TYPES).map(([name, code]) => [code, name]));
const MAX_ARGUMENTS = Math.max(...Object.values(INSTRUCTIONS).map((info) => info.args.length));

export { HEADER_SIZE };

/** A message with every header field defaulted (zero session, no stamp...). */
export function message(instruction, args = [], fields = {}) {
  if (!(instruction in INSTRUCTIONS)) throw new LocalProtocolError(ErrorCode.UNKNOWN_INSTRUCTION, `no instruction ${instruction}`);
  return {
    instruction,
    args,
    requestId: fields.requestId ?? 0,
    sessionId: fields.sessionId ?? NIL,
    workerUuid: fields.workerUuid ?? NIL,
    clientAddress: fields.clientAddress ?? null,
    timestamp: fields.timestamp ?? 0n,
    packetNumber: fields.packetNumber ?? 0,
    packetMax: fields.packetMax ?? 0,
  };
}

/** The message type (COMMAND, DATA_TRANSFER, CONTROL, RETURN, LINK) of an instruction: its high byte. */
export function messageType(instruction) {
  return TYPE_BY_CODE[INSTRUCTIONS[instruction].code >> 8];
}

/** An argument by its schema name. */
export function arg(msg, name) {
  const index = INSTRUCTIONS[msg.instruction].args.findIndex(([argName]) => argName === name);
  if (index < 0) throw new RangeError(`${msg.instruction} has no argument ${name}`);
  return msg.args[index];
}

// --- client address: 16 bytes, IPv4 as IPv4-mapped IPv6 ------------------------------

function addressBytes(text) {
  const out = new Uint8Array(16);
  if (text === null || text === undefined) return out;
  const v4 = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(text);
  if (v4 !== null) {
    out[10] = 0xff;
    out[11] = 0xff;
    for (let i = 0; i < 4; i += 1) {
      const part = Number(v4[i + 1]);
      if (part > 255) throw new LocalProtocolError(ErrorCode.BAD_ARGUMENT, `bad IPv4 address ${text}`);
      out[12 + i] = part;
    }
    return out;
  }
  const halves = text.split("::");
  if (halves.length > 2) throw new LocalProtocolError(ErrorCode.BAD_ARGUMENT, `bad IPv6 address ${text}`);
  const head = halves[0] ? halves[0].split(":") : [];
  const tail = halves.length === 2 && halves[1] ? halves[1].split(":") : [];
  const missing = 8 - head.length - tail.length;
  if ((halves.length === 1 && missing !== 0) || missing < 0) {
    throw new LocalProtocolError(ErrorCode.BAD_ARGUMENT, `bad IPv6 address ${text}`);
  }
  const groups = [...head, ...Array(halves.length === 2 ? missing : 0).fill("0"), ...tail];
  groups.forEach((group, i) => {
    if (!/^[0-9a-fA-F]{1,4}$/.test(group)) throw new LocalProtocolError(ErrorCode.BAD_ARGUMENT, `bad IPv6 address ${text}`);
    const n = parseInt(group, 16);
    out[2 * i] = n >> 8;
    out[2 * i + 1] = n & 0xff;
  });
  return out;
}

function addressText(bytes) {
  if (bytes.every((b) => b === 0)) return null;
  if (bytes.slice(0, 10).every((b) => b === 0) && bytes[10] === 0xff && bytes[11] === 0xff) {
    return Array.from(bytes.slice(12)).join(".");
  }
  const groups = [];
  for (let i = 0; i < 16; i += 2) groups.push((bytes[i] << 8) | bytes[i + 1]);
  // RFC 5952: the longest run (of two or more) of zero groups becomes "::".
  let best = -1;
  let bestLength = 1;
  for (let i = 0; i < 8; ) {
    if (groups[i] !== 0) { i += 1; continue; }
    let j = i;
    while (j < 8 && groups[j] === 0) j += 1;
    if (j - i > bestLength) { best = i; bestLength = j - i; }
    i = j;
  }
  const hex = groups.map((g) => g.toString(16));
  if (best < 0) return hex.join(":");
  return `${hex.slice(0, best).join(":")}::${hex.slice(best + bestLength).join(":")}`;
}

// --- encoding -------------------------------------------------------------------------

function checkPacketFields(name, number, maximum, ErrorType) {
  if (name === "DATA") {
    if (!(number >= 1 && number <= maximum)) {
      throw new ErrorType(ErrorCode.BAD_PACKET_NUMBER, `data packet ${number} of ${maximum} is not in 1..max`);
    }
  } else if (number || maximum) {
    throw new ErrorType(ErrorCode.BAD_PACKET_NUMBER, `${name} is not a data packet but says ${number}/${maximum}`);
  }
}

function u32Field(value, what) {
  if (!Number.isInteger(value) || value < 0 || value > 0xffffffff) {
    throw new LocalProtocolError(ErrorCode.BAD_ARGUMENT, `header field ${what} out of range: ${value}`);
  }
  return value;
}

/** Header plus data field; refuses to produce anything a receiver would refuse. */
export function encodeMessage(msg, maxDataSize = DEFAULT_MAX_DATA_SIZE) {
  const info = INSTRUCTIONS[msg.instruction];
  if (info === undefined) throw new LocalProtocolError(ErrorCode.UNKNOWN_INSTRUCTION, `no instruction ${msg.instruction}`);
  if (msg.args.length !== info.args.length) {
    throw new LocalProtocolError(ErrorCode.ARGUMENT_COUNT, `${msg.instruction} takes ${info.args.length} arguments, got ${msg.args.length}`);
  }
  checkPacketFields(msg.instruction, msg.packetNumber, msg.packetMax, LocalProtocolError);
  const body = new Writer();
  try {
    info.args.forEach(([name, type], i) => {
      const value = msg.args[i];
      const tag = VALUE_TYPES[type];
      if (type !== "LIST" && Array.isArray(value)) {
        throw new ProtocolError(ErrorCode.BAD_ARGUMENT, `${msg.instruction} argument '${name}' must be ${type}, not LIST`);
      }
      encodeValue(tag, value, body);
    });
  } catch (error) {
    if (error instanceof ProtocolError) throw new LocalProtocolError(error.code, error.reason);
    throw error;
  }
  if (body.length > maxDataSize) {
    throw new LocalProtocolError(ErrorCode.FRAME_TOO_LARGE, `data field of ${body.length} bytes exceeds ${maxDataSize}`);
  }
  const out = new Writer(HEADER_SIZE + body.length);
  out.raw(MAGIC);
  out.u8(VERSION);
  out.u8(info.code >> 8);
  out.u16(info.code);
  out.u16(msg.args.length);
  out.u32(u32Field(msg.requestId, "request id"));
  out.u32(u32Field(msg.packetNumber, "packet number"));
  out.u32(u32Field(msg.packetMax, "packet max"));
  out.u32(body.length);
  out.i64(BigInt(msg.timestamp));
  out.raw((msg.sessionId ?? NIL).bytes());
  out.raw((msg.workerUuid ?? NIL).bytes());
  out.raw(addressBytes(msg.clientAddress));
  out.raw(body.bytes());
  return out.bytes();
}

// --- decoding ---------------------------------------------------------------------------

/** Parse the 80 header bytes; a wrong magic or version is fatal. */
export function unpackHeader(raw) {
  const r = new Reader(raw);
  const magic = [r.u8("magic"), r.u8("magic")];
  if (magic[0] !== MAGIC[0] || magic[1] !== MAGIC[1]) {
    throw new ProtocolError(ErrorCode.BAD_MAGIC, `frame starts with ${magic.map((b) => b.toString(16).padStart(2, "0")).join("")}, not 5054 ("PT")`, { fatal: true });
  }
  const version = r.u8("version");
  if (version !== VERSION) {
    throw new ProtocolError(ErrorCode.BAD_VERSION, `protocol version ${version}, expected ${VERSION}`, { fatal: true });
  }
  return {
    messageType: r.u8("message type"),
    instruction: r.u16("instruction"),
    argumentCount: r.u16("argument count"),
    requestId: r.u32("request id"),
    packetNumber: r.u32("packet number"),
    packetMax: r.u32("packet max"),
    dataSize: r.u32("data size"),
    timestamp: r.i64("timestamp"),
    sessionId: Uuid.fromBytes(r.take(16, "session id")),
    workerUuid: Uuid.fromBytes(r.take(16, "worker uuid")),
    clientAddress: addressText(r.take(16, "client address")),
  };
}

/** Every limit judged on the header before the body is read (rule 1 of section 8). */
export function checkHeader(header, maxDataSize) {
  const fail = (code, reason, fatal = false) => new ProtocolError(code, reason, { fatal, header });
  if (header.dataSize > maxDataSize) {
    throw fail(ErrorCode.FRAME_TOO_LARGE, `data size ${header.dataSize} exceeds the maximum of ${maxDataSize}`, true);
  }
  const mtype = TYPE_BY_CODE[header.messageType];
  if (mtype === undefined) throw fail(ErrorCode.UNKNOWN_MESSAGE_TYPE, `unknown message type ${header.messageType}`);
  const name = BY_CODE[header.instruction];
  if (name === undefined) {
    throw fail(ErrorCode.UNKNOWN_INSTRUCTION, `unknown instruction 0x${header.instruction.toString(16).padStart(4, "0")}`);
  }
  if (messageType(name) !== mtype) {
    throw fail(ErrorCode.TYPE_MISMATCH, `${name} is a ${messageType(name)} instruction, sent as ${mtype}`);
  }
  if (header.argumentCount > MAX_ARGUMENTS) {
    throw fail(ErrorCode.TOO_MANY_ARGUMENTS, `${header.argumentCount} arguments; no instruction takes more than ${MAX_ARGUMENTS}`);
  }
  const expected = INSTRUCTIONS[name].args.length;
  if (header.argumentCount !== expected) {
    throw fail(ErrorCode.ARGUMENT_COUNT, `${name} takes ${expected} arguments, header says ${header.argumentCount}`);
  }
  try {
    checkPacketFields(name, header.packetNumber, header.packetMax, ProtocolError);
  } catch (error) {
    error.header = header;
    throw error;
  }
  return name;
}

/** The message once its data field has arrived; arguments checked against the schema. */
export function decodeBody(header, name, data) {
  let args;
  try {
    args = decodeValues(data, header.argumentCount);
    INSTRUCTIONS[name].args.forEach(([argName, type], i) => {
      const actual = typeName(inferType(args[i]));
      if (actual !== type) {
        throw new ProtocolError(ErrorCode.BAD_ARGUMENT, `${name} argument '${argName}' must be ${type}, not ${actual}`);
      }
    });
  } catch (error) {
    if (error instanceof ProtocolError) error.header = header;
    throw error;
  }
  return {
    instruction: name,
    args,
    requestId: header.requestId,
    sessionId: header.sessionId,
    workerUuid: header.workerUuid,
    clientAddress: header.clientAddress,
    timestamp: header.timestamp,
    packetNumber: header.packetNumber,
    packetMax: header.packetMax,
  };
}

/** Incremental decoder: feed bytes (split anywhere), pull whole messages; one frame held at most. */
export class FrameDecoder {
  constructor(maxDataSize = DEFAULT_MAX_DATA_SIZE) {
    this.maxDataSize = maxDataSize;
    this.buffer = new Uint8Array(0);
    this.header = null;
    this.name = null;
    this.skip = 0;
    this.broken = null;
  }

  get midFrame() {
    return this.buffer.length > 0 || this.header !== null || this.skip > 0;
  }

  receiveData(bytes) {
    if (this.broken !== null || bytes.length === 0) return;
    const joined = new Uint8Array(this.buffer.length + bytes.length);
    joined.set(this.buffer);
    joined.set(bytes, this.buffer.length);
    this.buffer = joined;
  }

  #consume(size) {
    const head = this.buffer.slice(0, size);
    this.buffer = this.buffer.slice(size);
    return head;
  }

  /** The next whole message, or null when more bytes are needed; throws ProtocolError. */
  nextMessage() {
    if (this.broken !== null) throw this.broken;
    if (this.skip > 0) {
      const dropped = Math.min(this.skip, this.buffer.length);
      this.#consume(dropped);
      this.skip -= dropped;
      if (this.skip > 0) return null;
    }
    if (this.header === null) {
      if (this.buffer.length < HEADER_SIZE) return null;
      const raw = this.#consume(HEADER_SIZE);
      try {
        const header = unpackHeader(raw);
        this.name = checkHeader(header, this.maxDataSize);
        this.header = header;
      } catch (error) {
        if (error.fatal) {
          this.broken = error;
          this.buffer = new Uint8Array(0);
        } else if (error.header) {
          this.skip = error.header.dataSize;
        }
        throw error;
      }
    }
    if (this.buffer.length < this.header.dataSize) return null;
    const data = this.#consume(this.header.dataSize);
    const { header, name } = this;
    this.header = null;
    this.name = null;
    return decodeBody(header, name, data);
  }
}

/** Every message of bytes that end on a frame boundary (tools and tests). */
export function decodeAll(bytes, maxDataSize = DEFAULT_MAX_DATA_SIZE) {
  const decoder = new FrameDecoder(maxDataSize);
  decoder.receiveData(bytes);
  const out = [];
  for (let msg = decoder.nextMessage(); msg !== null; msg = decoder.nextMessage()) out.push(msg);
  if (decoder.buffer.length > 0) {
    throw new ProtocolError(ErrorCode.TRAILING_DATA, `${decoder.buffer.length} bytes of an unfinished frame`);
  }
  return out;
}
