"""The competition calls of the client (docs/PROTOCOL.md section 16): create, join,
leave, list and rank competitions."""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from papertrader.client.base import ClientBase, answer_records, answer_str
from papertrader.client.models import Competition, Leaderboard, LeaderboardEntry
from papertrader.protocol import Instruction, Message
from papertrader.protocol.records import from_record, to_record
from papertrader.protocol.values import Value


class CompetitionCalls(ClientBase):
    """Competitions: separate accounts with their own cash, ranked by return."""

    def create_competition(
        self,
        name: str,
        ends_at: datetime.datetime,
        *,
        starts_at: datetime.datetime | None = None,
        starting_cash: Decimal | None = None,
        symbols: Sequence[str] = (),
        private: bool = False,
    ) -> Competition:
        """Create a competition (you are not a member until you join it); a private
        one comes back with its ``join_code`` for the members."""
        terms: dict[str, Any] = {
            "name": name,
            "starts_at": starts_at,
            "ends_at": ends_at,
            "starting_cash": starting_cash,
            "symbols": list(symbols) or None,
            "private": private,
        }
        record = to_record({k: v for k, v in terms.items() if v is not None})
        return self._competition_command(Instruction.CREATE_COMPETITION, record)

    def join_competition(self, name: str = "", join_code: str = "") -> Competition:
        """Join a public competition by name, or a private one by its join code; joining
        again changes nothing."""
        return self._competition_command(Instruction.JOIN_COMPETITION, name, join_code)

    def leave_competition(self, name: str) -> str:
        """Leave a competition: your account in it, its positions and orders, are closed."""
        message = Message(Instruction.LEAVE_COMPETITION, (name,), session_id=self._session())
        reply = self._command(message)
        self._expect(reply, Instruction.COMPETITION_SUCCESS)
        return answer_str(reply.arg("message"))

    def competitions(self) -> list[Competition]:
        """The competitions you may see: public ones, private ones you joined or created."""
        value = self._data_args(Instruction.GET_COMPETITIONS)
        return [Competition.from_record(fields) for fields in answer_records(value)]

    def competition(self, name: str) -> Competition:
        """One competition, with your own account in it (``account``) if you joined."""
        fields = from_record(self._data_args(Instruction.GET_COMPETITION, name))
        account = fields.get("account")
        if account is not None:
            account = from_record(account)
            account["positions"] = answer_records(account.get("positions"))
            fields["account"] = account
        return Competition.from_record(fields)

    def leaderboard(self, name: str, limit: int = 0) -> Leaderboard:
        """The competition's members ranked by return, best first (``limit`` 0: 100)."""
        fields = from_record(self._data_args(Instruction.GET_LEADERBOARD, name, limit))
        entries = tuple(
            LeaderboardEntry.from_record(e) for e in answer_records(fields.get("entries"))
        )
        return Leaderboard(
            competition=fields["competition"],
            status=fields["status"],
            starting_cash=fields["starting_cash"],
            members=fields["members"],
            priced_at=fields.get("priced_at"),
            your_rank=fields.get("your_rank"),
            entries=entries,
        )

    def _competition_command(self, instruction: Instruction, *args: Value) -> Competition:
        reply = self._command(Message(instruction, args, session_id=self._session()))
        self._expect(reply, Instruction.COMPETITION)
        return Competition.from_record(from_record(reply.arg("competition")))
