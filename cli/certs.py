"""``pt certs``: the TLS certificates of a deployment, for operators.

``pt up`` makes its own private CA and certificates (``<state_dir>/tls``) and
needs none of this. A deployment across hosts makes one CA here, issues each
server a certificate for the names and addresses clients use to reach it,
and gives the servers ``tls_cert``/``tls_key`` and everyone ``tls_ca`` (or
``--ca``). Certificates from a public CA need none of this either: ``show``
still tells their names and expiry.
"""

from __future__ import annotations

from pathlib import Path

import click

from .common import fail, json_option, print_json, state_dir_option


@click.group()
def certs() -> None:
    """Make a CA, issue server certificates, show a certificate's names and expiry."""


def _ca_dir(ca_dir: Path | None, state_dir: Path | None) -> Path:
    from papertrader.services import resolve_state_dir
    from papertrader.tls.local import tls_dir

    if ca_dir is not None:
        return ca_dir
    return tls_dir(resolve_state_dir(state_dir))


ca_dir_option = click.option(
    "--ca-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Directory of the CA (ca.pem, ca.key); default: <state_dir>/tls, the one `pt up` uses.",
)


@certs.command()
@ca_dir_option
@state_dir_option
def ca(ca_dir: Path | None, state_dir: Path | None) -> None:
    """Make a private CA: ca.pem (give it to clients: --ca / tls_ca) and ca.key (0600,
    keep it on this host; whoever has it can impersonate every server)."""
    from papertrader.tls.local import LocalPki

    directory = _ca_dir(ca_dir, state_dir)
    pki = LocalPki.at(directory)
    if pki.ca_cert.exists() or pki.ca_key.exists():
        fail(f"{directory} already holds a CA (ca.pem/ca.key): not replaced")
    try:
        pki.ensure_ca()
    except OSError as exc:
        fail(f"cannot write the CA into {directory}: {exc.strerror or exc}")
    click.echo(f"CA certificate {pki.ca_cert}")
    click.echo(f"CA key         {pki.ca_key} (0600: keep it here)")


@certs.command()
@click.argument("names", nargs=-1, required=True)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="Where to write: OUT.pem (certificate and chain) and OUT.key (key, 0600).",
)
@click.option("--days", type=click.IntRange(1, 825), default=397, show_default=True)
@ca_dir_option
@state_dir_option
def issue(
    names: tuple[str, ...], out: Path, days: int, ca_dir: Path | None, state_dir: Path | None
) -> None:
    """Issue a server certificate for NAMES (host names and IP addresses clients use).

    Example: `pt certs issue worker-eu.example.org 203.0.113.7 --out eu1`, then on
    that host tls_cert = "eu1.pem", tls_key = "eu1.key".
    """
    from papertrader.tls.certs import CertificateError, describe, load_certificate
    from papertrader.tls.local import LocalPki

    pki = LocalPki.at(_ca_dir(ca_dir, state_dir))
    cert_path, key_path = out.with_name(out.name + ".pem"), out.with_name(out.name + ".key")
    try:
        pki.issue_to(names, cert_path, key_path, days)
        info = describe(load_certificate(cert_path))
    except CertificateError as exc:
        fail(str(exc))
    except OSError as exc:
        fail(f"cannot write {cert_path}: {exc.strerror or exc}")
    click.echo(f"certificate {cert_path} for {', '.join(info.names)}")
    click.echo(f"key         {key_path} (0600)")
    click.echo(f"valid until {info.not_after:%Y-%m-%d %H:%M} UTC")


@certs.command()
@click.argument("file", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@json_option
def show(file: Path, as_json: bool) -> None:
    """Show a certificate's names, issuer and expiry (a warning within 14 days)."""
    from papertrader.tls.certs import CertificateError, describe, load_certificate

    try:
        info = describe(load_certificate(file))
    except CertificateError as exc:
        fail(str(exc))
    note = info.expiry_note()
    if as_json:
        print_json({**info.to_json(), "warning": note})
        return
    click.echo(f"subject     {info.subject}")
    click.echo(f"issuer      {info.issuer}")
    click.echo(f"names       {', '.join(info.names) or '-'}")
    click.echo(f"valid from  {info.not_before:%Y-%m-%d %H:%M} UTC")
    click.echo(f"valid until {info.not_after:%Y-%m-%d %H:%M} UTC ({info.days_left():.0f} days)")
    click.echo(f"CA          {'yes' if info.is_ca else 'no'}")
    click.echo(f"sha256      {info.fingerprint_sha256}")
    if note:
        click.echo(f"warning: {note}", err=True)
