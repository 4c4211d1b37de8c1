"""Shared GPG keys and a test-side worker link for the tests (no tests here).

Keys are made once per test session, on first use, and reused: one per worker
name, and the master's. Each lives in its own GnuPG home, a short directory
under /tmp (gpg-agent's socket paths must be short); at exit the agents are
stopped and the homes removed.

``WorkerPeer`` plays a worker against a real master over a real socket: the
handshake with ``papertrader.worker.handshake`` and a test key, then sealed
frames, with ways to misbehave (raw bytes, replayed records).
"""

from __future__ import annotations

import atexit
import functools
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tls_support import connect, tls_env

from papertrader.keyring import Keyring, stop_agent
from papertrader.protocol import (
    FrameDecoder,
    Instruction,
    Message,
    NeedData,
    Reassembler,
    Value,
    encode_message,
)
from papertrader.protocol.link_seal import Direction, Opener, Sealer
from papertrader.store.pool import ConnectionPool
from papertrader.store.workers import register_worker
from papertrader.worker.handshake import WorkerHandshake

LOCALHOST = ("127.0.0.1/32",)
#: The client address WorkerPeer.hello announces unless told otherwise.
PEER_ADDRESS = "w.example:2049"


@dataclass(frozen=True)
class KeyPair:
    name: str
    home: Path
    fingerprint: str
    public_key: str

    def keyring(self) -> Keyring:
        return Keyring(self.home)


class KeyStore:
    """Key pairs by name, each made on first use."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="ptk-", dir="/tmp"))
        self._keys: dict[str, KeyPair] = {}

    def key(self, name: str) -> KeyPair:
        """A key pair made the way `pt workers keygen` / `pt master keygen` make them."""
        if name not in self._keys:
            home = self.root / f"k{len(self._keys)}"
            keyring = Keyring(home, create=True)
            fingerprint = keyring.generate(name)
            public = keyring.export_public(fingerprint).decode("ascii")
            self._keys[name] = KeyPair(name, home, fingerprint, public)
        return self._keys[name]

    def gpg_made(self, name: str) -> KeyPair:
        """A signing-only key made with plain gpg, not by pt."""
        label = f"gpg:{name}"
        if label not in self._keys:
            home = self.root / f"g{len(self._keys)}"
            home.mkdir(mode=0o700)
            subprocess.run(
                ["gpg", "--homedir", str(home), "--batch", "--passphrase", "",
                 "--quick-gen-key", name, "ed25519", "sign", "never"],
                check=True, capture_output=True,
            )  # fmt: skip
            keyring = Keyring(home)
            fingerprint = keyring.own_fingerprint()
            public = keyring.export_public(fingerprint).decode("ascii")
            self._keys[label] = KeyPair(name, home, fingerprint, public)
        return self._keys[label]

    @property
    def master(self) -> KeyPair:
        return self.key("papertrader-master")

    def close(self) -> None:
        for key in self._keys.values():
            stop_agent(key.home)
        shutil.rmtree(self.root, ignore_errors=True)


@functools.cache
def keys() -> KeyStore:
    made = KeyStore()
    atexit.register(made.close)
    return made


def master_env(tls: bool = True) -> dict[str, str]:
    """Settings a master under test needs for its key (and its TLS certificate from the
    test CA; ``tls=False`` for `pt up`, which makes its own)."""
    return {"PT_MASTER_GNUPG_HOME": str(keys().master.home), **(tls_env() if tls else {})}


def worker_env(name: str) -> dict[str, str]:
    """Settings a worker under test needs: its key, the pinned master key, its TLS
    certificate and the CA it verifies the master with."""
    return {
        "PT_WORKER_GNUPG_HOME": str(keys().key(name).home),
        "PT_MASTER_FINGERPRINT": keys().master.fingerprint,
        **tls_env(),
    }


def register(
    pool: ConnectionPool,
    name: str,
    worker_uuid: uuid.UUID,
    region: str | None = "test",
    key: KeyPair | None = None,
    ips: Sequence[str] = LOCALHOST,
    address: str | None = PEER_ADDRESS,
) -> KeyPair:
    """Register ``name`` with its test key (or ``key``) from 127.0.0.1 by default, pinned
    to ``region`` and the client ``address`` it must announce."""
    key = key or keys().key(name)
    register_worker(pool, name, worker_uuid, region, key.public_key, key.fingerprint, ips, address)
    return key


class WorkerPeer:
    """A blocking worker-side link to a real master, for tests."""

    def __init__(self, port: int, worker_uuid: uuid.UUID, key: KeyPair) -> None:
        self.sock = connect(port, timeout=10)
        self.worker_uuid = worker_uuid
        self.key = key
        self.decoder = FrameDecoder()
        self.sealer: Sealer | None = None
        self.opener: Opener | None = None
        self.sent_records: list[bytes] = []
        self.heartbeats = 0
        self.session_key: object = None  # LINK_SESSION_KEY, sent after the welcome

    def handshake(self) -> None:
        """The real worker handshake (raises LinkRefused/LinkDropped), then sealing on."""
        shake = WorkerHandshake(
            self.key.keyring(), self.key.fingerprint, keys().master.fingerprint,
            self.worker_uuid, 65536,
        )  # fmt: skip
        self.link_keys = link_keys = shake(self.sock)
        out, into = Direction.WORKER_TO_MASTER, Direction.MASTER_TO_WORKER
        self.sealer = Sealer(link_keys.key(out), self.worker_uuid, out)
        self.opener = Opener(link_keys.key(into), self.worker_uuid, into, 65536)

    def send_frame(self, frame: bytes) -> None:
        """One frame, sealed (kept in ``sent_records`` for replay tests)."""
        assert self.sealer is not None
        record = self.sealer.seal(frame)
        self.sent_records.append(record)
        self.sock.sendall(record)

    def send(
        self, instruction: Instruction, *args: object, request_id: int = 0, **header: object
    ) -> None:
        fields = {"worker_uuid": self.worker_uuid, **header}
        message = Message(instruction, args, request_id=request_id, **fields)  # type: ignore[arg-type]
        self.send_frame(encode_message(message))

    def hello(self, name: str, region: str = "test", address: str = PEER_ADDRESS) -> Message:
        self.send(Instruction.LINK_HELLO, name, region, address)
        reply = self.read()
        assert reply is not None, "the master closed the link instead of welcoming it"
        return reply

    def read(self, skip_heartbeats: bool = True) -> Message | None:
        """The next frame, or None when the master closed the connection."""
        while True:
            message = self.decoder.next_message()
            if not isinstance(message, NeedData):
                if skip_heartbeats and message.instruction is Instruction.HEARTBEAT:
                    self.heartbeats += 1
                    continue
                if message.instruction is Instruction.LINK_SESSION_KEY:  # after the welcome
                    self.session_key = message.arg("public_key")
                    continue
                return message
            try:
                data = self.sock.recv(65536)
            except ConnectionResetError:
                return None
            if not data:
                return None
            if self.opener is None:
                self.decoder.receive_data(data)
                continue
            self.opener.receive_data(data)
            while (frame := self.opener.next_frame()) is not None:
                self.decoder.receive_data(frame)

    def read_data(self) -> Value:
        reassembler = Reassembler()
        while True:
            message = self.read()
            assert message is not None and message.instruction is Instruction.DATA, message
            done, value = reassembler.finish_value(message)
            if done:
                assert value is not None  # a finished transfer decodes to a value
                return value

    def closed_by_master(self, timeout: float = 5.0) -> bool:
        """True once the master closes the link (frames before that are skipped)."""
        self.sock.settimeout(timeout)
        try:
            while True:
                if self.read() is None:
                    return True
        except TimeoutError:
            return False

    def close(self) -> None:
        self.sock.close()
