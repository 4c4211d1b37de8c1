"""GnuPG key pairs of the master and the workers, through python-gnupg (spec 3.1.5).

Each party keeps its key pair in a GnuPG home of its own (mode 0700): the
master's (``pt master keygen``) and one per worker (``pt workers keygen``).
Both are made the same way, an Ed25519 signing key with a Curve25519
encryption subkey, without a passphrase (servers sign unattended: protect the
directory instead). The handshake needs the worker's key only to sign, so a
worker key made by hand with plain ``gpg --quick-gen-key NAME ed25519 sign``
works as well.

gpg is used only in the link handshake, a few calls per link, never per frame.

Two practical points:

* gpg-agent's sockets live in the GnuPG home, and a Unix socket path must fit
  in about 100 bytes. A home whose path is too long (deep state directories,
  pytest's temporary paths) is handed to gpg through a short symlink,
  ``$XDG_RUNTIME_DIR/pt-gnupg-<hash>`` (else ``/tmp/...``), that points to it;
  the keys stay where the operator put them.
* In the gevent servers, python-gnupg runs on the event loop but never blocks
  it: gevent's patched ``subprocess`` and pipes make every wait on gpg
  cooperative, and gpg's own work happens in the gpg process. (gevent's
  threadpool cannot be used here: gevent's subprocess can only watch children
  from the main loop.)
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gnupg

from papertrader.config import Settings
from papertrader.config.rules import FINGERPRINT_RE
from papertrader.services import resolve_state_dir

#: Longest agent socket name gpg creates in a home ("S.gpg-agent.browser").
_LONGEST_SOCKET = "/S.gpg-agent.browser"
#: Unix socket paths are limited to 108 bytes on Linux; keep a margin.
MAX_SOCKET_PATH = 100
_GPG_TIMEOUT = 30.0


class KeyringError(Exception):
    """A key or GnuPG home problem, in words an operator can act on."""


@dataclass(frozen=True)
class KeyInfo:
    """What a public key block holds (from scanning it, without importing it)."""

    fingerprint: str
    user_ids: tuple[str, ...]
    can_sign: bool
    can_encrypt: bool


def normalise_fingerprint(text: str) -> str:
    """``868C 19D3 ...`` or ``0x868c19d3...`` as 40 (or 64) upper-case hex digits.

    Raises ValueError for anything else (a short key id is not a fingerprint).
    """
    cleaned = text.strip().replace(" ", "").replace(":", "").upper()
    if cleaned.startswith("0X"):
        cleaned = cleaned[2:]
    if not FINGERPRINT_RE.fullmatch(cleaned):
        raise ValueError(f"{text!r} is not a key fingerprint (40 or 64 hex digits)")
    return cleaned


def short_home(home: Path) -> Path:
    """The path to give gpg for ``home``: itself when short, else a short symlink to it."""
    home = home.expanduser().absolute()
    if len(os.fsencode(str(home) + _LONGEST_SOCKET)) <= MAX_SOCKET_PATH:
        return home
    base = Path(os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir())
    digest = hashlib.sha256(os.fsencode(str(home))).hexdigest()[:16]
    link = base / f"pt-gnupg-{digest}"
    _prune_dangling(base)
    for _attempt in range(2):
        if link.is_symlink():
            if os.readlink(link) == str(home) and link.lstat().st_uid == os.getuid():
                return link
            raise KeyringError(
                f"{link} exists but does not point to {home}; remove it and try again"
            )
        if link.exists():
            raise KeyringError(f"{link} exists and is not our symlink; remove it and try again")
        with contextlib.suppress(FileExistsError):  # another process made it meanwhile
            os.symlink(home, link)
    return link


def _prune_dangling(base: Path) -> None:
    """Remove our own short links whose GnuPG home is gone (a deleted state dir)."""
    for stale in base.glob("pt-gnupg-*"):
        with contextlib.suppress(OSError):
            if stale.is_symlink() and not stale.exists() and stale.lstat().st_uid == os.getuid():
                stale.unlink()


def ensure_home(home: Path) -> None:
    """Create ``home`` (and parents) with mode 0700, or make an existing one 0700."""
    try:
        home.mkdir(mode=0o700, parents=True, exist_ok=True)
        home.chmod(0o700)
    except OSError as exc:
        raise KeyringError(f"cannot create GnuPG home {home}: {exc.strerror or exc}") from None


def stop_agent(home: Path) -> None:
    """Stop the gpg-agent gpg started for ``home`` (best effort: it may not run)."""
    gpgconf = shutil.which("gpgconf")
    if gpgconf is None:
        return
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        subprocess.run(
            [gpgconf, "--homedir", str(short_home(home)), "--kill", "gpg-agent"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=10,
            check=False,
        )


def _capabilities(key: dict[str, Any]) -> str:
    """Usable capabilities of a scanned key and its subkeys (upper case = whole key)."""
    return str(key.get("cap") or "")


def scan_public_key(data: str | bytes) -> KeyInfo:
    """Read a public key block without importing it anywhere; KeyringError if it is
    not exactly one public key."""
    text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
    if "PRIVATE KEY BLOCK" in text:
        raise KeyringError(
            "this is a secret key: give the public key only (`pt workers keygen` writes it, "
            "or `gpg --export --armor FINGERPRINT`)"
        )
    scratch = Path(tempfile.mkdtemp(prefix="pt-scan-", dir="/tmp"))
    try:
        gpg = _open_gpg(scratch)
        keys = list(gpg.scan_keys_mem(data))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    if not keys:
        raise KeyringError("no OpenPGP public key found in it")
    if len(keys) > 1:
        raise KeyringError(f"it holds {len(keys)} keys; give exactly one")
    key = keys[0]
    caps = _capabilities(key)
    return KeyInfo(
        fingerprint=str(key["fingerprint"]).upper(),
        user_ids=tuple(str(uid) for uid in key.get("uids", ())),
        can_sign="S" in caps or "s" in caps,
        can_encrypt="E" in caps or "e" in caps,
    )


def _open_gpg(home: Path) -> gnupg.GPG:
    if shutil.which("gpg") is None:
        raise KeyringError("gpg (GnuPG 2) is not installed: install the gnupg package")
    try:
        gpg = gnupg.GPG(gnupghome=str(short_home(home)))
    except (OSError, ValueError, RuntimeError) as exc:
        raise KeyringError(f"cannot run gpg on {home}: {exc}") from None
    gpg.encoding = "utf-8"
    return gpg


class Keyring:
    """One GnuPG home: its own key pair, plus the public keys it was given."""

    def __init__(self, home: Path, create: bool = False) -> None:
        self.home = home.expanduser().absolute()
        if create:
            ensure_home(self.home)
        elif not self.home.is_dir():
            raise KeyringError(f"GnuPG home {self.home} does not exist")
        self.gpg_home = short_home(self.home)
        self._gpg = _open_gpg(self.home)

    # keys ------------------------------------------------------------------------------
    def generate(self, name: str) -> str:
        """A new key pair (Ed25519 signing, Curve25519 encryption subkey); its fingerprint."""
        params = self._gpg.gen_key_input(
            key_type="EDDSA",
            key_curve="ed25519",
            key_usage="sign",
            subkey_type="ECDH",
            subkey_curve="cv25519",
            subkey_usage="encrypt",
            name_real=name,
            name_comment="PaperTrader",
            name_email=f"{name}@papertrader.invalid",
            expire_date=0,
            no_protection=True,
        )
        result = self._gpg.gen_key(params)
        fingerprint = str(result.fingerprint or "")
        if not fingerprint:
            raise KeyringError(f"gpg could not make a key in {self.home}: {result.stderr[-300:]}")
        return fingerprint.upper()

    def secret_fingerprints(self) -> list[str]:
        """Fingerprints of the key pairs in this home (usually one)."""
        return [str(key["fingerprint"]).upper() for key in self._gpg.list_keys(secret=True)]

    def own_fingerprint(self, wanted: str | None = None) -> str:
        """The key pair to use: ``wanted`` if given (it must be here), else the only one."""
        have = self.secret_fingerprints()
        if wanted is not None:
            if wanted not in have:
                raise KeyringError(f"GnuPG home {self.home} has no secret key {wanted}")
            return wanted
        if len(have) == 1:
            return have[0]
        if not have:
            raise KeyringError(f"GnuPG home {self.home} holds no key pair")
        raise KeyringError(
            f"GnuPG home {self.home} holds {len(have)} key pairs: say which one to use"
        )

    def export_public(self, fingerprint: str, armor: bool = True) -> bytes:
        """The public key, ASCII-armored (or binary)."""
        exported = self._gpg.export_keys(fingerprint, armor=armor)
        data = exported.encode("ascii") if isinstance(exported, str) else bytes(exported)
        if not data:
            raise KeyringError(f"no public key {fingerprint} in {self.home}")
        return data

    def import_public(self, data: bytes | str) -> list[str]:
        """Add public keys to this home; their fingerprints (KeyringError if none)."""
        result = self._gpg.import_keys(data)
        found = [str(fp).upper() for fp in (result.fingerprints or []) if fp]
        if not found:
            raise KeyringError("the key could not be imported")
        return found

    # the handshake's operations -----------------------------------------------------------
    def sign(self, data: bytes, fingerprint: str) -> bytes:
        """A detached binary signature of ``data`` by our key ``fingerprint``."""
        signed = self._gpg.sign(data, keyid=fingerprint, detach=True, binary=True)
        if not signed.data:
            raise KeyringError(f"gpg could not sign with {fingerprint}: {signed.status}")
        return bytes(signed.data)

    def verify(self, signature: bytes, data: bytes) -> str | None:
        """The primary-key fingerprint of a good signature over ``data``, else None."""
        fd, name = tempfile.mkstemp(dir=self.home, prefix="sig-")
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(signature)
            verified = self._gpg.verify_data(name, data)
        finally:
            with contextlib.suppress(OSError):
                os.unlink(name)
        if not verified.valid:
            return None
        primary = verified.pubkey_fingerprint or verified.fingerprint
        return str(primary).upper() if primary else None

    def encrypt(self, data: bytes, fingerprint: str) -> bytes:
        """``data`` encrypted to the public key ``fingerprint`` (binary OpenPGP)."""
        encrypted = self._gpg.encrypt(data, fingerprint, armor=False, always_trust=True)
        if not encrypted.ok:
            raise KeyringError(f"gpg could not encrypt to {fingerprint}: {encrypted.status}")
        return bytes(encrypted.data)

    def decrypt(self, data: bytes) -> bytes | None:
        """``data`` decrypted with a secret key of this home, or None if it cannot be."""
        decrypted = self._gpg.decrypt(data, always_trust=True)
        if not decrypted.ok:
            return None
        return bytes(decrypted.data)

    def stop_agent(self) -> None:
        stop_agent(self.home)


def master_home(settings: Settings, state_dir: Path | None = None) -> Path:
    """The master's GnuPG home: ``master_gnupg_home``, else <state_dir>/gnupg-master."""
    if settings.master_gnupg_home is not None:
        return settings.master_gnupg_home
    return _state(settings, state_dir) / "gnupg-master"


def worker_home(settings: Settings, state_dir: Path | None = None) -> Path:
    """A worker's GnuPG home: ``worker_gnupg_home``, else <state_dir>/gnupg-<worker_name>."""
    if settings.worker_gnupg_home is not None:
        return settings.worker_gnupg_home
    return _state(settings, state_dir) / f"gnupg-{settings.worker_name}"


def _state(settings: Settings, state_dir: Path | None) -> Path:
    return resolve_state_dir(state_dir if state_dir is not None else settings.state_dir)
