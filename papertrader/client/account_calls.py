"""The account calls of the client: registering, signing in and out, passwords,
third-party sign-in, e-mail, sessions, the profile and deleting the account
(docs/PROTOCOL.md sections 5 and 12)."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

from papertrader.client.base import ClientBase, answer_records, answer_str
from papertrader.client.models import AccountSession, SessionInfo, SignInMethods
from papertrader.protocol import Instruction, Message
from papertrader.protocol.records import from_record

if TYPE_CHECKING:
    from papertrader.oidc.native import ProviderOptions


class AccountCalls(ClientBase):
    """Accounts and sessions: what a person needs to get in, stay in, and leave."""

    def register(self, username: str, email: str, password: str) -> str:
        """Create an account; returns the username as stored."""
        reply = self._command(Message(Instruction.REGISTER, (username, email, password)))
        self._expect(reply, Instruction.REGISTER_SUCCESS)
        return answer_str(reply.arg("username"))

    def login(self, username: str, password: str, remember: bool = False) -> SessionInfo:
        """Log in; the session is kept for the following requests and returned."""
        reply = self._command(Message(Instruction.LOGIN, (username, password, remember)))
        return self._take_session(reply)

    def resume(self, session_id: uuid.UUID) -> SessionInfo:
        """Continue a session made earlier, maybe on another worker (login(sessionID))."""
        reply = self._command(Message(Instruction.LOGIN_SESSION, session_id=session_id))
        return self._take_session(reply)

    def logout(self) -> None:
        """End the session on every worker."""
        session_id = self._session()
        reply = self._command(Message(Instruction.LOGOUT, session_id=session_id))
        self._expect(reply, Instruction.LOGOUT_SUCCESS)
        self.session_id = None
        self.session = None

    def sign_in_options(self) -> list[ProviderOptions]:
        """The providers this server offers: name, display_name, issuer, client_id,
        client_secret (of an installed-app client, or None) and scopes."""
        from papertrader.oidc.native import ProviderOptions

        reply = self._command(Message(Instruction.GET_SIGN_IN_OPTIONS))
        self._expect(reply, Instruction.SIGN_IN_OPTIONS)
        return [ProviderOptions.from_record(r) for r in answer_records(reply.arg("providers"))]

    def login_oidc(
        self,
        provider: str,
        id_token: str,
        nonce: str,
        remember: bool = False,
        username: str = "",
    ) -> SessionInfo:
        """Sign in with a provider's ID token (``papertrader.oidc.native`` obtains one).

        ``username`` names the new account on a first sign-in (USERNAME_NEEDED
        without it); it is ignored for an account already linked.
        """
        reply = self._command(
            Message(Instruction.LOGIN_OIDC, (provider, id_token, nonce, remember, username))
        )
        return self._take_session(reply)

    def set_password(self, new: str, current: str = "") -> str:
        """Add a password (``current`` empty), or change it; other sessions are signed out."""
        return self._account(Instruction.PASSWORD_SET, current, new)

    def remove_password(self, current: str) -> str:
        """Remove the password (only while a provider stays linked)."""
        return self._account(Instruction.PASSWORD_REMOVE, current)

    def link_provider(self, provider: str, id_token: str, nonce: str) -> str:
        """Link a provider sign-in to the account of this session."""
        return self._account(Instruction.PROVIDER_LINK, provider, id_token, nonce)

    def unlink_provider(self, provider: str) -> str:
        """Unlink a provider (only while another way in remains)."""
        return self._account(Instruction.PROVIDER_UNLINK, provider)

    def forgot_password(self, who: str) -> str:
        """Ask for a reset code by username or e-mail; the answer is the same either way."""
        return self._account(Instruction.PASSWORD_FORGOT, who, session=False)

    def reset_password(self, code: str, new: str) -> str:
        """Set a new password with a mailed code; every session of the account ends."""
        return self._account(Instruction.PASSWORD_RESET, code, new, session=False)

    def verify_email(self, code: str) -> str:
        """Confirm the account's e-mail address with a mailed code."""
        return self._account(Instruction.EMAIL_VERIFY, code, session=False)

    def sessions(self) -> list[AccountSession]:
        """This account's live sessions, newest first (``current`` marks this one)."""
        value = self._data_args(Instruction.GET_SESSIONS)
        return [AccountSession.from_record(fields) for fields in answer_records(value)]

    def sign_in_methods(self) -> SignInMethods:
        """Whether the account has a password, its e-mail, and its linked providers."""
        result = from_record(self._data_args(Instruction.GET_SIGN_IN_METHODS))
        return SignInMethods.from_record(result, answer_records(result.get("providers")))

    def revoke_session(self, handle: str) -> str:
        """End one of this account's sessions, by the handle ``sessions()`` shows."""
        answer = self._account(Instruction.SESSION_REVOKE, handle)
        if "(this one)" in answer:
            self._forget_session()
        return answer

    def logout_all(self, keep_this: bool = True) -> str:
        """End every session of the account (this one too unless ``keep_this``)."""
        answer = self._account(Instruction.LOGOUT_ALL, keep_this)
        if not keep_this:
            self._forget_session()
        return answer

    def delete_account(
        self, password: str = "", provider: str = "", id_token: str = "", nonce: str = ""
    ) -> str:
        """Delete the account: with its password, or a fresh sign-in with a linked provider."""
        answer = self._account(Instruction.ACCOUNT_DELETE, password, provider, id_token, nonce)
        self._forget_session()
        return answer

    def set_profile(self, public: bool) -> str:
        """Make your profile public (others see your positions and trades, not your cash)
        or private (the default: others cannot tell you exist); returns the server's
        confirmation."""
        message = Message(Instruction.SET_PROFILE_VISIBILITY, (public,), session_id=self._session())
        reply = self._command(message)
        self._expect(reply, Instruction.ACCOUNT_SUCCESS)
        return answer_str(reply.arg("message"))
