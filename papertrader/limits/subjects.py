"""What a limit counts against: addresses and names turned into short Redis key parts.

* An IPv4 address counts as itself; an IPv6 address by its /64 network (one
  customer usually holds a whole /64, so counting single addresses would let
  one attacker act as 2**64 clients).
* Usernames and e-mail addresses are Unicode-normalised (NFKC) and
  case-folded, then hashed: ``Alice`` and ``alice`` share one budget, and a
  key never holds a raw client string (long, binary, or personal data).
"""

from __future__ import annotations

import hashlib
import ipaddress
import unicodedata


def address_subject(ip: str) -> str:
    """``203.0.113.7`` -> ``203.0.113.7``; ``2001:db8::1`` -> ``2001:db8::/64``."""
    try:
        address = ipaddress.ip_address(ip.split("%", 1)[0])
    except ValueError:
        return "ip-" + name_subject(ip)
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


def name_subject(name: str) -> str:
    """A username or e-mail as 32 hex digits (NFKC, case-folded, SHA-256)."""
    folded = unicodedata.normalize("NFKC", name).casefold()
    return hashlib.sha256(folded.encode("utf-8", "surrogatepass")).hexdigest()[:32]
