"""What a new password must be (registration; later, password changes and resets).

The rules, each refused with INVALID_PASSWORD and a reason the user can act on:

1. The password is normalised to Unicode NFKC first (what is hashed, too:
   ``passwords.normalise``), so the same characters typed on two keyboards
   are the same password; its length is counted after that.
2. At least ``min_password_length`` characters (10 by default), at most
   MAX_PASSWORD_LENGTH; not only spaces; no control characters.
3. Not a common password and not guessable: the maintained ``zxcvbn``
   estimator (Dropbox's, with its lists of common passwords, words, names
   and keyboard patterns, and the user's own name and e-mail address as
   extra words) must score it at least ``min_password_score`` (0-4, 3 by
   default). Only its first ZXCVBN_MAX characters are judged: anything
   longer is long enough.
"""

from __future__ import annotations

import unicodedata

import gevent
from zxcvbn import zxcvbn

#: The longest password accepted (NFKC characters).
MAX_PASSWORD_LENGTH = 1024
#: zxcvbn's own limit; its matching time grows fast with the length.
ZXCVBN_MAX = 72


class WeakPassword(ValueError):
    """The password breaks the policy; the message says how."""


def normalise(password: str) -> str:
    """NFKC: the form that is checked and hashed."""
    return unicodedata.normalize("NFKC", password)


def _strength(password: str, user_inputs: list[str]) -> dict[str, object]:
    return dict(zxcvbn(password[:ZXCVBN_MAX], user_inputs=user_inputs))


def _common(result: dict[str, object], password: str) -> bool:
    """zxcvbn matched the whole password to its list of common passwords."""
    sequence = result.get("sequence")
    if not isinstance(sequence, list) or len(sequence) != 1:
        return False
    match = sequence[0]
    return (
        isinstance(match, dict)
        and match.get("dictionary_name") == "passwords"
        and match.get("token") == password[:ZXCVBN_MAX]
    )


def check_new_password(
    password: str, *, username: str, email: str, min_length: int, min_score: int
) -> str:
    """The NFKC password to hash, or WeakPassword saying what to change."""
    text = normalise(password)
    if not text.strip():
        raise WeakPassword("the password cannot be empty or only spaces")
    if len(text) < min_length:
        raise WeakPassword(f"the password must have at least {min_length} characters")
    if len(text) > MAX_PASSWORD_LENGTH:
        raise WeakPassword(f"the password must have at most {MAX_PASSWORD_LENGTH} characters")
    if any(unicodedata.category(ch) == "Cc" for ch in text):
        raise WeakPassword("the password cannot contain control characters")
    local = email.split("@", 1)[0]
    # A few ms of pure Python per password: in gevent's pool, off the event loop.
    result = gevent.get_hub().threadpool.apply(_strength, (text, [username, email, local]))
    if _common(result, text):
        raise WeakPassword("this is one of the most common passwords: choose another")
    score = result.get("score")
    if isinstance(score, int) and score < min_score:
        feedback = result.get("feedback")
        hints: list[str] = []
        if isinstance(feedback, dict):
            warning = feedback.get("warning")
            if warning:
                hints.append(str(warning).rstrip("."))
            hints += [str(s).rstrip(".") for s in feedback.get("suggestions") or []]
        detail = ": " + "; ".join(hints) if hints else ""
        raise WeakPassword(
            f"the password is too easy to guess (strength {score} of 4, "
            f"{min_score} needed){detail}. A few uncommon words together work well"
        )
    return text
