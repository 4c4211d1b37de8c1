"""The parts of issue 12 below the servers: provider settings, key fetching, the mailer.

Real parts only: the test OpenID provider process (``oidc_provider.py``),
a real Redis for spent nonces, and aiosmtpd with STARTTLS and a login for the
mailer (its certificate made here with ``cryptography``).
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import ssl
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import requests
from account_support import CLIENT_ID, ProviderProcess
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from loguru import logger

from papertrader.config import ConfigError, Settings, load_settings
from papertrader.mail.smtp import Mailer, MailError, masked
from papertrader.oidc.discovery import REFRESHES_PER_MINUTE, ProviderDirectory, ProviderUnavailable
from papertrader.oidc.native import LoopbackFlow, ProviderOptions, SignInError
from papertrader.oidc.providers import parse_providers
from papertrader.oidc.verify import IdTokenVerifier, TokenRefused
from papertrader.services.ports import free_port


# -- settings ---------------------------------------------------------------------------------
def test_providers_come_from_toml_and_hide_their_secret(tmp_path: Path) -> None:
    config = tmp_path / "pt.toml"
    config.write_text(
        'oidc_providers = [{ name = "google", issuer = "https://accounts.google.com/",'
        ' client_id = "abc.apps.googleusercontent.com", client_secret = "GOCSPX-hush" }]\n'
        'smtp_password = "mail-hush"\n'
    )
    settings = load_settings(config, environ={})
    (google,) = settings.oidc_providers
    assert google.issuer == "https://accounts.google.com" and google.title == "Google"
    assert "hush" not in repr(settings)
    assert google.public()["client_secret"] == "GOCSPX-hush"  # installed-app secret: for clients


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ('[{"name": "x", "issuer": "http://evil.example", "client_id": "c"}]', "https://"),
        ('[{"name": "x", "issuer": "https://a.example"}]', "client_id"),
        ('[{"name": "Bad Name", "issuer": "https://a.example", "client_id": "c"}]', "name"),
        (
            '[{"name": "x", "issuer": "https://a", "client_id": "c", "clientsecret": "s"}]',
            "unknown",
        ),
        ("not json", "JSON"),
        (
            '[{"name": "x", "issuer": "https://a", "client_id": "c", "web_flow": "token"}]',
            "web_flow",
        ),
    ],
)
def test_bad_provider_settings_are_refused_without_echoing_them(value: str, words: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(environ={"PT_OIDC_PROVIDERS": value})
    assert words in str(caught.value) and "PT_OIDC_PROVIDERS" in str(caught.value)
    assert "(hidden)" in str(caught.value)


def test_two_providers_may_not_share_a_name() -> None:
    entry = {"name": "a", "issuer": "https://a.example", "client_id": "c"}
    with pytest.raises(ValueError, match="share a name"):
        parse_providers([entry, entry])


# -- discovery and keys -----------------------------------------------------------------------
class CountingSession(requests.Session):
    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def get(self, url: str | bytes, **kwargs: Any) -> requests.Response:
        self.urls.append(str(url))
        return super().get(url, **kwargs)


@pytest.fixture(scope="module")
def idp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProviderProcess]:
    with ProviderProcess(tmp_path_factory.mktemp("idp")) as process:
        yield process


def test_made_up_key_ids_cannot_make_the_master_hammer_the_provider(idp: ProviderProcess) -> None:
    session = CountingSession()
    now = [1000.0]
    (provider,) = parse_providers(idp.setting())
    directory = ProviderDirectory((provider,), clock=lambda: now[0], session=session)
    directory.keys(provider, None)
    for _ in range(REFRESHES_PER_MINUTE + 20):
        directory.keys(provider, f"made-up-{uuid.uuid4().hex}")
    jwks_fetches = [url for url in session.urls if url.endswith("/jwks")]
    assert len(jwks_fetches) == 1 + REFRESHES_PER_MINUTE
    now[0] += 61  # a minute later a real rotation is picked up again
    kid = idp.rotate(keep=True)
    directory.keys(provider, kid)
    assert directory.knows_kid(provider, kid)


def test_a_provider_naming_another_issuer_is_not_trusted(idp: ProviderProcess) -> None:
    entry = json.loads(idp.setting())[0]
    entry["issuer"] = idp.issuer.replace("127.0.0.1", "localhost")
    (provider,) = parse_providers([entry])
    with pytest.raises(ProviderUnavailable, match="names the issuer"):
        ProviderDirectory((provider,)).config(provider)


def test_an_unreachable_provider_fails_fast_and_says_so() -> None:
    entry = {"name": "gone", "issuer": f"http://127.0.0.1:{free_port()}", "client_id": "c"}
    (provider,) = parse_providers([entry])
    with pytest.raises(ProviderUnavailable, match="ConnectionError"):
        ProviderDirectory((provider,)).config(provider)


def test_clock_skew_is_allowed_for_exp_but_not_beyond(
    idp: ProviderProcess, redis_client: redis.Redis
) -> None:
    (provider,) = parse_providers(idp.setting())
    nonce = uuid.uuid4().hex
    token = idp.mint(nonce=nonce, exp=2_000_000_030, iat=2_000_000_000)
    directory = ProviderDirectory((provider,))
    late = IdTokenVerifier(directory, redis_client, clock_skew=60, clock=lambda: 2_000_000_060)
    verified = late.verify(provider, token, nonce)
    assert verified.subject and verified.provider is provider
    too_late = IdTokenVerifier(directory, redis_client, clock_skew=60, clock=lambda: 2_000_000_100)
    with pytest.raises(TokenRefused, match="expired"):
        too_late.verify(provider, token, nonce)
    assert late.consume(verified) is True
    assert late.consume(verified) is False  # spent: a replay
    assert redis_client.ttl(next(iter(redis_client.scan_iter("pt:oidc:nonce:*")))) > 0


def test_an_unsigned_token_is_refused(idp: ProviderProcess, redis_client: redis.Redis) -> None:
    (provider,) = parse_providers(idp.setting())
    header = "eyJhbGciOiJub25lIn0"  # {"alg":"none"}
    claims = json.dumps({"iss": idp.issuer, "aud": CLIENT_ID, "sub": "x", "nonce": "n" * 16})
    import base64

    body = base64.urlsafe_b64encode(claims.encode()).rstrip(b"=").decode()
    verifier = IdTokenVerifier(ProviderDirectory((provider,)), redis_client)
    with pytest.raises(TokenRefused, match="'none' is not accepted"):
        verifier.verify(provider, f"{header}.{body}.", "n" * 16)


# -- the mailer ---------------------------------------------------------------------------------
def _certificate(tmp: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = tmp / "smtp.pem", tmp / "smtp.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


class _Keep:
    def __init__(self) -> None:
        self.envelopes: list[Any] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.envelopes.append(envelope)
        return "250 OK"


def _authenticator(server: Any, session: Any, envelope: Any, mechanism: str, auth: Any) -> Any:
    ok = isinstance(auth, LoginPassword) and auth.login == b"pt" and auth.password == b"s3cret-pw"
    return AuthResult(success=ok)


def test_mail_goes_through_starttls_with_a_login_and_the_password_is_never_logged(
    tmp_path: Path,
) -> None:
    cert_file, key_file = _certificate(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_file, key_file)
    handler = _Keep()
    port = free_port()
    controller = Controller(
        handler,
        hostname="127.0.0.1",
        port=port,
        tls_context=context,
        require_starttls=True,
        authenticator=_authenticator,
        auth_required=True,
    )
    lines: list[str] = []
    sink = logger.add(lines.append, format="{message}")
    controller.start()
    try:
        settings = Settings(
            smtp_host="127.0.0.1",
            smtp_port=port,
            smtp_security="starttls",
            smtp_user="pt",
            smtp_password="s3cret-pw",
            smtp_ca_file=cert_file,
            smtp_sender="PaperTrader <noreply@example.org>",
        )
        Mailer(settings).send("alice@example.org", "hello", "the body")
        (envelope,) = handler.envelopes
        assert envelope.rcpt_tos == ["alice@example.org"]
        assert b"the body" in envelope.content
        wrong = settings.with_overrides(smtp_password="wrong-pw", smtp_timeout=3.0)
        with pytest.raises(MailError) as caught:
            Mailer(wrong).send("alice@example.org", "hello", "the body")
        assert "wrong-pw" not in str(caught.value) and len(handler.envelopes) == 1
        untrusted = settings.with_overrides(smtp_ca_file=None, smtp_timeout=3.0)
        with pytest.raises(MailError, match="SSL|certificate"):
            Mailer(untrusted).send("alice@example.org", "hello", "the body")
    finally:
        controller.stop()
        logger.remove(sink)
    text = "\n".join(lines)
    assert "s3cret-pw" not in text and "wrong-pw" not in text
    assert "a***@example.org" in text and "alice@example.org" not in text
    assert "s3cret-pw" not in repr(Mailer(settings))


def test_addresses_are_masked_in_logs() -> None:
    assert masked("alice@example.org") == "a***@example.org"
    assert masked("nonsense") == "***"


# -- the native flow's parts -----------------------------------------------------------------
def _options_of(idp: ProviderProcess) -> ProviderOptions:
    return ProviderOptions.from_record(json.loads(idp.setting())[0])


def test_a_browser_on_another_machine_hands_over_the_address_it_ended_on(
    idp: ProviderProcess, redis_client: redis.Redis
) -> None:
    flow = LoopbackFlow(_options_of(idp))
    url = flow.start()
    assert "code_challenge_method=S256" in url and f"nonce={flow.nonce}" in url
    location = idp.browse(url)  # the browser elsewhere cannot reach our 127.0.0.1
    tokens = flow.exchange(flow.code_from_redirect(location))
    (provider,) = parse_providers(idp.setting())
    verifier = IdTokenVerifier(ProviderDirectory((provider,)), redis_client)
    assert verifier.verify(provider, tokens.id_token, tokens.nonce).email


def test_an_answer_for_another_sign_in_is_refused(idp: ProviderProcess) -> None:
    first, second = LoopbackFlow(_options_of(idp)), LoopbackFlow(_options_of(idp))
    first_url = first.start()
    second.start()
    location = idp.browse(first_url)
    with pytest.raises(SignInError, match="state mismatch"):
        second.code_from_redirect(location)
    first.close()


def test_a_code_is_worthless_without_the_pkce_verifier(idp: ProviderProcess) -> None:
    flow = LoopbackFlow(_options_of(idp))
    location = idp.browse(flow.start())
    code = flow.code_from_redirect(location)
    flow.verifier = "x" * 64  # what an app that intercepted the redirect would have
    with pytest.raises(SignInError, match="gave no ID token"):
        flow.exchange(code)


def test_the_web_pages_client_id_is_an_audience_too(
    idp: ProviderProcess, redis_client: redis.Redis
) -> None:
    entry = idp.entry(web_client_id="the-web-page", web_flow="id_token")
    (provider,) = parse_providers([entry])
    assert provider.public()["web_client_id"] == "the-web-page"
    assert provider.public()["web_flow"] == "id_token"
    verifier = IdTokenVerifier(ProviderDirectory((provider,)), redis_client)
    nonce = uuid.uuid4().hex
    assert verifier.verify(provider, idp.mint(nonce=nonce, aud=["the-web-page"]), nonce).subject
    both = idp.mint(nonce=nonce, aud=["the-web-page", "someone-else"], azp="the-web-page")
    assert verifier.verify(provider, both, nonce).subject
    for aud, azp in ((["someone-else"], None), (["the-web-page", "someone-else"], "someone-else")):
        with pytest.raises(TokenRefused, match="another application"):
            verifier.verify(provider, idp.mint(nonce=nonce, aud=aud, azp=azp), nonce)
