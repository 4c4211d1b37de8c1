"""PostgreSQL connections that leave the host are verified TLS (papertrader.store.pg_tls)."""

from __future__ import annotations

from pathlib import Path

import pytest

from papertrader.store.pg_tls import leaves_host, verified_url

CA = Path("/etc/papertrader/ca.pem")


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://u:p@127.0.0.1:5432/app",
        "postgresql://u:p@127.0.0.2/app",
        "postgresql://u:p@[::1]:5432/app",
        "postgresql://u:p@localhost/app",
        "postgresql://u:p@/app?host=/var/run/postgresql",
        "postgresql:///app",
    ],
)
def test_loopback_and_unix_sockets_stay_as_they_are(url: str) -> None:
    assert not leaves_host(url)
    assert verified_url(url, CA) == url


def test_another_host_gets_verify_full_with_the_deployments_ca() -> None:
    url = "postgresql://u:p%2F@db.internal:5433/app?connect_timeout=3"
    assert verified_url(url, CA) == (
        "postgresql://u:p%2F@db.internal:5433/app?connect_timeout=3"
        "&sslmode=verify-full&sslrootcert=%2Fetc%2Fpapertrader%2Fca.pem"
    )
    # No tls_ca: the system trust store (a database with a public CA's certificate).
    assert verified_url("postgresql://u:p@10.0.0.5/app", None).endswith(
        "?sslmode=verify-full&sslrootcert=system"
    )
    # One remote host among several is enough to verify.
    assert leaves_host("postgresql://u:p@/app?host=/tmp,db.internal")
    assert leaves_host("postgresql://u:p@127.0.0.1:5432,pg2:5432/app?target_session_attrs=any")
    assert not leaves_host("postgresql://u:p@127.0.0.1:5432,[::1]:5433/app")


def test_a_mode_the_operator_named_is_kept() -> None:
    url = "postgresql://u:p@db.internal/app?sslmode=require"
    assert verified_url(url, CA) == url
