"""TLS on the client port (issue 9): real worker processes, real certificates, real
handshakes; what a user is told when something does not verify.

The trading flow over TLS is every other end-to-end test (their fixtures are TLS);
here: trusted, untrusted, expired and wrong-name certificates, a plaintext client on
a TLS port, TLS off refused off loopback, expiry warnings, and `pt certs`.
"""

from __future__ import annotations

import datetime
import json
import ssl
import subprocess
import sys
import uuid
import warnings
from pathlib import Path

import pytest
from cryptography import x509
from test_worker_cli import run_worker_cli
from test_worker_support import ROOT, Client, running_worker, worker_env
from tls_support import pki

from papertrader.client import ClientError, PaperTraderClient, TlsError
from papertrader.protocol import ErrorCode, Instruction, decode_all
from papertrader.services.ports import free_port
from papertrader.tls import PLAINTEXT_REFUSAL_REASON, certs, plaintext_refusal


def pki_ca() -> x509.Certificate:
    return certs.load_certificate(pki().ca)


def pt(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "papertrader_cli", *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def issued(
    tmp_path: Path, names: list[str], days: int = 30, age_days: int = 0
) -> tuple[Path, Path]:
    """A certificate from the test CA for ``names`` (issued ``age_days`` ago)."""
    made = pki()
    start = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(days=age_days)
    chain, key = certs.issue(
        made.ca.read_bytes(), (made.directory / "ca.key").read_bytes(), names, days, start
    )
    cert_path, key_path = tmp_path / f"{names[0]}.pem", tmp_path / f"{names[0]}.key"
    cert_path.write_bytes(chain)
    key_path.write_bytes(key)
    return cert_path, key_path


def test_a_trusted_certificate_serves_and_a_plaintext_client_is_told_in_words(
    tmp_path: Path, redis_url: str
) -> None:
    with running_worker(tmp_path, redis_url) as worker:
        # Verified against the test CA: the protocol works as ever inside TLS.
        with Client(worker.port) as client:
            assert isinstance(client.sock, ssl.SSLSocket)
            assert client.sock.version() in ("TLSv1.3", "TLSv1.2")
            reply = client.call(Instruction.LOGOUT)
            assert reply.is_failure  # no session: a protocol answer, through TLS
        # A plaintext client gets the reason, not a hang or garbage.
        with PaperTraderClient("127.0.0.1", worker.port, timeout=10, tls=False) as plain:
            with pytest.raises(TlsError, match="the server speaks TLS; "):
                plain.login("alice", "some password here")
        # TLS 1.1 and older are not offered.
        old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        old.load_verify_locations(str(pki().ca))
        with warnings.catch_warnings():  # deprecated: what this checks nobody can use
            warnings.simplefilter("ignore", DeprecationWarning)
            old.maximum_version = ssl.TLSVersion.TLSv1_1
            old.minimum_version = ssl.TLSVersion.TLSv1
        with pytest.raises(TlsError):
            PaperTraderClient("127.0.0.1", worker.port, timeout=10, ssl_context=old).connect()
    # running_worker checked: exit 0 and no traceback in the worker's log.
    log = worker.log()
    assert "plaintext connection from 127.0.0.1" in log and "refused" in log


def test_an_untrusted_expired_or_misnamed_certificate_is_refused_by_the_client(
    tmp_path: Path, redis_url: str
) -> None:
    cert, key = issued(tmp_path, ["worker.example.invalid"])
    with running_worker(tmp_path, redis_url, tls_cert=cert, tls_key=key) as worker:
        with PaperTraderClient("127.0.0.1", worker.port, timeout=10, ca=pki().ca) as client:
            with pytest.raises(TlsError) as caught:
                client.connect()
        reason = caught.value.reason
        assert reason.startswith("certificate not trusted: ")
        assert "'127.0.0.1'" in reason and "expected" in reason  # the name it wanted
        # The system trust store does not know the test CA.
        with pytest.raises(TlsError, match="UNAVAILABLE: certificate not trusted: .*--ca FILE"):
            PaperTraderClient("127.0.0.1", worker.port, timeout=10).connect()
    assert "TLS handshake with 127.0.0.1" in worker.log()

    old_cert, old_key = issued(tmp_path, ["127.0.0.1"], days=2, age_days=3)
    (tmp_path / "b").mkdir()
    with running_worker(tmp_path / "b", redis_url, tls_cert=old_cert, tls_key=old_key) as worker:
        expired = "UNAVAILABLE: certificate not trusted: certificate has expired"
        with pytest.raises(TlsError, match=expired):
            PaperTraderClient("127.0.0.1", worker.port, timeout=10, ca=pki().ca).connect()
    assert "expired on" in worker.log()  # the operator is told at start-up


def test_a_certificate_close_to_expiry_is_warned_about_at_start(
    tmp_path: Path, redis_url: str
) -> None:
    cert, key = issued(tmp_path, ["127.0.0.1", "localhost"], days=5)
    with running_worker(tmp_path, redis_url, tls_cert=cert, tls_key=key) as worker:
        with PaperTraderClient("127.0.0.1", worker.port, timeout=10, ca=pki().ca) as client:
            client.connect()  # still valid: served
    assert "renew it" in worker.log() and "expires on" in worker.log()


def test_tls_off_is_warned_on_loopback_and_refused_elsewhere(
    tmp_path: Path, redis_url: str
) -> None:
    with running_worker(tmp_path, redis_url, tls="false") as worker:
        with PaperTraderClient("127.0.0.1", worker.port, timeout=10, tls=False) as client:
            with pytest.raises(ClientError) as caught:
                client.resume(uuid.uuid4())
            assert caught.value.code is ErrorCode.INVALID_SESSION  # served, in plaintext
        # A TLS client against it is told the server does not speak TLS.
        with pytest.raises(TlsError, match="does not speak TLS"):
            PaperTraderClient("127.0.0.1", worker.port, timeout=10, ca=pki().ca).connect()
    assert "TLS is OFF" in worker.log()

    env = worker_env(tmp_path, redis_url, free_port(), free_port(), tls="false")
    env["PT_WORKER_HOST"] = "0.0.0.0"
    result = run_worker_cli(env)
    assert result.returncode == 1
    assert "tls = false is refused on 0.0.0.0, which is not a loopback address" in result.stderr
    assert "Traceback" not in result.stderr


def test_pt_certs_makes_a_ca_issues_and_shows(tmp_path: Path) -> None:
    ca_dir = tmp_path / "ca"
    made = pt("certs", "ca", "--ca-dir", str(ca_dir))
    assert made.returncode == 0, made.stderr
    assert (ca_dir / "ca.key").stat().st_mode & 0o777 == 0o600
    again = pt("certs", "ca", "--ca-dir", str(ca_dir))
    assert again.returncode == 1 and "already holds a CA" in again.stderr
    out = tmp_path / "eu1"
    issue = pt("certs", "issue", "eu1.example.org", "203.0.113.7", "--out", str(out),
               "--days", "10", "--ca-dir", str(ca_dir))  # fmt: skip
    assert issue.returncode == 0, issue.stderr
    assert (tmp_path / "eu1.key").stat().st_mode & 0o777 == 0o600
    shown = pt("certs", "show", str(tmp_path / "eu1.pem"), "--json")
    document = json.loads(shown.stdout)
    assert document["names"] == ["eu1.example.org", "203.0.113.7"]
    assert "expires on" in document["warning"]  # 10 days: within the 14-day warning
    # Signed by that CA (what a client given --ca checks).
    ca = certs.load_certificate(ca_dir / "ca.pem")
    assert certs.issued_by(certs.load_certificate(tmp_path / "eu1.pem"), ca)
    assert not certs.issued_by(certs.load_certificate(tmp_path / "eu1.pem"), pki_ca())
    missing = pt("certs", "issue", "x.example.org", "--out", str(tmp_path / "x"),
                 "--ca-dir", str(tmp_path / "none"))  # fmt: skip
    assert missing.returncode == 1 and "pt certs ca" in missing.stderr


def test_the_plaintext_refusal_is_the_frame_protocol_md_shows() -> None:
    """Golden vector (docs/PROTOCOL.md section 17): a client in any language can
    recognise it; it decodes as ERROR(TLS_REQUIRED, reason)."""
    frame = plaintext_refusal(65536)
    docs = (ROOT / "docs" / "PROTOCOL.md").read_text(encoding="utf-8")
    shown = frame.hex()
    assert "\n".join(shown[i : i + 80] for i in range(0, len(shown), 80)) in docs
    (message,) = decode_all(frame)
    assert message.instruction is Instruction.ERROR
    assert message.args == (int(ErrorCode.TLS_REQUIRED), PLAINTEXT_REFUSAL_REASON)
