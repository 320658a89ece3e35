"""The notification log (table ``notifications``, migration ``0002_notifications.sql``).

It makes "never send the same insight lifecycle step twice to the same destination" hold across
restarts, replays and consumer-group rebalances. Per (insight_id, lifecycle, destination_key):

1. :meth:`NotificationLog.claim` inserts a ``pending`` row owned by this process
   (``INSERT ... ON CONFLICT DO NOTHING``). If the row exists, it decides from its state:

   ========================================  =================================================
   row found                                 result
   ========================================  =================================================
   ``sent``                                  ``SENT``: skip (metric ``skipped{already_sent}``)
   ``failed``                                ``FAILED``: skip, final (``already_failed``)
   ``pending``, not in flight                ``RESUMED``: taken over (owner := us) and sent.
                                             Safe: no attempt can have succeeded, because
                                             every attempt's failure was recorded before the
                                             row left the in-flight state. The previous owner,
                                             if still alive, loses the row at its next
                                             :meth:`begin_attempt` and stops.
   ``pending``, in flight, owned by this     ``RESUMED``: a database write after an attempt
   process, no request of ours outstanding   failed (the process knows what happened on the
                                             wire), so nothing is in doubt.
   ``pending``, in flight, recently started  ``BUSY``: another live notifier is mid-request;
                                             the caller waits and claims again.
   ``pending``, in flight, started more      ``UNKNOWN_OUTCOME``: the owner died between the
   than ``stale_after`` ago                  start of a request and recording its outcome (the
                                             crash window). The message may or may not have
                                             arrived. Taken over; the caller decides per
                                             destination (below).
   ========================================  =================================================

2. Before every HTTP attempt, :meth:`begin_attempt` sets ``in_flight`` and bumps ``attempts``,
   only if we still own the row (compare-and-set on ``owner``).
3. A retriable failure is recorded by :meth:`attempt_failed` (``in_flight`` cleared); the end by
   :meth:`mark_sent` or :meth:`mark_failed`.

The crash window is therefore exactly one HTTP request (bounded by the attempt deadline), and it
is the only case where the outcome is unknown. The decision (made in ``service.py``):

- **Slack** (``slack_at_most_once``, default on): at-most-once. An ``UNKNOWN_OUTCOME`` row is
  marked ``failed`` with ``failure_kind = 'unknown_outcome'`` and not resent: a duplicate in a
  channel is visible noise and Slack gives us no idempotency key. The operator can see these rows.
- **Signed webhooks**: at-least-once. The row is taken over and the message resent with the same
  ``webhook-id``; Standard Webhooks receivers dedupe on that id, so the result is effectively once.
- **Console**: at-least-once (a repeated line on stdout hurts nobody).

The same rule covers an attempt that ends ambiguously while the process lives (read timeout,
connection dropped after the request was written): Slack records ``unknown_outcome`` at once,
webhooks retry (see ``delivery.py``). A ``failed`` row is final: nothing retries it on its own; an
operator who wants it resent deletes the row and replays the topic (or waits for the next
lifecycle step).

``stale_after`` must exceed the attempt deadline (HTTP timeout) plus the time to record an
outcome; the service uses the HTTP timeout + 20 s. Database time (``clock_timestamp()``) is used
for every timestamp so that notifiers on different hosts agree. All SQL is parameterised.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

from vectoros.db import PgPool


class ClaimState(StrEnum):
    NEW = "new"
    RESUMED = "resumed"
    UNKNOWN_OUTCOME = "unknown_outcome"
    BUSY = "busy"
    SENT = "sent"
    FAILED = "failed"


@dataclass(frozen=True)
class NotificationRef:
    """The dedupe key of one notification."""

    insight_id: str
    lifecycle: str
    destination_key: str


@dataclass(frozen=True)
class NotificationRow:
    """What is stored about one notification (for operators and tests)."""

    ref: NotificationRef
    destination_type: str
    destination_label: str
    status: str
    attempts: int
    in_flight: bool
    owner: str
    failure_kind: str | None
    last_status_code: int | None
    last_error: str | None


_KEY = "insight_id = $1 AND lifecycle = $2 AND destination_key = $3"

_INSERT = """
INSERT INTO notifications (
    insight_id, lifecycle, destination_key, destination_type, destination_label,
    workspace_id, deal_id, rule, priority, owner, created_at, updated_at
) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, clock_timestamp(), clock_timestamp())
ON CONFLICT (insight_id, lifecycle, destination_key) DO NOTHING
RETURNING attempts
"""

# $6: "none of my own requests is outstanding": this process knows that a row it owns which
# still says in_flight is a leftover of a failed database write, not an unknown request.
_TAKE_OVER = f"""
WITH old AS (
    SELECT owner, in_flight FROM notifications WHERE {_KEY} AND status = 'pending' FOR UPDATE
)
UPDATE notifications AS n
   SET owner = $4, updated_at = clock_timestamp()
  FROM old
 WHERE n.insight_id = $1 AND n.lifecycle = $2 AND n.destination_key = $3
   AND (NOT old.in_flight
        OR n.attempt_started_at < clock_timestamp() - make_interval(secs => $5)
        OR (old.owner = $4 AND $6))
RETURNING old.in_flight AND NOT (old.owner = $4 AND $6) AS unknown, n.attempts
"""  # noqa: S608 - constant fragments only; every value is a parameter

_STATUS = f"SELECT status, in_flight FROM notifications WHERE {_KEY}"  # noqa: S608

_BEGIN = f"""
UPDATE notifications
   SET in_flight = true, attempts = attempts + 1,
       attempt_started_at = clock_timestamp(), updated_at = clock_timestamp()
 WHERE {_KEY} AND owner = $4 AND status = 'pending'
RETURNING attempts
"""  # noqa: S608

_ATTEMPT_FAILED = f"""
UPDATE notifications
   SET in_flight = false, last_status_code = $5, last_error = $6, updated_at = clock_timestamp()
 WHERE {_KEY} AND owner = $4 AND status = 'pending'
"""  # noqa: S608

# Unconditional on the owner: if the message went out, that is the truth, whoever recorded
# something else in the meantime.
_SENT = f"""
UPDATE notifications
   SET status = 'sent', in_flight = false, failure_kind = NULL,
       sent_at = clock_timestamp(), updated_at = clock_timestamp()
 WHERE {_KEY}
"""  # noqa: S608

_FAILED = f"""
UPDATE notifications
   SET status = 'failed', in_flight = false, failure_kind = $5, last_status_code = $6,
       last_error = $7, updated_at = clock_timestamp()
 WHERE {_KEY} AND owner = $4 AND status = 'pending'
"""  # noqa: S608

_FETCH = f"""
SELECT insight_id, lifecycle, destination_key, destination_type, destination_label, status,
       attempts, in_flight, owner, failure_kind, last_status_code, last_error
  FROM notifications WHERE {_KEY}
"""  # noqa: S608


@dataclass(frozen=True)
class Claim:
    state: ClaimState
    attempts: int = 0

    @property
    def owned(self) -> bool:
        """True when this process now owns the row and must finish it."""
        return self.state in (ClaimState.NEW, ClaimState.RESUMED, ClaimState.UNKNOWN_OUTCOME)


class NotificationStore(Protocol):
    """What the service needs of the log (``NotificationLog``; tests use an in-memory fake)."""

    async def claim(
        self,
        ref: NotificationRef,
        *,
        destination_type: str,
        destination_label: str,
        workspace_id: str,
        deal_id: str,
        rule: str,
        priority: str,
        own_requests_settled: bool = True,
    ) -> Claim: ...

    async def begin_attempt(self, ref: NotificationRef) -> bool: ...

    async def attempt_failed(
        self, ref: NotificationRef, status_code: int | None, error: str
    ) -> None: ...

    async def mark_sent(self, ref: NotificationRef) -> None: ...

    async def mark_failed(
        self, ref: NotificationRef, kind: str, status_code: int | None, error: str | None
    ) -> None: ...


class NotificationLog:
    """The ``notifications`` table, on an asyncpg pool."""

    def __init__(
        self, pool: PgPool, *, stale_after_seconds: float, owner: str | None = None
    ) -> None:
        self._pool = pool
        self._stale_after = float(stale_after_seconds)
        self.owner = owner or uuid.uuid4().hex

    @staticmethod
    def _key(ref: NotificationRef) -> tuple[str, str, str]:
        return (ref.insight_id, ref.lifecycle, ref.destination_key)

    async def claim(
        self,
        ref: NotificationRef,
        *,
        destination_type: str,
        destination_label: str,
        workspace_id: str,
        deal_id: str,
        rule: str,
        priority: str,
        own_requests_settled: bool = True,
    ) -> Claim:
        """Claim a notification before sending it (see the module docstring for the states).

        ``own_requests_settled``: this process has no request of unknown outcome for ``ref``
        (true unless one was cancelled mid-flight), so a row it owns that still says
        ``in_flight`` (a database write failed after the attempt) can be resumed at once.
        """
        key = self._key(ref)
        for _ in range(3):  # the row can change between the statements; settle in a few rounds
            attempts = await self._pool.fetchval(
                _INSERT,
                *key,
                destination_type,
                destination_label,
                workspace_id,
                deal_id,
                rule,
                priority,
                self.owner,
            )
            if attempts is not None:
                return Claim(ClaimState.NEW, int(attempts))
            row = await self._pool.fetchrow(
                _TAKE_OVER, *key, self.owner, self._stale_after, own_requests_settled
            )
            if row is not None:
                state = ClaimState.UNKNOWN_OUTCOME if row["unknown"] else ClaimState.RESUMED
                return Claim(state, int(row["attempts"]))
            row = await self._pool.fetchrow(_STATUS, *key)
            if row is None:
                continue  # deleted by an operator in between: insert again
            if row["status"] == "sent":
                return Claim(ClaimState.SENT)
            if row["status"] == "failed":
                return Claim(ClaimState.FAILED)
            if row["in_flight"]:
                return Claim(ClaimState.BUSY)
        return Claim(ClaimState.BUSY)

    async def begin_attempt(self, ref: NotificationRef) -> bool:
        """Mark an HTTP attempt as started; False if another notifier took the row over."""
        attempts = await self._pool.fetchval(_BEGIN, *self._key(ref), self.owner)
        return attempts is not None

    async def attempt_failed(
        self, ref: NotificationRef, status_code: int | None, error: str
    ) -> None:
        await self._pool.execute(_ATTEMPT_FAILED, *self._key(ref), self.owner, status_code, error)

    async def mark_sent(self, ref: NotificationRef) -> None:
        await self._pool.execute(_SENT, *self._key(ref))

    async def mark_failed(
        self, ref: NotificationRef, kind: str, status_code: int | None, error: str | None
    ) -> None:
        await self._pool.execute(_FAILED, *self._key(ref), self.owner, kind, status_code, error)

    async def fetch(self, ref: NotificationRef) -> NotificationRow | None:
        row = await self._pool.fetchrow(_FETCH, *self._key(ref))
        return None if row is None else _row(row)

    async def fetch_all(self) -> list[NotificationRow]:
        """Every row (tests and small installations only)."""
        rows = await self._pool.fetch(
            "SELECT insight_id, lifecycle, destination_key, destination_type, destination_label,"
            " status, attempts, in_flight, owner, failure_kind, last_status_code, last_error"
            " FROM notifications ORDER BY created_at"
        )
        return [_row(r) for r in rows]


def _row(row: Any) -> NotificationRow:
    return NotificationRow(
        ref=NotificationRef(row["insight_id"], row["lifecycle"], row["destination_key"]),
        destination_type=row["destination_type"],
        destination_label=row["destination_label"],
        status=row["status"],
        attempts=int(row["attempts"]),
        in_flight=bool(row["in_flight"]),
        owner=row["owner"],
        failure_kind=row["failure_kind"],
        last_status_code=row["last_status_code"],
        last_error=row["last_error"],
    )
