"""Session signatures: a verifier that remembers what it verified still refuses any change.

The master's drain checks the session of every order of every interval, so the
verifier remembers the exact records it has verified (issue 15). What must not
change for a user: a forged or altered record is refused, whatever was verified
before it.
"""

from __future__ import annotations

import uuid

from papertrader.store.session_signing import FIELD, SessionSigner


def _record(signer: SessionSigner, session_hex: str, account: str) -> dict[str, str]:
    fields = {"account_id": account, "client_ip": "203.0.113.7", "username": "ann"}
    fields[FIELD] = signer.sign(session_hex, fields)
    return fields


def test_a_record_verified_once_verifies_again_and_any_change_is_refused() -> None:
    signer = SessionSigner.generate()
    verifier = signer.verifier
    session = uuid.uuid4().hex
    record = _record(signer, session, "7")
    assert verifier.verify(session, record)
    assert verifier.verify(session, dict(record))  # remembered: the same answer

    assert not verifier.verify(session, {**record, "account_id": "8"})  # altered field
    assert not verifier.verify(uuid.uuid4().hex, record)  # another session's id
    other = SessionSigner.generate()
    assert not other.verifier.verify(session, record)  # another key
    forged = _record(other, session, "7")
    assert not verifier.verify(session, forged)
    assert not verifier.verify(session, forged)  # refusals are not remembered as passes
    assert not verifier.verify(session, {k: v for k, v in record.items() if k != FIELD})
