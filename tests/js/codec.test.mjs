// The JavaScript codec against the golden vectors of the Python one (node --test).
//
// tests/test_web_codec.py copies papertrader/web/static/js next to this file,
// writes the generated tables.js, exports the vectors of every
// tests/test_protocol_golden*.py as JSON (tests/golden_export.py) and runs
// node's test runner with PT_GOLDEN_JSON naming that file.

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";

import {
  CalendarDate,
  Connection,
  Decimal,
  ProtocolError,
  Reassembler,
  Timestamp,
  Uuid,
  decodeAll,
  decodePayload,
  encodeMessage,
  encodePayload,
  FrameDecoder,
  inferType,
  message,
  packetsFor,
} from "./protocol/index.js";
import { ERROR_CODES, VALUE_TYPES } from "./protocol/tables.js";

const golden = JSON.parse(readFileSync(process.env.PT_GOLDEN_JSON, "utf8"));
const TYPE_NAMES = Object.fromEntries(Object.entries(VALUE_TYPES).map(([n, t]) => [t, n]));

const hex = (bytes) => Buffer.from(bytes).toString("hex");
const unhex = (text) => new Uint8Array(Buffer.from(text, "hex"));

function fromTyped({ t, v }) {
  switch (t) {
    case "STR": return v;
    case "INT": return BigInt(v);
    case "DECIMAL": return Decimal.parse(v);
    case "BOOL": return v;
    case "ID": return new Uuid(v);
    case "DATE": return CalendarDate.parse(v);
    case "TIMESTAMP": return new Timestamp(BigInt(v));
    case "BYTES": return unhex(v);
    case "LIST": return v.map(fromTyped);
    default: throw new Error(`unknown type ${t}`);
  }
}

function toTyped(value) {
  const t = TYPE_NAMES[inferType(value)];
  switch (t) {
    case "INT": return { t, v: value.toString() };
    case "DECIMAL": case "ID": case "DATE": return { t, v: value.toString() };
    case "TIMESTAMP": return { t, v: value.micros.toString() };
    case "BYTES": return { t, v: hex(value) };
    case "LIST": return { t, v: value.map(toTyped) };
    default: return { t, v: value };
  }
}

function fromJson(m) {
  return message(m.instruction, m.args.map(fromTyped), {
    requestId: m.request_id,
    sessionId: new Uuid(m.session_id),
    workerUuid: new Uuid(m.worker_uuid),
    clientAddress: m.client_address,
    timestamp: BigInt(m.timestamp),
    packetNumber: m.packet_number,
    packetMax: m.packet_max,
  });
}

function toJson(msg) {
  return {
    instruction: msg.instruction,
    args: msg.args.map(toTyped),
    request_id: msg.requestId,
    session_id: msg.sessionId.toString(),
    worker_uuid: msg.workerUuid.toString(),
    client_address: msg.clientAddress,
    timestamp: msg.timestamp.toString(),
    packet_number: msg.packetNumber,
    packet_max: msg.packetMax,
  };
}

test("there are golden vectors to check", () => {
  assert.ok(golden.vectors.length >= 8);
  assert.ok(golden.refused.length >= 15);
});

for (const vector of golden.vectors) {
  test(`${vector.module} ${vector.name}: encodes to the golden bytes`, () => {
    assert.deepEqual(vector.messages.map((m) => hex(encodeMessage(fromJson(m)))), vector.hexes);
  });

  test(`${vector.module} ${vector.name}: the golden bytes decode to the same fields`, () => {
    const stream = unhex(vector.hexes.join(""));
    assert.deepEqual(decodeAll(stream).map(toJson), vector.messages);
  });

  test(`${vector.module} ${vector.name}: decodes the same when split at every byte`, () => {
    const stream = unhex(vector.hexes.join(""));
    for (let cut = 1; cut < stream.length; cut += 7) {
      const decoder = new FrameDecoder();
      const out = [];
      for (const part of [stream.slice(0, cut), stream.slice(cut)]) {
        decoder.receiveData(part);
        for (let m = decoder.nextMessage(); m !== null; m = decoder.nextMessage()) out.push(toJson(m));
      }
      assert.deepEqual(out, vector.messages);
    }
  });

  if (vector.payload !== null) {
    test(`${vector.module} ${vector.name}: packets reassemble to the golden payload`, () => {
      const reassembler = new Reassembler();
      let payload = null;
      for (const m of decodeAll(unhex(vector.hexes.join("")))) payload = reassembler.feed(m);
      assert.equal(hex(payload), vector.payload_hex);
      assert.deepEqual(toTyped(decodePayload(payload)), vector.payload);
      assert.equal(hex(encodePayload(fromTyped(vector.payload))), vector.payload_hex);
    });
  }
}

test("value examples of docs/PROTOCOL.md section 4 encode and decode byte for byte", () => {
  for (const example of golden.values) {
    const value = fromTyped(example.value);
    assert.equal(hex(encodePayload(value, VALUE_TYPES[example.value.t])), example.hex, example.shown);
    assert.deepEqual(toTyped(decodePayload(unhex(example.hex))), example.value, example.shown);
  }
});

for (const refused of golden.refused) {
  test(`refused like the Python decoder: ${refused.name}`, () => {
    assert.throws(
      () => decodeAll(unhex(refused.hex), refused.max_data_size),
      (error) => {
        assert.ok(error instanceof ProtocolError, String(error));
        assert.equal(error.code, refused.code, error.message);
        assert.equal(error.fatal, refused.fatal);
        return true;
      },
    );
  });
}

test("client addresses print as Python prints them", () => {
  for (const address of golden.addresses) {
    const msg = message("PURCHASE_ASSET", ["AAPL", 1n], { clientAddress: address });
    assert.equal(decodeAll(encodeMessage(msg))[0].clientAddress, address);
  }
});

test("a non-fatal refusal skips the frame and the next one still decodes", () => {
  const [good] = golden.vectors.filter((v) => v.name === "login");
  const bad = golden.refused.find((r) => r.name === "unknown instruction");
  const decoder = new FrameDecoder();
  decoder.receiveData(unhex(bad.hex + good.hexes[0]));
  assert.throws(() => decoder.nextMessage(), (e) => e.code === ERROR_CODES.UNKNOWN_INSTRUCTION);
  assert.equal(decoder.nextMessage().instruction, "LOGIN");
});

test("money never travels as a JavaScript number", () => {
  assert.throws(() => inferType(189.25), ProtocolError);
  const order = message("PURCHASE_ASSET", ["AAPL", 1.5]);
  assert.throws(() => encodeMessage(order), (e) => e.code === ERROR_CODES.BAD_ARGUMENT);
  const fill = message("PURCHASE_SUCCESS", [Uuid.random(), "AAPL", 1n, 189.25, Timestamp.fromDate(new Date())]);
  assert.throws(() => encodeMessage(fill), (e) => e.code === ERROR_CODES.BAD_ARGUMENT);
});

test("Decimal arithmetic is exact and rounds half to even only when asked", () => {
  const d = Decimal.parse;
  assert.equal(d("0.10").toString(), "0.10");
  assert.equal(d("0.1").add(d("0.2")).toString(), "0.3");
  assert.equal(d("189.25").mul(3).toString(), "567.75");
  assert.equal(d("100000.00").sub(d("567.75")).toString(), "99432.25");
  assert.equal(d("-0.005").toFixed(2).toString(), "0.00");
  assert.equal(d("0.015").toFixed(2).toString(), "0.02");
  assert.equal(d("0.025").toFixed(2).toString(), "0.02");
  assert.equal(d("2.5").toFixed(0).toString(), "2");
  assert.equal(d("1234567.5").format(), "1,234,567.5");
  assert.equal(d("-1234.00").format(), "-1,234.00");
  assert.equal(d("1.10").compare(d("1.1")), 0);
  assert.equal(d("-3").compare(d("2")), -1);
  assert.throws(() => d("1e5"), RangeError);
  assert.throws(() => d("NaN"), RangeError);
});

test("the client's state machine refuses locally what the server would refuse", () => {
  const session = new Uuid("5e55104d-0000-4000-8000-00000000a11c");
  const conn = new Connection();
  assert.throws(
    () => conn.send(message("GET_ASSET_VALUE_CURRENT", ["AAPL"], { sessionId: session })),
    (e) => e.code === ERROR_CODES.WRONG_STATE,
  );
  conn.send(message("SWITCH_STATE", [1n], { sessionId: session }));
  assert.equal(conn.state, "AWAIT_DATA_SWITCH");
  conn.receiveData(encodeMessage(message("STATE_SWITCH_SUCCESS", [1n])));
  assert.equal(conn.nextMessage().instruction, "STATE_SWITCH_SUCCESS");
  assert.equal(conn.state, "DATA_TRANSFER");
  conn.send(message("GET_ASSET_VALUE_CURRENT", ["AAPL"], { sessionId: session }));
  const quote = [["symbol", "AAPL"], ["price", Decimal.parse("189.25")]];
  for (const packet of packetsFor(quote, 10)) conn.receiveData(encodeMessage(packet));
  const reassembler = new Reassembler();
  let value = null;
  for (let m = conn.nextMessage(); m !== null; m = conn.nextMessage()) {
    const step = reassembler.finishValue(m);
    if (step.done) value = step.value;
  }
  assert.equal(conn.state, "COMMAND");
  assert.equal(value[1][1].toString(), "189.25");
  assert.throws(() => conn.send(message("PURCHASE_SUCCESS", [session, "A", 1n, Decimal.parse("1"), Timestamp.fromDate(new Date())])),
    (e) => e.code === ERROR_CODES.TYPE_MISMATCH);
});
