"""Everything the monitor keeps for one partition of ``deal-events``: the deals, the partition
clock, the deadline index, recently seen event ids and recently closed deals.

No I/O, no wall clock, no logging: the shell feeds it decoded events and ticks and publishes what
comes back. Time is the partition clock: the largest ``occurred_at`` / tick ``at`` seen so far.

Memory is what limits how many deals one process can track, so the deals are kept packed
(``consumer.deal_codec``: one ``bytes`` per deal, holding its next deadline and the digests of
its most recent event ids too) and the deadline index is a wheel of one-minute buckets of deal ids
instead of a heap of ``(deadline, deal_id)`` tuples. An entry whose deal has moved on is skipped
when its bucket comes due (lazy deletion); the buckets are rebuilt when such entries pile up.

A deal known only from partial updates that never gets a stage or a value (``DealState.partial``)
is dropped once no event has come for it for the tombstone period (its open insights resolve as
``forgotten``), so random deal ids cannot grow the state without bound.
"""

from __future__ import annotations

import hashlib
import heapq
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from consumer.deal_codec import DIGEST_SIZE, deadline_of, pack, unpack
from consumer.lifecycle import Change, Resolution, reconcile, resolve_all
from consumer.rules import limits, next_deadline
from consumer.rules.fused import assess
from consumer.state import DAY_MS, DealState, apply_event, copy_state, to_ms
from consumer.templates import Insight, render
from consumer.thresholds import RulesConfig, RuleThresholds
from schemas.events import DealClosed, DealEvent, Outcome, Tick

BUCKET_MS = 60_000
TICK_IDS_KEPT = 1024
TICK_IDS_CHECKPOINTED = 64  # the most recent ones, with the clock: ~an hour of minutely ticks


def event_digest(event_id: str) -> bytes:
    """8 bytes standing for an event id in a deal's list of recent ids (stable across
    processes, unlike ``hash``; a false duplicate needs a 64-bit collision within one deal)."""
    return hashlib.blake2b(event_id.encode(), digest_size=DIGEST_SIZE).digest()


def _seen_before(seen: bytes, digest: bytes) -> bool:
    at = seen.find(digest)
    while at != -1:
        if at % DIGEST_SIZE == 0:
            return True
        at = seen.find(digest, at + 1)  # matched across two digests: look on
    return False


@dataclass(slots=True)
class StepResult:
    """What one input did: the insights to publish and whether it was a duplicate/ignored."""

    insights: list[Insight] = field(default_factory=list)
    duplicate: bool = False
    ignored: bool = False
    deals_touched: int = 0


class DealsView(Mapping[str, DealState]):
    """The tracked deals, unpacked on access (for tests and tools; the hot path reads the
    packed form)."""

    def __init__(self, packed: dict[str, bytes]) -> None:
        self._packed = packed

    def __getitem__(self, deal_id: str) -> DealState:
        return unpack(deal_id, self._packed[deal_id])

    def __iter__(self) -> Iterator[str]:
        return iter(self._packed)

    def __len__(self) -> int:
        return len(self._packed)


class PartitionState:
    """State of one partition; ``apply``, ``tick`` and ``load`` are its only mutators."""

    def __init__(
        self,
        rules: RulesConfig,
        *,
        dedupe_per_deal: int = 16,
        tombstone_days: float = 30.0,
    ) -> None:
        self.rules = rules
        self.clock_ms = 0
        self.packed: dict[str, bytes] = {}
        self._buckets: dict[int, list[str]] = {}
        self._bucket_heap: list[int] = []
        self._entries = 0
        self._seen_limit = dedupe_per_deal * DIGEST_SIZE
        self._tick_ids: set[bytes] = set()
        self._tick_order: deque[bytes] = deque()
        self.closed: dict[str, int] = {}
        self.closed_seen: dict[str, bytes] = {}  # a closed deal's last event-id digests
        self._closed_order: deque[tuple[int, str]] = deque()
        self._tombstone_ms = int(tombstone_days * DAY_MS)
        self.dirty: set[str] = set()

    @property
    def deals(self) -> DealsView:
        return DealsView(self.packed)

    @property
    def deadlines(self) -> dict[str, int]:
        """Every tracked deal's place in the deadline index (deals without one left out)."""
        out = {}
        for deal_id, data in self.packed.items():
            due = deadline_of(data)
            if due is not None:
                out[deal_id] = due
        return out

    def load(
        self,
        packed: dict[str, bytes],
        closed: dict[str, int],
        clock_ms: int,
        *,
        closed_seen: dict[str, bytes] | None = None,
        tick_digests: bytes = b"",
        without_deadline: frozenset[str] = frozenset(),
    ) -> None:
        """Replace the state with a restored one: packed deals (each with its place in the
        deadline index as checkpointed; one may be due already: the clock can pass a deadline
        between two ticks), the tombstones of closed deals and the partition clock. Deals in
        ``without_deadline`` (restored from a format that had none) get their next deadline
        after the clock."""
        self.packed = dict(packed)
        self.closed = dict(closed)
        self.closed_seen = {d: s for d, s in (closed_seen or {}).items() if d in closed}
        self._closed_order = deque(sorted((at, d) for d, at in closed.items()))
        self.clock_ms = clock_ms
        self._tick_ids, self._tick_order = set(), deque()
        for start in range(0, len(tick_digests) - DIGEST_SIZE + 1, DIGEST_SIZE):
            self._remember_tick(tick_digests[start : start + DIGEST_SIZE])
        for deal_id in without_deadline:
            deal = unpack(deal_id, self.packed[deal_id])
            th = self.rules.for_workspace(deal.workspace_id)
            self.packed[deal_id] = pack(deal, next_deadline(deal, clock_ms, th))
        self._rebuild_index()
        self.dirty.clear()

    # -- inputs -------------------------------------------------------------------------------

    def apply(self, event: DealEvent, at_ms: int | None = None) -> StepResult:
        """Apply one deal event and evaluate that deal at the partition clock (``at_ms``: the
        event's time in epoch milliseconds when the caller has it already)."""
        out = StepResult()
        deal_id = event.deal_id
        data = self.packed.get(deal_id)
        before = None if data is None else unpack(deal_id, data)
        digest = event_digest(event.event_id)
        seen = before.seen if before is not None else self.closed_seen.get(deal_id, b"")
        if seen and _seen_before(seen, digest):
            out.duplicate = True
            return out
        at = to_ms(event.occurred_at) if at_ms is None else at_ms
        if at > self.clock_ms:
            self.clock_ms = at
        if deal_id in self.closed:
            out.ignored = True
            return out
        after = apply_event(before, event, at)
        out.deals_touched = 1
        if after is None:
            if before is not None:
                why = _resolution_for(event)
                th = self.rules.for_workspace(before.workspace_id)
                out.insights.extend(self._render(before, resolve_all(before, why), th))
                del self.packed[deal_id]
            self._tombstone(
                deal_id, (seen + digest)[-self._seen_limit :] if self._seen_limit else b""
            )
            self.dirty.add(deal_id)
            return out
        if after is before:
            after = copy_state(before)
        after.seen = (after.seen + digest)[-self._seen_limit :] if self._seen_limit else b""
        if after.stage is None and after.value is None:  # ``after.partial``, inline
            after.last_event_at_ms = max(after.last_event_at_ms, at)
        old_due = None if data is None else deadline_of(data)
        out.insights.extend(self._evaluate(after, old_due))
        return out

    def tick(self, tick: Tick, at_ms: int | None = None) -> StepResult:
        """Advance the clock and evaluate only the deals whose deadline has come."""
        out = StepResult()
        if tick.event_id is not None and self._tick_seen(tick.event_id):
            out.duplicate = True  # a redelivered tick must not evaluate anything early
            return out
        self._advance(to_ms(tick.at) if at_ms is None else at_ms)
        now = self.clock_ms
        now_bucket = now // BUCKET_MS
        heap = self._bucket_heap
        candidates: list[str] = []
        while heap and heap[0] <= now_bucket:
            ids = self._buckets.pop(heapq.heappop(heap))
            self._entries -= len(ids)
            candidates.extend(ids)
        packed = self.packed
        due_now: list[tuple[int, str]] = []
        for deal_id in set(candidates):
            data = packed.get(deal_id)
            if data is None:
                continue  # closed or deleted since
            due = deadline_of(data)
            if due is None:
                continue
            if due <= now:
                due_now.append((due, deal_id))
            elif due // BUCKET_MS <= now_bucket:
                self._index(deal_id, due)  # its bucket was taken but it is not due yet
            # else: a superseded entry; the deal is indexed under its later deadline
        due_now.sort()  # in deadline order, whatever order the entries were indexed in
        for due, deal_id in due_now:
            out.deals_touched += 1
            out.insights.extend(self._evaluate(unpack(deal_id, packed[deal_id]), due))
        self._prune_tombstones()
        return out

    # -- internals ----------------------------------------------------------------------------

    def _advance(self, at_ms: int) -> None:
        if at_ms > self.clock_ms:
            self.clock_ms = at_ms

    def _tick_seen(self, event_id: str) -> bool:
        digest = event_digest(event_id)
        if digest in self._tick_ids:
            return True
        self._remember_tick(digest)
        return False

    def _remember_tick(self, digest: bytes) -> None:
        self._tick_ids.add(digest)
        self._tick_order.append(digest)
        if len(self._tick_order) > TICK_IDS_KEPT:
            self._tick_ids.discard(self._tick_order.popleft())

    @property
    def tick_digests(self) -> bytes:
        """The digests of the last ``TICK_IDS_CHECKPOINTED`` tick ids, oldest first."""
        order = self._tick_order
        if len(order) <= TICK_IDS_CHECKPOINTED:
            return b"".join(order)
        return b"".join(list(order)[-TICK_IDS_CHECKPOINTED:])

    def _evaluate(self, deal: DealState, old_due: int | None) -> list[Insight]:
        now = self.clock_ms
        th = self.rules.for_workspace(deal.workspace_id)
        partial = deal.stage is None and deal.value is None  # ``deal.partial``, inline
        if partial:
            seen_at = max(deal.last_event_at_ms, deal.created_at_ms, deal.last_activity_at_ms)
            if now - seen_at >= self._tombstone_ms:
                return self._forget(deal, th)
        # every registered rule (``consumer.rules.assess`` without its call); rules read no
        # open insights: reconcile changes none
        fired, due = assess(deal, now, th.cache.get("limits") or limits(th))
        deal, changes = reconcile(deal, fired, now)
        if partial:
            drop_at = seen_at + self._tombstone_ms
            if due is None or drop_at < due:
                due = drop_at
        deal_id = deal.deal_id
        self.packed[deal_id] = pack(deal, due)
        self.dirty.add(deal_id)
        if due is not None and due != old_due:
            self._index(deal_id, due)
            if self._entries > 2 * len(self.packed) + 1024:
                self._rebuild_index()
        return self._render(deal, changes, th) if changes else []

    def _forget(self, deal: DealState, th: RuleThresholds) -> list[Insight]:
        """Stop tracking a never-identified deal (a later event starts it afresh)."""
        del self.packed[deal.deal_id]
        self.dirty.add(deal.deal_id)  # the checkpoint writes a tombstone: compaction drops it
        return self._render(deal, resolve_all(deal, Resolution.FORGOTTEN), th)

    def _index(self, deal_id: str, due: int) -> None:
        bucket = due // BUCKET_MS
        ids = self._buckets.get(bucket)
        if ids is None:
            self._buckets[bucket] = [deal_id]
            heapq.heappush(self._bucket_heap, bucket)
        else:
            ids.append(deal_id)
        self._entries += 1

    def _rebuild_index(self) -> None:
        """One entry per deal with a deadline, nothing superseded."""
        self._buckets = {}
        self._bucket_heap = []
        self._entries = 0
        for deal_id, data in self.packed.items():
            due = deadline_of(data)
            if due is not None:
                self._index(deal_id, due)

    def _render(self, deal: DealState, changes: list[Change], th: RuleThresholds) -> list[Insight]:
        return [render(change, deal, self.clock_ms, th) for change in changes]

    def _tombstone(self, deal_id: str, seen: bytes) -> None:
        self.closed[deal_id] = self.clock_ms
        if seen:
            self.closed_seen[deal_id] = seen
        self._closed_order.append((self.clock_ms, deal_id))

    def _prune_tombstones(self) -> None:
        horizon = self.clock_ms - self._tombstone_ms
        order = self._closed_order
        while order and order[0][0] < horizon:
            at, deal_id = order.popleft()
            if self.closed.get(deal_id) == at:
                del self.closed[deal_id]
                self.closed_seen.pop(deal_id, None)
                self.dirty.add(deal_id)

    @property
    def index_entries(self) -> int:
        """Entries in the deadline index, superseded ones included."""
        return self._entries


def _resolution_for(event: DealEvent) -> Resolution:
    if isinstance(event, DealClosed):
        return Resolution.WON if event.outcome is Outcome.WON else Resolution.LOST
    return Resolution.DELETED
