"""Turning raw setting values into checked ones, with errors an operator can act on.

Values arrive as environment text (``PT_*`` variables), as TOML or Python values
(the config file, overrides, ``Settings(...)``). :func:`parse_env` turns a
variable's text into the field's native type; :func:`coerce` accepts the native
spellings of a value and normalises them; :func:`check` applies the range and
shape of the setting's rule (rules.py). Every failure is one :class:`ConfigError`
line that names the setting, where it came from and what is allowed.

A bad value is echoed back only when it cannot be a secret: URLs are shown with
their password and query string masked, secret settings not at all.
"""

from __future__ import annotations

import difflib
import json
import math
import os
import uuid
from collections.abc import Iterable
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from papertrader.config.addresses import HIDDEN, join_host_port, redact_url, split_host_port
from papertrader.config.rules import FINGERPRINT_RE, HOST, RULES, SECRET_SETTINGS, ConfigError, Rule
from papertrader.limits.rates import Rate, parse_rate
from papertrader.market.quote import SYMBOL_RE
from papertrader.oidc.providers import parse_providers

_MAX_SHOWN = 80
_MAX_PATH_SHOWN = 4096
#: Settings whose bad values are never echoed in errors (they may hold secrets).
_HIDDEN_IN_ERRORS = SECRET_SETTINGS | {"oidc_providers"}
_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off"})


def unknown_setting(key: str, source: str, extra: str = "") -> ConfigError:
    matches = difflib.get_close_matches(key.lower(), list(RULES), n=3, cutoff=0.6)
    hint = f"; did you mean {' or '.join(matches)}?" if matches else "; see the list of settings"
    return ConfigError(f'unknown setting "{key}" (from {source}){extra}{hint}', key, source)


def _show(name: str, value: Any) -> str:
    """Render a bad value for an error message; URLs and secrets are masked, long values cut."""
    if name in _HIDDEN_IN_ERRORS:
        return "the value (hidden)"
    if "url" in name:
        shown = redact_url(value) if isinstance(value, str) else HIDDEN
        return "the value (hidden)" if shown == HIDDEN else f'"{shown}"'
    if isinstance(value, (str, Path)):
        text = str(value)
        # A path is shown whole (up to PATH_MAX): the user needs it to find the file.
        most = _MAX_PATH_SHOWN if isinstance(value, Path) else _MAX_SHOWN
        if len(text) > most:
            text = text[:most] + "..."
        return json.dumps(text, ensure_ascii=False)
    text = repr(value) if not isinstance(value, Decimal) else str(value)
    return text if len(text) <= _MAX_SHOWN else text[:_MAX_SHOWN] + "..."


def _fail(name: str, rule: Rule, value: Any, problem: str, source: str) -> ConfigError:
    return ConfigError(
        f"{name} (from {source}): {_show(name, value)} {problem}; allowed: {rule.allowed}",
        name,
        source,
    )


def parse_env(name: str, rule: Rule, text: str, var: str) -> Any:
    """Turn an environment string into the field's native type; checks come later."""
    stripped = text.strip()
    kind = rule.kind
    if (
        kind in ("optstr", "optpath", "optuuid", "opthostport", "opthostports", "optfpr")
        and stripped == ""
    ):
        return None  # an empty variable unsets the value from the file
    if kind == "int":
        try:
            return int(stripped, 10)
        except ValueError:
            raise _fail(name, rule, text, "is not a whole number", var) from None
    if kind == "float":
        try:
            return float(stripped)
        except ValueError:
            raise _fail(name, rule, text, "is not a number", var) from None
    if kind == "bool":
        lowered = stripped.lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
        raise _fail(name, rule, text, "is not true or false", var)
    if kind == "optpath":
        return Path(stripped).expanduser()
    # Strings, URLs, comma-separated assets and decimals stay text: coerce parses
    # starting_cash from this text, never through float.
    return stripped


def coerce(name: str, rule: Rule, value: Any, source: str) -> Any:
    """Accept the native (TOML or Python) spellings of a value and normalise them."""
    kind = rule.kind
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise _fail(name, rule, value, "is not a whole number", source)
        return value
    if kind == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _fail(name, rule, value, "is not a number", source)
        return float(value)
    if kind == "bool":
        if not isinstance(value, bool):
            raise _fail(name, rule, value, "is not true or false", source)
        return value
    if kind == "zone":
        if not isinstance(value, str):
            raise _fail(name, rule, value, "is not a string", source)
        try:
            ZoneInfo(value.strip())
        except (ValueError, ZoneInfoNotFoundError):
            raise _fail(name, rule, value, "is not a known time zone", source) from None
        return value.strip()
    if kind == "str" or (kind == "optstr" and value is not None):
        if not isinstance(value, str):
            raise _fail(name, rule, value, "is not a string", source)
        return value
    if kind == "optpath" and value is not None:
        if not isinstance(value, (str, os.PathLike)) or str(value) == "" or "\0" in str(value):
            raise _fail(name, rule, value, "is not a usable path", source)
        return Path(value).expanduser()
    if kind == "optuuid" and value is not None:
        return _coerce_uuid(name, rule, value, source)
    if kind == "opthostport" and value is not None:
        if not isinstance(value, str):
            raise _fail(name, rule, value, "is not a string", source)
        try:
            return join_host_port(*split_host_port(value))
        except ValueError:
            raise _fail(name, rule, value, "is not host:port", source) from None
    if kind == "opthostports" and value is not None:
        items = value.split(",") if isinstance(value, str) else value
        if not isinstance(items, (list, tuple)) or not items:
            raise _fail(name, rule, value, "is not a list of host:port", source)
        try:
            return ",".join(join_host_port(*split_host_port(str(item).strip())) for item in items)
        except ValueError:
            raise _fail(name, rule, value, "is not host:port[,host:port...]", source) from None
    if kind == "optfpr" and value is not None:
        return _coerce_fingerprint(name, rule, value, source)
    if kind == "decimal":
        return _coerce_decimal(name, rule, value, source)
    if kind == "rate":
        if isinstance(value, Rate):
            return value
        if not isinstance(value, str):
            raise _fail(name, rule, value, "is not a rate", source)
        try:
            return parse_rate(value)
        except ValueError:
            raise _fail(name, rule, value, "is not a rate", source) from None
    if kind == "assets":
        return _coerce_assets(name, rule, value, source)
    if kind == "providers":
        try:
            return parse_providers(value)
        except ValueError as exc:
            raise _fail(name, rule, value, f"is not usable ({exc})", source) from None
    return value


def _coerce_uuid(name: str, rule: Rule, value: Any, source: str) -> str:
    """Any spelling of a UUID, kept as its canonical lower-case text."""
    if isinstance(value, uuid.UUID):
        parsed = value
    elif isinstance(value, str):
        try:
            parsed = uuid.UUID(value.strip())
        except ValueError:
            raise _fail(name, rule, value, "is not a UUID", source) from None
    else:
        raise _fail(name, rule, value, "is not a UUID", source)
    if parsed.int == 0:  # the nil UUID means "no worker" in frame headers
        raise _fail(name, rule, value, "is the nil UUID", source)
    return str(parsed)


def _coerce_fingerprint(name: str, rule: Rule, value: Any, source: str) -> str:
    """A key fingerprint, spaces allowed, kept as upper-case hex."""
    if not isinstance(value, str):
        raise _fail(name, rule, value, "is not a string", source)
    cleaned = value.strip().replace(" ", "").upper()
    if not FINGERPRINT_RE.fullmatch(cleaned):
        raise _fail(name, rule, value, "is not a key fingerprint", source)
    return cleaned


def _coerce_decimal(name: str, rule: Rule, value: Any, source: str) -> Decimal:
    if isinstance(value, float):
        raise _fail(
            name,
            rule,
            value,
            "is a floating-point number, which cannot hold money exactly; "
            f'quote it, e.g. {name} = "100000.00"',
            source,
        )
    if isinstance(value, Decimal):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return Decimal(value)
    if isinstance(value, str):
        try:
            return Decimal(value.strip())
        except InvalidOperation:
            raise _fail(name, rule, value, "is not a decimal number", source) from None
    raise _fail(name, rule, value, "is not a decimal amount", source)


def _coerce_assets(name: str, rule: Rule, value: Any, source: str) -> tuple[str, ...]:
    if isinstance(value, str):
        items: Iterable[Any] = [item for item in value.split(",") if item.strip()]
    elif isinstance(value, (list, tuple)):
        items = value
    else:
        raise _fail(name, rule, value, "is not a list of symbols", source)
    symbols = _normalise_symbols(name, rule, ((item, source) for item in items))
    if not symbols:
        raise _fail(name, rule, value, "lists no symbols", source)
    return symbols


def _normalise_symbols(name: str, rule: Rule, items: Iterable[tuple[Any, str]]) -> tuple[str, ...]:
    """Upper-case, check and de-duplicate symbols; each item carries its own source."""
    seen: list[str] = []
    for item, source in items:
        if not isinstance(item, str):
            raise _fail(name, rule, item, "is not a symbol string", source)
        symbol = item.strip().upper()
        if not SYMBOL_RE.fullmatch(symbol):
            raise _fail(name, rule, item, "is not a valid symbol", source)
        if symbol in seen:
            raise _fail(name, rule, item, "is listed twice", source)
        seen.append(symbol)
    return tuple(seen)


def read_assets_file(path: Path, source: str) -> tuple[str, ...]:
    rule = RULES["assets_file"]
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise _fail("assets_file", rule, path, f"cannot be read ({reason})", source) from None
    items = []
    for number, line in enumerate(text.splitlines(), start=1):
        entry = line.split("#", 1)[0].strip()
        if entry:
            items.append((entry, f"{path}, line {number}"))
    symbols = _normalise_symbols("assets_file", rule, items)
    if not symbols:
        raise _fail("assets_file", rule, path, "lists no symbols", source)
    return symbols


def check(name: str, rule: Rule, value: Any, source: str) -> None:
    """Range and shape checks shared by every layer, on already-typed values."""
    if value is None:
        return
    if rule.kind == "float" and not math.isfinite(value):
        raise _fail(name, rule, value, "is not a finite number", source)
    if rule.kind == "decimal":
        if not value.is_finite():
            raise _fail(name, rule, value, "is not a finite amount", source)
        exponent = value.as_tuple().exponent
        if isinstance(exponent, int) and exponent < -2:
            raise _fail(name, rule, value, "has more than 2 decimal places", source)
    if rule.kind in ("int", "float", "decimal"):
        too_low = rule.low is not None and (
            value <= rule.low if rule.low_open else value < rule.low
        )
        if too_low:
            raise _fail(name, rule, value, "is out of range", source)
        if rule.high is not None and value > rule.high:
            raise _fail(name, rule, value, "is out of range", source)
    if rule.kind == "str":
        if not value.strip() or (rule is HOST and any(ch.isspace() for ch in value)):
            raise _fail(name, rule, value, "is not usable", source)
        if rule.choices and value not in rule.choices:
            raise _fail(name, rule, value, "is not a known choice", source)
    if rule.pattern is not None and isinstance(value, str) and not rule.pattern.fullmatch(value):
        raise _fail(name, rule, value, "is not usable", source)
    if rule.prefixes and not value.startswith(rule.prefixes):
        raise _fail(name, rule, value, f"does not start with {_or_list(rule.prefixes)}", source)


def _or_list(words: tuple[str, ...]) -> str:
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} or {words[-1]}"
