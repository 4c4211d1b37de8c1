"""Run on a host with its PaperTrader settings (PT_CONFIG): Redis over TLS, or not at all.

Connects the way the worker does (its redis_url, verified with its tls_ca) and
prints what the connection is; then tries the same Redis in plaintext, which
must be refused. With ``--services-json FILE`` (the master host's private
services) it also asks Redis, as its operator, which ports it listens on.
Exit 0: TLS verified and plaintext refused; 1 otherwise, with the reason.
"""

from __future__ import annotations

import json
import ssl
import sys
from urllib.parse import urlsplit

import redis

from papertrader.config.settings import load_settings
from papertrader.store.redis_tls import redis_tls_options
from papertrader.worker.startup import make_redis, redis_url_for


def main(argv: list[str]) -> int:
    settings = load_settings()
    url = redis_url_for(settings, None)
    parts = urlsplit(url)
    if parts.scheme != "rediss":
        print(f"the Redis URL is {parts.scheme}://, not rediss://")
        return 1
    client = make_redis(url, settings)
    client.ping()
    connection = client.connection_pool.get_connection()
    try:
        sock = connection._sock
        if not isinstance(sock, ssl.SSLSocket):
            print(f"the connection is not TLS: {sock!r}")
            return 1
        subject = dict(item[0] for item in sock.getpeercert()["subject"])
        seen = f"{sock.version()} {sock.cipher()[0]}, certificate of {subject.get('commonName')}"
    finally:
        client.connection_pool.release(connection)
    try:
        info = client.client_info()
        seen += f"; CLIENT INFO laddr={info['laddr']} user={info['user']}"
    except redis.exceptions.NoPermissionError:
        seen += "; CLIENT INFO not allowed to this user"
    host, port = parts.hostname or "127.0.0.1", parts.port or 6379
    refusal = plaintext_refusal(host, port)
    if refusal is None:
        print(f"{host}:{port} answered a plaintext PING")
        return 1
    seen += f"; plaintext to {host}:{port}: {refusal}"
    if argv[:1] == ["--services-json"]:
        with open(argv[1], encoding="utf-8") as file:
            admin_url = json.load(file)["redis"]["url"]
        admin = redis.Redis.from_url(admin_url, **redis_tls_options(admin_url, None))
        ports = {key: admin.config_get(key)[key] for key in ("port", "tls-port")}
        if ports["port"] != "0":
            print(f"Redis has a plaintext port: {ports}")
            return 1
        clients = admin.client_list()
        off = [c for c in clients if not c["laddr"].endswith(f":{ports['tls-port']}")]
        seen += f"; CONFIG port=0 tls-port={ports['tls-port']}, {len(clients)} clients all on it"
        if off:
            print(f"clients not on the TLS port: {off}")
            return 1
    print(seen)
    return 0


def plaintext_refusal(host: str, port: int) -> str | None:
    """How a plaintext PING to ``host:port`` fails; None if Redis answered it."""
    plain = redis.Redis(host=host, port=port, socket_timeout=10, socket_connect_timeout=10)
    try:
        plain.ping()
    except (redis.exceptions.AuthenticationError, redis.exceptions.ResponseError):
        return None  # it answered (NOAUTH...): plaintext was accepted
    except (OSError, redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
        return f"refused ({type(exc).__name__}: {exc})"
    return None


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
