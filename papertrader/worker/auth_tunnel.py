"""Account authorization tunnel (spec 3.2.4): credentials to the master, a session back.

Login and register are decided by the master (it holds the accounts and the
bcrypt hashes); the worker only passes them on, stamped. When the master says
AUTHENTICATED it has also made the session in Redis, bound to the client
address the worker stamped (a worker's Redis user may read sessions, never
write them: docs/REDIS.md); the worker reads it back, checks it against the
client's address and hands the client its token. Resuming (LOGIN_SESSION)
needs no master at all: any worker answers it, even with the master down.
LOGOUT deletes the session, so the master does it.

Before anything is forwarded, :class:`~papertrader.limits.auth.AuthGate`
applies the abuse limits (per address, per username, per e-mail; shared by
all workers in Redis): a refused request gets its failure return with
RATE_LIMITED and never reaches the master's bcrypt. The username's
back-off is read here and counted by the master, which enforces it again.

The account requests of issue 12 (sign-in with a provider, passwords,
reset codes, sessions, deletion) are decided by the master too. The worker
checks the client's session first where one is needed (fresh, from Redis,
against the client's address), applies :class:`~papertrader.limits.accounts.AccountGate`,
and relays the master's ACCOUNT_SUCCESS / ACCOUNT_FAIL. A provider sign-in
that the master accepts ends like a password login: AUTHENTICATED, then the
session (:meth:`AuthTunnel._session_for`).

Passwords, ID tokens and reset codes are never logged, and session ids only
by their first digits.
"""

from __future__ import annotations

import uuid

from loguru import logger

from papertrader.limits.accounts import AccountGate
from papertrader.limits.auth import AuthGate
from papertrader.protocol import FAILURE_RETURN, SCHEMAS, ErrorCode, Instruction, Message, reply_to
from papertrader.store.sessions import SessionError
from papertrader.worker.client_management import ClientInfo, ClientManager, shown
from papertrader.worker.forwarding import for_master
from papertrader.worker.link import Link, LinkError


class AuthTunnel:
    """Answers LOGIN, REGISTER, LOGIN_SESSION and LOGOUT for one worker."""

    def __init__(
        self,
        link: Link,
        clients: ClientManager,
        timeout: float | None = None,
        gate: AuthGate | None = None,
        accounts: AccountGate | None = None,
    ) -> None:
        self._link = link
        self._clients = clients
        self._timeout = timeout
        self._gate = gate
        self._accounts = accounts

    @staticmethod
    def _limited(request: Message, fail: Instruction, client: ClientInfo, reason: str) -> Message:
        logger.info(f"{client.label}: {request.instruction.name} refused: {reason}")
        return reply_to(request, fail, int(ErrorCode.RATE_LIMITED), reason)

    def login(self, request: Message, client: ClientInfo, stamp: int) -> Message:
        """LOGIN(username, password, remember) -> SESSION_ID or LOGIN_FAIL."""
        username = str(request.arg("username"))
        gate = self._gate
        if gate is not None:
            refusal = gate.before_login(client.ip, username)
            if refusal is not None:
                return self._limited(request, Instruction.LOGIN_FAIL, client, refusal)
        try:
            answer = self._link.request(
                for_master(request, client, stamp, with_session=False), self._timeout
            )
        except LinkError as exc:
            logger.warning(f"{client.label}: login for {shown(username)} failed: {exc.reason}")
            return reply_to(request, Instruction.LOGIN_FAIL, int(exc.code), exc.reason)
        # The master counted the outcome in the username's back-off (its reason says
        # the wait a wrong password now imposes).
        if isinstance(answer, Message) and answer.instruction is Instruction.AUTHENTICATED:
            return self._session_for(request, client, answer)
        if isinstance(answer, Message) and answer.instruction is Instruction.LOGIN_FAIL:
            reason = str(answer.arg("reason"))
            logger.info(f"{client.label}: login for {shown(username)} refused: {reason}")
            return reply_to(request, Instruction.LOGIN_FAIL, answer.arg("code"), reason)
        return self._unexpected(request, Instruction.LOGIN_FAIL, answer)

    def _session_for(self, request: Message, client: ClientInfo, answer: Message) -> Message:
        """The one way a sign-in (password or provider) becomes a session: the one the
        master minted (AUTHENTICATED), checked in Redis, as SESSION_ID."""
        session_id = answer.arg("session_id")
        assert isinstance(session_id, uuid.UUID)
        try:
            session = self._clients.open_session(client, session_id)
        except SessionError as exc:
            logger.warning(f"{client.label}: the session the master made is refused: {exc.reason}")
            return reply_to(request, Instruction.LOGIN_FAIL, int(exc.code), exc.reason)
        return reply_to(
            request,
            Instruction.SESSION_ID,
            session.session_id,
            session.expires_at,
            session.username,
        )

    def login_oidc(self, request: Message, client: ClientInfo, stamp: int) -> Message:
        """LOGIN_OIDC(provider, id_token, nonce, remember, username) -> SESSION_ID or LOGIN_FAIL."""
        provider = str(request.arg("provider"))
        if self._accounts is not None:
            refusal = self._accounts.before_oidc(client.ip)
            if refusal is not None:
                return self._limited(request, Instruction.LOGIN_FAIL, client, refusal)
        try:
            answer = self._link.request(
                for_master(request, client, stamp, with_session=False), self._timeout
            )
        except LinkError as exc:
            logger.warning(f"{client.label}: sign-in with {shown(provider)} failed: {exc.reason}")
            return reply_to(request, Instruction.LOGIN_FAIL, int(exc.code), exc.reason)
        if isinstance(answer, Message) and answer.instruction is Instruction.AUTHENTICATED:
            return self._session_for(request, client, answer)
        if isinstance(answer, Message) and answer.instruction is Instruction.LOGIN_FAIL:
            logger.info(
                f"{client.label}: sign-in with {shown(provider)} refused: {answer.arg('reason')!s}"
            )
            return reply_to(request, Instruction.LOGIN_FAIL, *answer.args)
        return self._unexpected(request, Instruction.LOGIN_FAIL, answer)

    def _account_limit(self, request: Message, client: ClientInfo) -> str | None:
        gate = self._accounts
        if gate is None:
            return None
        if request.instruction is Instruction.PASSWORD_FORGOT:
            return gate.before_forgot(client.ip, str(request.arg("who")))
        if request.instruction in (Instruction.PASSWORD_RESET, Instruction.EMAIL_VERIFY):
            return gate.before_code(client.ip)
        return None

    def account(self, request: Message, client: ClientInfo, stamp: int) -> Message:
        """An account request of issue 12 -> the master's ACCOUNT_SUCCESS/ACCOUNT_FAIL
        (SIGN_IN_OPTIONS for GET_SIGN_IN_OPTIONS)."""
        fail = FAILURE_RETURN[request.instruction]
        needs_session = SCHEMAS[request.instruction].needs_session
        if needs_session:
            try:
                self._clients.check_session(client, request.session_id, fresh=True)
            except SessionError as exc:
                return reply_to(request, fail, int(exc.code), exc.reason)
        refusal = self._account_limit(request, client)
        if refusal is not None:
            return self._limited(request, fail, client, refusal)
        try:
            answer = self._link.request(
                for_master(request, client, stamp, with_session=needs_session), self._timeout
            )
        except LinkError as exc:
            logger.warning(f"{client.label}: {request.instruction.name} failed: {exc.reason}")
            return reply_to(request, fail, int(exc.code), exc.reason)
        if isinstance(answer, Message) and answer.instruction in (
            Instruction.ACCOUNT_SUCCESS,
            Instruction.ACCOUNT_FAIL,
            Instruction.SIGN_IN_OPTIONS,
        ):
            if answer.instruction is Instruction.ACCOUNT_FAIL:
                logger.info(
                    f"{client.label}: {request.instruction.name} refused: {answer.arg('reason')!s}"
                )
            return reply_to(request, answer.instruction, *answer.args)
        return self._unexpected(request, fail, answer)

    def register(self, request: Message, client: ClientInfo, stamp: int) -> Message:
        """REGISTER(username, email, password) -> REGISTER_SUCCESS or REGISTER_FAIL."""
        username = str(request.arg("username"))
        if self._gate is not None:
            refusal = self._gate.before_register(client.ip, str(request.arg("email")))
            if refusal is not None:
                return self._limited(request, Instruction.REGISTER_FAIL, client, refusal)
        try:
            answer = self._link.request(
                for_master(request, client, stamp, with_session=False), self._timeout
            )
        except LinkError as exc:
            logger.warning(f"{client.label}: registering {shown(username)} failed: {exc.reason}")
            return reply_to(request, Instruction.REGISTER_FAIL, int(exc.code), exc.reason)
        if isinstance(answer, Message) and answer.instruction in (
            Instruction.REGISTER_SUCCESS,
            Instruction.REGISTER_FAIL,
        ):
            if answer.instruction is Instruction.REGISTER_SUCCESS:
                outcome = "registered"
            else:
                outcome = f"not registered ({answer.arg('reason')!s})"
            logger.info(f"{client.label}: {shown(username)} {outcome}")
            return reply_to(request, answer.instruction, *answer.args)
        return self._unexpected(request, Instruction.REGISTER_FAIL, answer)

    def login_session(self, request: Message, client: ClientInfo) -> Message:
        """LOGIN_SESSION: the same session id back while it is valid (from Redis only)."""
        if self._gate is not None:
            refusal = self._gate.before_resume(client.ip)
            if refusal is not None:
                return self._limited(request, Instruction.LOGIN_FAIL, client, refusal)
        try:
            session = self._clients.check_session(client, request.session_id, fresh=True)
        except SessionError as exc:
            return reply_to(request, Instruction.LOGIN_FAIL, int(exc.code), exc.reason)
        return reply_to(
            request,
            Instruction.SESSION_ID,
            session.session_id,
            session.expires_at,
            session.username,
        )

    def logout(self, request: Message, client: ClientInfo, stamp: int) -> Message:
        """LOGOUT: the master ends the session, for every worker at once."""
        try:
            session = self._clients.check_session(client, request.session_id, fresh=True)
        except SessionError as exc:
            return reply_to(request, Instruction.ERROR, int(exc.code), exc.reason)
        try:
            answer = self._link.request(
                for_master(request, client, stamp, with_session=True), self._timeout
            )
        except LinkError as exc:
            logger.warning(f"{client.label}: logout failed: {exc.reason}")
            return reply_to(request, Instruction.ERROR, int(exc.code), exc.reason)
        if isinstance(answer, Message) and answer.instruction is Instruction.LOGOUT_SUCCESS:
            self._clients.end_session(client, session)
            return reply_to(request, Instruction.LOGOUT_SUCCESS)
        if isinstance(answer, Message) and answer.instruction is Instruction.ERROR:
            return reply_to(request, Instruction.ERROR, *answer.args)
        return self._unexpected(request, Instruction.ERROR, answer)

    @staticmethod
    def _unexpected(request: Message, fail: Instruction, answer: Message | bytes) -> Message:
        what = "DATA" if isinstance(answer, bytes) else answer.instruction.name
        logger.error(f"the master answered {request.instruction.name} with {what}")
        return reply_to(request, fail, int(ErrorCode.INTERNAL), f"the master answered {what}")
