// The data transfer mechanism (docs/PROTOCOL.md section 6): a payload cut into
// DATA packets 1..max, and put back together with the numbering checked.

import { ErrorCode, LocalProtocolError, ProtocolError } from "./errors.js";
import { message } from "./frames.js";
import { CHUNK_OVERHEAD, DEFAULT_MAX_DATA_SIZE } from "./tables.js";
import { decodePayload, encodePayload } from "./values.js";

export function maxChunkSize(maxDataSize = DEFAULT_MAX_DATA_SIZE) {
  return maxDataSize - CHUNK_OVERHEAD;
}

/** DATA packets 1..max for ``payload`` bytes (an empty payload is one empty packet). */
export function splitPayload(payload, chunkSize = maxChunkSize(), fields = {}) {
  if (chunkSize < 1) throw new LocalProtocolError(ErrorCode.BAD_PACKET_NUMBER, "chunk size must be at least 1");
  const chunks = [];
  for (let i = 0; i < payload.length; i += chunkSize) chunks.push(payload.slice(i, i + chunkSize));
  if (chunks.length === 0) chunks.push(new Uint8Array(0));
  return chunks.map((chunk, i) => message("DATA", [chunk], { ...fields, packetNumber: i + 1, packetMax: chunks.length }));
}

export function packetsFor(value, chunkSize = maxChunkSize(), fields = {}) {
  return splitPayload(encodePayload(value), chunkSize, fields);
}

/** Collects the packets of one transfer; ``maxPayload`` bounds the memory it may take. */
export class Reassembler {
  constructor(maxPayload = 64 * 1024 * 1024) {
    this.maxPayload = maxPayload;
    this.reset();
  }

  get expected() {
    return this.chunks.length + 1;
  }

  get inProgress() {
    return this.max !== null;
  }

  /** Add a packet; the whole payload (Uint8Array) after the last one, else null. */
  feed(packet) {
    if (packet.instruction !== "DATA") {
      throw new ProtocolError(ErrorCode.PACKET_MISSING, `expected a data packet, got ${packet.instruction}`);
    }
    const { packetNumber: number, packetMax: maximum } = packet;
    if (this.max === null) this.max = maximum;
    else if (maximum !== this.max) this.#fail(ErrorCode.PACKET_MAX_CHANGED, `packet max changed from ${this.max} to ${maximum}`);
    if (number < this.expected) this.#fail(ErrorCode.PACKET_DUPLICATE, `packet ${number} arrived again`);
    if (number > this.expected) this.#fail(ErrorCode.PACKET_OUT_OF_ORDER, `packet ${number} arrived before packet ${this.expected}`);
    const [chunk] = packet.args;
    this.size += chunk.length;
    if (this.size > this.maxPayload) this.#fail(ErrorCode.FRAME_TOO_LARGE, `transfer exceeds ${this.maxPayload} bytes`);
    this.chunks.push(chunk);
    if (number < maximum) return null;
    const payload = new Uint8Array(this.size);
    let at = 0;
    for (const piece of this.chunks) {
      payload.set(piece, at);
      at += piece.length;
    }
    this.reset();
    return payload;
  }

  /** Like feed, decoding the finished payload: { done, value }. */
  finishValue(packet) {
    const payload = this.feed(packet);
    return payload === null ? { done: false, value: undefined } : { done: true, value: decodePayload(payload) };
  }

  /** The transfer ended early: anything held is missing. */
  abandon() {
    if (this.inProgress) {
      const missing = this.max - this.chunks.length;
      this.reset();
      throw new ProtocolError(ErrorCode.PACKET_MISSING, `transfer ended with ${missing} packets missing`);
    }
  }

  reset() {
    this.chunks = [];
    this.size = 0;
    this.max = null;
  }

  #fail(code, reason) {
    this.reset();
    throw new ProtocolError(code, reason);
  }
}
