// One WebSocket to one worker, speaking the PaperTrader protocol (docs/PROTOCOL.md).
//
// Requests go one at a time, as the state machine wants: a command waits for
// its return; a data request is switchState(1) with the request behind it in
// the same message (one round trip, docs/PROTOCOL.md 14.4), then its DATA
// packets (or dataFail), after which both sides are back in the command
// state. Failures come back as ClientError (code and the server's reason);
// a connection that ends under a request is ConnectionLost, which says
// whether the request had been sent (an order that was sent may still fill).

import {
  CONNECTION_STATES,
  Connection,
  DEFAULT_MAX_DATA_SIZE,
  ErrorCode,
  INSTRUCTIONS,
  NIL,
  ProtocolError,
  Reassembler,
  encodeMessage,
  message,
} from "./protocol/index.js";

export const SUBPROTOCOL = "papertrader.v1";
const FAILURES = new Set(Object.values(INSTRUCTIONS).map((info) => info.failure).filter(Boolean));

/** The server refused the request: ``code`` (ERROR_CODES) and its ``reason``, in plain words. */
export class ClientError extends Error {
  constructor(code, reason, { orderId = null, instruction = null } = {}) {
    super(reason);
    this.name = "ClientError";
    this.code = code;
    this.reason = reason;
    this.orderId = orderId;
    this.instruction = instruction;
  }

  /** The worker turned the request away without acting on it (out of service). */
  get turnedAway() {
    return this.code === ErrorCode.UNAVAILABLE && /out of service/.test(this.reason);
  }

  /** The session is gone (expired, revoked, another address): sign in again. */
  get sessionProblem() {
    return [ErrorCode.INVALID_SESSION, ErrorCode.SESSION_IP_MISMATCH, ErrorCode.SESSION_UNVERIFIED, ErrorCode.SESSION_MISMATCH].includes(this.code);
  }
}

/** The connection ended (or never opened) while a request waited. */
export class ConnectionLost extends Error {
  constructor(reason, { sent = false } = {}) {
    super(reason);
    this.name = "ConnectionLost";
    this.sent = sent;
  }
}

/** ws:// or wss:// URL of the WebSocket of a page origin ("https://host:port"). */
export function socketUrl(origin) {
  const url = new URL("/ws", origin);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  return url.href;
}

export class WorkerConnection {
  constructor(origin, { timeoutMs = 90000, maxDataSize = DEFAULT_MAX_DATA_SIZE } = {}) {
    this.origin = origin;
    this.timeoutMs = timeoutMs;
    this.maxDataSize = maxDataSize;
    this.protocol = new Connection("client", maxDataSize);
    this.socket = null;
    this.closed = false;
    this.closeReason = "";
    this.nextRequestId = 1;
    this.waiter = null;
    this.chain = Promise.resolve();
    this.onclose = null;
  }

  /** Resolves once the WebSocket is open; rejects with ConnectionLost. */
  open(openTimeoutMs = 10000) {
    return new Promise((resolve, reject) => {
      let socket;
      try {
        socket = new WebSocket(socketUrl(this.origin), [SUBPROTOCOL]);
      } catch (error) {
        // A Content-Security-Policy that does not list this worker refuses at once.
        this.closed = true;
        reject(new ConnectionLost(`cannot open a WebSocket to ${this.origin}: ${error.message}`));
        return;
      }
      socket.binaryType = "arraybuffer";
      this.socket = socket;
      let settled = false;
      const timer = setTimeout(() => socket.close(), openTimeoutMs);
      socket.onopen = () => {
        clearTimeout(timer);
        settled = true;
        resolve(this);
      };
      socket.onmessage = (event) => this.#receive(event.data);
      socket.onclose = (event) => {
        clearTimeout(timer);
        this.#lost(this.closeReason || event.reason || `the connection to ${this.origin} closed (code ${event.code})`);
        if (!settled) {
          settled = true;
          reject(new ConnectionLost(`cannot reach the worker at ${this.origin}`));
        }
      };
    });
  }

  close() {
    if (this.socket !== null && !this.closed) this.socket.close(1000, "bye");
    this.#lost("closed by the page");
  }

  /** A command: its return message (the success one), or ClientError. */
  command(instruction, args = [], sessionId = NIL) {
    return this.#serial(async () => {
      const reply = await this.#exchange(message(instruction, args, { sessionId, requestId: this.#requestId() }));
      return reply;
    });
  }

  /** A data request: switchState(1) and the request in one message, the packets; the
   * decoded payload (or the switch's failure, or the request's). */
  data(instruction, args = [], sessionId = NIL) {
    return this.#serial(() => {
      const toData = message("SWITCH_STATE", [BigInt(CONNECTION_STATES.DATA_TRANSFER)], { sessionId, requestId: this.#requestId() });
      const request = message(instruction, args, { sessionId, requestId: this.#requestId() });
      return this.#exchange(toData, request);
    });
  }

  /** getWorkerList (answered by the master through this worker). */
  workerList() {
    return this.#serial(() => this.#exchange(message("GET_WORKER_LIST", [], { requestId: this.#requestId() })));
  }

  #requestId() {
    const id = this.nextRequestId;
    this.nextRequestId = id >= 0xffffffff ? 1 : id + 1;
    return id;
  }

  #serial(operation) {
    const run = this.chain.then(operation, operation);
    this.chain = run.catch(() => undefined);
    return run;
  }

  /** Send ``request`` (and ``behind``, a data request pipelined after a switchState) and
   * wait for the answer: to ``behind`` when there is one and the switch succeeds. */
  #exchange(request, behind = null) {
    if (this.closed || this.socket === null || this.socket.readyState !== WebSocket.OPEN) {
      return Promise.reject(new ConnectionLost(this.closeReason || `not connected to ${this.origin}`, { sent: false }));
    }
    let bytes = this.protocol.send(request); // LocalProtocolError: a bug of ours, never sent
    if (behind !== null) {
      // Our state machine moves past ``behind`` once the switch is granted (#deliver).
      const next = encodeMessage(behind, this.maxDataSize);
      const both = new Uint8Array(bytes.length + next.length);
      both.set(bytes);
      both.set(next, bytes.length);
      bytes = both;
    }
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiter = null;
        this.socket.close(4000, "no answer");
        reject(new ConnectionLost(`${this.origin} did not answer within ${this.timeoutMs / 1000} s`, { sent: true }));
      }, this.timeoutMs);
      this.waiter = {
        request,
        behind,
        failure: null,
        reassembler: new Reassembler(),
        resolve: (value) => { clearTimeout(timer); this.waiter = null; resolve(value); },
        reject: (error) => { clearTimeout(timer); this.waiter = null; reject(error); },
      };
      this.socket.send(bytes);
    });
  }

  #receive(data) {
    this.protocol.receiveData(new Uint8Array(data));
    for (;;) {
      let msg;
      try {
        msg = this.protocol.nextMessage();
      } catch (error) {
        this.closeReason = `the worker sent something unreadable (${error.message})`;
        this.socket.close(1002, "unreadable frame");
        this.#lost(this.closeReason);
        return;
      }
      if (msg === null) return;
      this.#deliver(msg);
    }
  }

  #deliver(msg) {
    const waiter = this.waiter;
    if (waiter === null || msg.requestId !== waiter.request.requestId) {
      // An ERROR that answers nothing of ours: the worker says why it is closing.
      if (msg.instruction === "ERROR") {
        const [code, reason] = msg.args;
        this.closeReason = String(reason);
        // Turned away on arrival (out of service): nothing we sent was read.
        if (waiter !== null && Number(code) === ErrorCode.UNAVAILABLE && /out of service/.test(this.closeReason)) {
          waiter.reject(new ClientError(Number(code), this.closeReason, { instruction: waiter.request.instruction }));
        }
      }
      return;
    }
    if (FAILURES.has(msg.instruction)) {
      const [code, reason, orderId] = msg.args;
      const error = new ClientError(Number(code), String(reason), { orderId: orderId ?? null, instruction: waiter.request.instruction });
      if (waiter.behind !== null) {
        // The request sent behind this switch is refused in turn (dataFail, in the
        // command state): read that too, so the connection stays in step, then say why.
        waiter.request = waiter.behind;
        waiter.behind = null;
        waiter.failure = error;
        return;
      }
      waiter.reject(waiter.failure ?? error);
      return;
    }
    if (msg.instruction === "DATA") {
      try {
        const step = waiter.reassembler.finishValue(msg);
        if (step.done) waiter.resolve(step.value);
      } catch (error) {
        waiter.reject(error instanceof ProtocolError ? new ClientError(error.code, error.reason) : error);
      }
      return;
    }
    if (waiter.behind !== null) {
      // The switch is granted: the request sent behind it is the one answered next.
      this.protocol.send(waiter.behind);
      waiter.request = waiter.behind;
      waiter.behind = null;
      return;
    }
    waiter.resolve(msg);
  }

  #lost(reason) {
    const first = !this.closed;
    this.closed = true;
    if (!this.closeReason) this.closeReason = reason;
    if (this.waiter !== null) this.waiter.reject(this.waiter.failure ?? new ConnectionLost(this.closeReason, { sent: true }));
    if (first && this.onclose) this.onclose(this.closeReason);
  }
}
