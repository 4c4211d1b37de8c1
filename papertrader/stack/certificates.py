"""TLS files for the stack's servers: each one's certificate from the state
directory's private CA (``papertrader/tls/local.py``), or the operator's, or none."""

from __future__ import annotations

from typing import TYPE_CHECKING

from papertrader.config.settings import split_host_port
from papertrader.stack.record import StackError

if TYPE_CHECKING:
    from papertrader.stack.plan import Say, StackOptions


def certificates(options: StackOptions, say: Say) -> dict[str, dict[str, str]]:
    """TLS files per child (``PT_TLS_*``): with tls on and no tls_cert of the operator's,
    a certificate for each server from the state directory's private CA (made on the
    first run, reused while valid). With tls = false: refused off loopback."""
    from papertrader.tls.certs import CertificateError
    from papertrader.tls.contexts import TlsConfigError
    from papertrader.tls.local import LocalPki, default_names
    from papertrader.tls.setup import refuse_plaintext_off_loopback

    settings = options.settings
    master_names = [name for name, _ in options.masters()]
    names = [*master_names, *options.worker_names()]
    if not settings.tls:
        listen = [settings.master_host, settings.worker_host]
        if settings.web_enabled:
            listen.append(settings.web_host or settings.worker_host)
        try:
            refuse_plaintext_off_loopback(settings, listen)
        except TlsConfigError as exc:
            raise StackError(str(exc)) from None
        say("tls       OFF (tls = false): plaintext on loopback, for development only")
        return {name: {"PT_TLS": "false"} for name in names}
    if settings.tls_cert is not None:
        say(f"tls       certificate {settings.tls_cert} (tls_cert)")
        return {name: {} for name in names}
    pki = LocalPki(options.state_dir)
    advertised = (
        split_host_port(settings.worker_advertise)[0] if settings.worker_advertise else None
    )
    hosts: dict[str, list[str | None]] = {
        **{name: [settings.master_host] for name in master_names},
        **{name: [settings.worker_host, settings.web_host, advertised]
           for name in options.worker_names()},
    }  # fmt: skip
    files: dict[str, dict[str, str]] = {}
    try:
        made = pki.ensure_ca()
        for name in names:
            cert, key = pki.server_files(name, default_names(hosts[name]))
            files[name] = {"PT_TLS_CERT": str(cert), "PT_TLS_KEY": str(key)}
    except (OSError, CertificateError) as exc:
        raise StackError(f"TLS certificates in {pki.directory}: {exc}") from None
    say(
        f"tls       CA {pki.ca_cert}{' (new)' if made else ''}: `pt client` with this state "
        f"directory trusts it; other clients: --ca {pki.ca_cert}"
    )
    return files
