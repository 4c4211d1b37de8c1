// The PaperTrader wire protocol in JavaScript, sans-IO (docs/PROTOCOL.md).
//
// The same frames as every other client, byte for byte: the node tests check
// this codec against the golden vectors of tests/test_protocol_golden*.py.

export { Decimal } from "./decimal.js";
export { ErrorCode, LocalProtocolError, ProtocolError, errorName } from "./errors.js";
export { FrameDecoder, HEADER_SIZE, arg, decodeAll, encodeMessage, message, messageType } from "./frames.js";
export { fromRecord, fromRecords, toRecord } from "./records.js";
export { Connection, Role, classify } from "./states.js";
export { CONNECTION_STATES, DEFAULT_MAX_DATA_SIZE, INSTRUCTIONS } from "./tables.js";
export { Reassembler, maxChunkSize, packetsFor, splitPayload } from "./transfer.js";
export { CalendarDate, NIL, Timestamp, Uuid } from "./types.js";
export { Reader, Writer, decodePayload, encodePayload, encodeValue, inferType } from "./values.js";
