"""The daily budget per workspace: model calls and tokens per UTC day.

Before an insight goes to the model, one call is *reserved* for its workspace and day; the
reservation succeeds only while both the calls and the tokens used so far are under their
limits. After the call its tokens (all kinds, cached ones included) are added. Past a limit the
insight keeps its rule text (``vectoros_enricher_fallbacks_total{reason="budget"}``) until the
next UTC day. A call is one insight: the retries of one insight do not count again.

On PostgreSQL (table ``enrichment_budget``) the reservation is one conditional upsert, so several
enrichers share one budget and a restart does not reset it. The token limit is checked before a
call, so the last call of a day can go over it by one call's tokens.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from vectoros.db import PgPool


class Refusal(StrEnum):
    CALLS = "calls"
    TOKENS = "tokens"


@dataclass(frozen=True, slots=True)
class Reservation:
    """The answer to a reservation: ``refused`` is None when the call may go ahead."""

    refused: Refusal | None
    calls: int
    tokens: int

    @property
    def ok(self) -> bool:
        return self.refused is None


class Budget(Protocol):
    max_calls: int
    max_tokens: int

    async def reserve(self, workspace_id: str, day: dt.date) -> Reservation: ...

    async def add_tokens(self, workspace_id: str, day: dt.date, tokens: int) -> None: ...


def _refusal(calls: int, tokens: int, max_calls: int, max_tokens: int) -> Refusal | None:
    if calls >= max_calls:
        return Refusal.CALLS
    if tokens >= max_tokens:
        return Refusal.TOKENS
    return None


class InMemoryBudget:
    """One process's budget (unit tests)."""

    def __init__(self, max_calls: int, max_tokens: int) -> None:
        self.max_calls = max_calls
        self.max_tokens = max_tokens
        self.used: dict[tuple[str, dt.date], tuple[int, int]] = {}

    async def reserve(self, workspace_id: str, day: dt.date) -> Reservation:
        calls, tokens = self.used.get((workspace_id, day), (0, 0))
        refused = _refusal(calls, tokens, self.max_calls, self.max_tokens)
        if refused is None:
            calls += 1
            self.used[(workspace_id, day)] = (calls, tokens)
        return Reservation(refused, calls, tokens)

    async def add_tokens(self, workspace_id: str, day: dt.date, tokens: int) -> None:
        calls, used = self.used.get((workspace_id, day), (0, 0))
        self.used[(workspace_id, day)] = (calls, used + tokens)


_RESERVE = """
INSERT INTO enrichment_budget AS b (workspace_id, day, calls) VALUES ($1, $2, 1)
ON CONFLICT (workspace_id, day) DO UPDATE SET calls = b.calls + 1
 WHERE b.calls < $3 AND b.tokens < $4
RETURNING calls, tokens
"""

_USED = "SELECT calls, tokens FROM enrichment_budget WHERE workspace_id = $1 AND day = $2"

_ADD_TOKENS = """
INSERT INTO enrichment_budget AS b (workspace_id, day, tokens) VALUES ($1, $2, $3)
ON CONFLICT (workspace_id, day) DO UPDATE SET tokens = b.tokens + EXCLUDED.tokens
"""


class PostgresBudget:
    """The budget in table ``enrichment_budget`` (see the module docstring)."""

    def __init__(self, pool: PgPool, max_calls: int, max_tokens: int) -> None:
        self._pool = pool
        self.max_calls = max_calls
        self.max_tokens = max_tokens

    async def reserve(self, workspace_id: str, day: dt.date) -> Reservation:
        if self.max_calls <= 0 or self.max_tokens <= 0:
            return Reservation(Refusal.CALLS if self.max_calls <= 0 else Refusal.TOKENS, 0, 0)
        row = await self._pool.fetchrow(
            _RESERVE, workspace_id, day, self.max_calls, self.max_tokens
        )
        if row is not None:
            return Reservation(None, int(row["calls"]), int(row["tokens"]))
        used = await self._pool.fetchrow(_USED, workspace_id, day)
        calls, tokens = (int(used["calls"]), int(used["tokens"])) if used else (0, 0)
        refused = _refusal(calls, tokens, self.max_calls, self.max_tokens) or Refusal.CALLS
        return Reservation(refused, calls, tokens)

    async def add_tokens(self, workspace_id: str, day: dt.date, tokens: int) -> None:
        if tokens > 0:
            await self._pool.execute(_ADD_TOKENS, workspace_id, day, tokens)
