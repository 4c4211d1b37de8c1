"""Clients that keep asking for quotes while the workers are rolled over.

Run with a Python that has PaperTrader installed (the test uses the master
host's virtualenv):

    python clients.py --master 127.0.0.1:2048 --user U --password-file F \
        --clients 4 --stop-file STOP --report report.json

Each client takes its own worker from the master's worker list (client i gets
worker i mod n), logs in once, then loops quote requests. When a request fails
(the worker went away, was booted off, refused), the client asks the master for
the worker list again, moves to another worker, resumes the same session there
(no new login) and sends the same request again. A request counts as failed
for good only if no worker answers it within --give-up seconds. The loop ends
when the stop file appears; the report (JSON) says what happened.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from papertrader.client import ClientError, PaperTraderClient, get_worker_list, parse_address

SYMBOLS = ("AAPL", "MSFT", "GOOG")


class NoWorker(Exception):
    """The master lists no worker right now."""


RETRYABLE = (ClientError, OSError, NoWorker)


@dataclass
class Tally:
    """What one client saw."""

    name: str
    ok: int = 0
    retried: int = 0  # requests that failed once and then succeeded elsewhere
    failed_for_good: int = 0
    failovers: int = 0
    workers_used: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # the first few, for the log


class Client:
    """One simulated user session that survives its worker going away."""

    def __init__(self, index: int, args: argparse.Namespace, password: str) -> None:
        self.index = index
        self.args = args
        self.password = password
        self.master = parse_address(args.master)
        self.tally = Tally(name=f"client-{index}")
        self.conn: PaperTraderClient | None = None
        self.session_id: uuid.UUID | None = None

    def _workers(self) -> list[str]:
        listed = get_worker_list(*self.master, timeout=5, ca=self.args.ca)
        return sorted(str(worker["address"]) for worker in listed)

    def _connect(self, avoid: str | None) -> None:
        """Connect to a worker from the master's list (not ``avoid`` if another is there)."""
        workers = self._workers()
        if not workers:
            raise NoWorker("the master lists no worker")
        choices = [w for w in workers if w != avoid] or workers
        address = choices[self.index % len(choices)]
        host, port = parse_address(address)
        conn = PaperTraderClient(host, port, timeout=10, ca=self.args.ca)
        try:
            if self.session_id is None:
                conn.login(self.args.user, self.password)
                self.session_id = conn.session_id
            else:
                conn.resume(self.session_id)
        except BaseException:
            conn.close()
            raise
        if self.conn is not None:
            self.tally.failovers += 1
        self.conn = conn
        if address not in self.tally.workers_used:
            self.tally.workers_used.append(address)

    def _note(self, exc: BaseException) -> None:
        if len(self.tally.errors) < 10:
            self.tally.errors.append(f"{type(exc).__name__}: {exc}")

    def request(self, symbol: str) -> None:
        """One quote, retried on other workers until it succeeds or --give-up passes."""
        deadline = time.monotonic() + self.args.give_up
        attempts = 0
        while True:
            attempts += 1
            try:
                if self.conn is None:
                    self._connect(avoid=None)
                assert self.conn is not None
                self.conn.quote(symbol)
                self.tally.ok += 1
                if attempts > 1:
                    self.tally.retried += 1
                return
            except RETRYABLE as exc:
                self._note(exc)
                failed = self.conn.address if self.conn is not None else None
                if self.conn is not None:
                    self.conn.close()
                if time.monotonic() > deadline:
                    self.tally.failed_for_good += 1
                    return
                time.sleep(0.2)
                try:
                    self._connect(avoid=failed)
                except RETRYABLE as again:
                    self._note(again)

    def run(self, stop: Path) -> None:
        n = 0
        while not stop.exists():
            self.request(SYMBOLS[n % len(SYMBOLS)])
            n += 1
            time.sleep(self.args.pause)
        if self.conn is not None:
            self.conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--master", required=True, help="HOST:PORT of the master")
    parser.add_argument("--ca", type=Path, required=True, help="the deployment's CA (PEM)")
    parser.add_argument("--user", required=True)
    parser.add_argument("--password-file", type=Path, required=True)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--pause", type=float, default=0.05, help="seconds between requests")
    parser.add_argument(
        "--give-up", type=float, default=30.0, help="seconds before a request fails for good"
    )
    parser.add_argument("--stop-file", type=Path, required=True)
    parser.add_argument("--report", type=Path, required=True)
    parser.add_argument("--limit", type=float, default=900.0, help="seconds; stop regardless")
    args = parser.parse_args()
    password = args.password_file.read_text().strip()

    clients = [Client(i, args, password) for i in range(args.clients)]
    threads = [threading.Thread(target=c.run, args=(args.stop_file,), daemon=True) for c in clients]
    for thread in threads:
        thread.start()
    started = time.monotonic()
    while any(t.is_alive() for t in threads) and time.monotonic() - started < args.limit:
        if args.stop_file.exists():
            for thread in threads:
                thread.join(timeout=args.give_up + 15)
            break
        time.sleep(0.2)
    report: dict[str, Any] = {
        "seconds": round(time.monotonic() - started, 1),
        "clients": [asdict(c.tally) for c in clients],
        "unfinished": sum(t.is_alive() for t in threads),
    }
    for key in ("ok", "retried", "failed_for_good", "failovers"):
        report[key] = sum(getattr(c.tally, key) for c in clients)
    args.report.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
