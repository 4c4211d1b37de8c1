"""Golden vectors of the account instructions (issue 12), checked against docs/PROTOCOL.md.

Section 12 of docs/PROTOCOL.md shows these frames; its examples are printed
by this file (``PYTHONPATH=. python tests/test_protocol_golden_accounts.py``)
and the tests fail if the page and the code disagree.
"""

from __future__ import annotations

import pytest
from test_protocol_golden import DOCS, SESSION, WORKER, Vector, encoded, frame_breakdown

from papertrader.protocol import ErrorCode, Instruction, Message, decode_all, encode_message

#: A (shortened, unsigned) stand-in for an ID token: the bytes, not the JWT, are the point here.
TOKEN = "eyJhbGciOiJSUzI1NiJ9.e30.c2ln"
NONCE = "q3Xv1PZr8yYw2dKf"

VECTORS = (
    Vector(
        "login-oidc",
        "loginOidc(provider, id_token, nonce, remember, username)",
        "A first sign-in with Google: the client sends the provider's ID token (here a short "
        "stand-in), the nonce it put in the authorization request, remember-me, and the "
        "username it wants for the new account (empty for an account already linked). "
        "The answer is sessionID (Example 2) or loginFail.",
        (Message(Instruction.LOGIN_OIDC, ("google", TOKEN, NONCE, True, "alice"), request_id=1),),
        (
            "50540101100105000100000000000000000000004e00000000000000000000000000000000000000"
            "00000000000000000000000000000000000000000000000000000000000000000000000000000000"
            "0106000000676f6f676c65011d00000065794a68624763694f694a53557a49314e694a392e653330"
            "2e63326c6e01100000007133587631505a723879597732644b6604010105000000616c696365",
        ),
    ),
    Vector(
        "password-forgot",
        "passwordForgot(who)",
        "Ask for a reset code by username or e-mail address. No session; the answer "
        "(accountSuccess) is the same whether or not an account matches.",
        (Message(Instruction.PASSWORD_FORGOT, ("alice@example.org",), request_id=2),),
        (
            "50540101160101000200000000000000000000001600000000000000000000000000000000000000"
            "00000000000000000000000000000000000000000000000000000000000000000000000000000000"
            "0111000000616c696365406578616d706c652e6f7267",
        ),
    ),
    Vector(
        "session-revoke",
        "sessionRevoke(handle) with a session id",
        "End one of one's own sessions, named by the handle the session list shows (never "
        "by its id, a bearer secret). The caller's session travels in the header.",
        (Message(Instruction.SESSION_REVOKE, ("3f9a0c51d2e7",), session_id=SESSION, request_id=3),),
        (
            "50540101180101000300000000000000000000001100000000000000000000005e55104d00004000"
            "800000000000a11c0000000000000000000000000000000000000000000000000000000000000000"
            "010c000000336639613063353164326537",
        ),
    ),
    Vector(
        "account-fail",
        "accountFail(code, reason) as the master answers it on the link",
        "The master refuses to remove the only password (LAST_WAY_IN, 135); the frame "
        "carries the worker's UUID and the request id the worker chose.",
        (
            Message(
                Instruction.ACCOUNT_FAIL,
                (int(ErrorCode.LAST_WAY_IN), "the password is this account's only way in"),
                worker_uuid=WORKER,
                request_id=9,
            ),
        ),
        (
            "50540104110402000900000000000000000000003800000000000000000000000000000000000000"
            "0000000000000000c0ffee001234456789abcdef0000000100000000000000000000000000000000"
            "028700000000000000012a0000007468652070617373776f72642069732074686973206163636f75"
            "6e742773206f6e6c792077617920696e",
        ),
    ),
)


def markdown() -> str:
    parts = []
    for number, vector in enumerate(VECTORS, start=1):
        parts.append(f"#### Example 12.{number}: {vector.title}\n\n{vector.story}\n")
        for message in vector.messages:
            frame = encode_message(message)
            parts.append(
                f"`{message.instruction.name}`, {len(frame)} bytes:\n\n```text\n{frame.hex()}\n```"
                f"\n\n{frame_breakdown(frame)}\n"
            )
    return "\n".join(parts)


@pytest.mark.parametrize("vector", VECTORS, ids=lambda v: v.name)
def test_encodes_to_golden_hex(vector: Vector) -> None:
    assert encoded(vector) == vector.hexes


@pytest.mark.parametrize("vector", VECTORS, ids=lambda v: v.name)
def test_golden_hex_decodes_to_message(vector: Vector) -> None:
    stream = b"".join(bytes.fromhex(h) for h in vector.hexes)
    assert decode_all(stream) == list(vector.messages)


def test_docs_show_every_account_vector() -> None:
    docs = DOCS.read_text(encoding="utf-8")
    for vector in VECTORS:
        for hex_string in vector.hexes:
            assert f"```text\n{hex_string}\n```" in docs, vector.name


if __name__ == "__main__":  # pragma: no cover - prints section 12's examples
    print(markdown())
