"""The model rules' state and outbox in PostgreSQL (``model_watch``, ``model_insight_outbox``).

``apply`` runs the model rules (``consumer.history.model_rules``) on a batch's scores and closed
deals in one transaction: it makes sure each deal has a watch row, locks them in key order,
folds the scores in time order, resolves the closed deals' open insights, writes the watches
back and adds the insights to the outbox. Deals imported from a CRM export are left out.

``Outbox`` sends them: every row still in the outbox (up to ``PENDING_PER_BATCH``) goes out
with each handled batch, and the rows a batch sent are deleted once the batch after it is
handled (the loop handles a batch only after the one before was published and committed; a
batch handled again after a failed publish is the same object and deletes nothing). A crash
between the transaction and the publish loses nothing: the rows go out with the first batch
after the restart. Delivery is at least once: a row may go out more than once, with the same
``insight_id`` and lifecycle step, which the sink and the notifier take once. With several
processes in the group each sends the rows still there and deletes only those it sent (a row
another process added after this one read the outbox stays for that one).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import NamedTuple

from consumer.history.model_rules import Watch, from_json, on_close, on_score, to_json
from consumer.intelligence.projection import DealHistory
from consumer.intelligence.scoring import score_event
from consumer.templates import Insight
from consumer.thresholds import RulesConfig
from schemas.scores import DealScore
from vectoros.db import PgConnection

Key = tuple[str, str]

_ENSURE_WATCHES = """
INSERT INTO model_watch (workspace_id, deal_id, state)
SELECT k.workspace_id, k.deal_id, $3::jsonb
FROM unnest($1::text[], $2::text[]) AS k(workspace_id, deal_id)
ORDER BY k.workspace_id, k.deal_id
ON CONFLICT (workspace_id, deal_id) DO NOTHING
"""

_LOCK_WATCHES = """
SELECT w.workspace_id, w.deal_id, w.state
FROM model_watch w
JOIN unnest($1::text[], $2::text[]) AS k(workspace_id, deal_id)
  ON w.workspace_id = k.workspace_id AND w.deal_id = k.deal_id
ORDER BY w.workspace_id, w.deal_id
FOR UPDATE OF w
"""

_SAVE_WATCH = """
INSERT INTO model_watch (workspace_id, deal_id, state) VALUES ($1, $2, $3)
ON CONFLICT (workspace_id, deal_id) DO UPDATE SET state = EXCLUDED.state, updated_at = now()
"""

_ADD = "INSERT INTO model_insight_outbox (deal_id, value) VALUES ($1, $2)"
_PENDING = "SELECT seq, deal_id, value FROM model_insight_outbox ORDER BY seq LIMIT $1"
PENDING_PER_BATCH = 10_000
"""The most outbox rows sent with one batch (a backlog goes out over the next batches)."""
_SENT = "DELETE FROM model_insight_outbox WHERE seq = ANY($1::bigint[])"


class Pending(NamedTuple):
    """An insight in the outbox: its deal (the message key) and its JSON."""

    seq: int
    deal_id: str
    value: bytes


async def apply(
    conn: PgConnection,
    scores: Sequence[DealScore],
    histories: Mapping[Key, DealHistory],
    closed: Iterable[DealHistory],
    rules: RulesConfig,
) -> list[Insight]:
    """Run the model rules on ``scores`` (each with its deal's history in ``histories``) and on
    the ``closed`` deals, store the watches and add the insights to the outbox; the insights."""
    # imported deals are never watched (``model_rules``): no row for them either
    scores = [s for s in scores if _watched(histories.get((s.workspace_id, s.deal_id)))]
    closed = [h for h in closed if _watched(h)]
    keys = sorted({(s.workspace_id, s.deal_id) for s in scores} | {_key(h) for h in closed})
    if not keys:
        return []
    out: list[Insight] = []
    workspaces, deals = [k[0] for k in keys], [k[1] for k in keys]
    async with conn.transaction():
        # a row for each deal first, so that the lock below holds for a deal never watched yet
        # too (two processes scoring it cannot both start from nothing)
        await conn.execute(_ENSURE_WATCHES, workspaces, deals, to_json(Watch()))
        rows = await conn.fetch(_LOCK_WATCHES, workspaces, deals)
        watches = {(r["workspace_id"], r["deal_id"]): from_json(r["state"]) for r in rows}
        changed: dict[Key, Watch] = {}
        for s in sorted(scores, key=lambda s: (s.as_of, s.model_version)):
            key = (s.workspace_id, s.deal_id)
            h = histories[key]
            before = changed.get(key) or watches.get(key) or Watch()
            after, insights = on_score(h, before, score_event(s), rules.for_workspace(key[0]))
            if after is not before:
                changed[key] = after
            out += insights
        for h in closed:
            key = _key(h)
            before = changed.get(key) or watches.get(key) or Watch()
            after, insights = on_close(h, before, rules.for_workspace(key[0]))
            if after is not before:
                changed[key] = after
            out += insights
        if changed:
            await conn.executemany(
                _SAVE_WATCH, [(*k, to_json(w)) for k, w in sorted(changed.items())]
            )
        if out:
            await conn.executemany(_ADD, [(i.deal_id, i.value) for i in out])
    return out


def _key(h: DealHistory) -> Key:
    return h.workspace_id, h.deal_id


def _watched(h: DealHistory | None) -> bool:
    return h is not None and h.source == "events"


class Outbox:
    """Which outbox rows the last handled batch sent (``batch`` is the decoded batch object:
    the loop passes the same one again when it handles a batch again)."""

    def __init__(self) -> None:
        self._batch: object | None = None
        self._sent: list[int] = []

    async def pending(self, conn: PgConnection, batch: object) -> list[Pending]:
        """Delete what the previous batch sent (it was published), then every row left, to
        send with ``batch``."""
        if self._batch is not None and batch is not self._batch:
            await conn.execute(_SENT, self._sent)
            self._batch, self._sent = None, []
        rows = [
            Pending(r["seq"], r["deal_id"], r["value"])
            for r in await conn.fetch(_PENDING, PENDING_PER_BATCH)
        ]
        if rows:
            self._batch, self._sent = batch, [r.seq for r in rows]
        return rows
