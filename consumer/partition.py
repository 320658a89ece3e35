"""Everything the monitor keeps for one partition of ``deal-events``: the deals, the partition
clock, the deadline index, recently seen event ids and recently closed deals.

No I/O, no wall clock, no logging: the shell feeds it decoded events and ticks and publishes what
comes back. Time is the partition clock: the largest ``occurred_at`` / tick ``at`` seen so far.
"""

from __future__ import annotations

import heapq
from collections import deque
from dataclasses import dataclass, field

from consumer.lifecycle import Change, Resolution, reconcile, resolve_all
from consumer.rules import fired, next_deadline
from consumer.state import DAY_MS, DealState, apply_event, to_ms
from consumer.templates import render
from consumer.thresholds import RulesConfig
from schemas.events import DealClosed, DealEvent, Outcome, Tick
from schemas.insights import InsightEvent


@dataclass(slots=True)
class StepResult:
    """What one input did: the insights to publish and whether it was a duplicate/ignored."""

    insights: list[InsightEvent] = field(default_factory=list)
    duplicate: bool = False
    ignored: bool = False
    deals_touched: int = 0


class PartitionState:
    """State of one partition; ``apply`` and ``tick`` are its only mutators."""

    def __init__(
        self,
        rules: RulesConfig,
        *,
        dedupe_window: int = 100_000,
        tombstone_days: float = 30.0,
    ) -> None:
        self.rules = rules
        self.clock_ms = 0
        self.deals: dict[str, DealState] = {}
        self.deadline_of: dict[str, int] = {}
        self._heap: list[tuple[int, str]] = []
        self._seen: set[str] = set()
        self._seen_order: deque[str] = deque()
        self._dedupe_window = dedupe_window
        self.closed: dict[str, int] = {}
        self._closed_order: deque[tuple[int, str]] = deque()
        self._tombstone_ms = int(tombstone_days * DAY_MS)
        self.dirty: set[str] = set()

    def load(
        self,
        deals: dict[str, DealState],
        closed: dict[str, int],
        clock_ms: int,
        deadlines: dict[str, int] | None = None,
    ) -> None:
        """Replace the state with a restored one. ``deadlines`` are the deals' places in the
        deadline index as checkpointed (one may be due already: the clock can pass a deadline
        between two ticks); a deal without one gets its next deadline after the clock."""
        self.deals = dict(deals)
        self.closed = dict(closed)
        self._closed_order = deque(sorted((at, d) for d, at in closed.items()))
        self.clock_ms = clock_ms
        self.deadline_of = {}
        saved = deadlines or {}
        for deal in self.deals.values():
            due = saved.get(deal.deal_id)
            if due is None:
                th = self.rules.for_workspace(deal.workspace_id)
                due = next_deadline(deal, clock_ms, th)
            if due is not None:
                self.deadline_of[deal.deal_id] = due
        self._compact_heap()
        self.dirty.clear()

    # -- inputs -------------------------------------------------------------------------------

    def apply(self, event: DealEvent) -> StepResult:
        """Apply one deal event and evaluate that deal at the partition clock."""
        out = StepResult()
        if self._is_duplicate(event.event_id):
            out.duplicate = True
            return out
        self._advance(to_ms(event.occurred_at))
        deal_id = event.deal_id
        if deal_id in self.closed:
            out.ignored = True
            return out
        before = self.deals.get(deal_id)
        after = apply_event(before, event)
        out.deals_touched = 1
        if after is None:
            if before is not None:
                why = _resolution_for(event)
                out.insights.extend(self._render(before, resolve_all(before, why)))
                del self.deals[deal_id]
                self.deadline_of.pop(deal_id, None)
            self._tombstone(deal_id)
            self.dirty.add(deal_id)
            return out
        out.insights.extend(self._evaluate(after))
        return out

    def tick(self, tick: Tick) -> StepResult:
        """Advance the clock and evaluate only the deals whose deadline has come."""
        out = StepResult()
        if tick.event_id is not None and self._is_duplicate(tick.event_id):
            out.duplicate = True  # a redelivered tick must not evaluate anything early
            return out
        self._advance(to_ms(tick.at))
        now = self.clock_ms
        heap = self._heap
        while heap and heap[0][0] <= now:
            due, deal_id = heapq.heappop(heap)
            if self.deadline_of.get(deal_id) != due:
                continue  # superseded entry (lazy deletion)
            del self.deadline_of[deal_id]
            deal = self.deals.get(deal_id)
            if deal is None:
                continue
            out.deals_touched += 1
            out.insights.extend(self._evaluate(deal))
        self._prune_tombstones()
        return out

    # -- internals ----------------------------------------------------------------------------

    def _advance(self, at_ms: int) -> None:
        if at_ms > self.clock_ms:
            self.clock_ms = at_ms

    def _is_duplicate(self, event_id: str) -> bool:
        if event_id in self._seen:
            return True
        self._seen.add(event_id)
        self._seen_order.append(event_id)
        if len(self._seen_order) > self._dedupe_window:
            self._seen.discard(self._seen_order.popleft())
        return False

    def _evaluate(self, deal: DealState) -> list[InsightEvent]:
        now = self.clock_ms
        th = self.rules.for_workspace(deal.workspace_id)
        deal, changes = reconcile(deal, fired(deal, now, th), now)
        self.deals[deal.deal_id] = deal
        self.dirty.add(deal.deal_id)
        due = next_deadline(deal, now, th)
        if due is None:
            self.deadline_of.pop(deal.deal_id, None)
        elif self.deadline_of.get(deal.deal_id) != due:
            self.deadline_of[deal.deal_id] = due
            heapq.heappush(self._heap, (due, deal.deal_id))
            if len(self._heap) > 2 * len(self.deadline_of) + 1024:
                self._compact_heap()
        return self._render(deal, changes) if changes else []

    def _compact_heap(self) -> None:
        """Drop superseded entries so the index stays proportional to the tracked deals."""
        self._heap = [(due, deal_id) for deal_id, due in self.deadline_of.items()]
        heapq.heapify(self._heap)

    def _render(self, deal: DealState, changes: list[Change]) -> list[InsightEvent]:
        th = self.rules.for_workspace(deal.workspace_id)
        return [render(change, deal, self.clock_ms, th) for change in changes]

    def _tombstone(self, deal_id: str) -> None:
        self.closed[deal_id] = self.clock_ms
        self._closed_order.append((self.clock_ms, deal_id))

    def _prune_tombstones(self) -> None:
        horizon = self.clock_ms - self._tombstone_ms
        order = self._closed_order
        while order and order[0][0] < horizon:
            at, deal_id = order.popleft()
            if self.closed.get(deal_id) == at:
                del self.closed[deal_id]
                self.dirty.add(deal_id)

    @property
    def heap_size(self) -> int:
        return len(self._heap)


def _resolution_for(event: DealEvent) -> Resolution:
    if isinstance(event, DealClosed):
        return Resolution.WON if event.outcome is Outcome.WON else Resolution.LOST
    return Resolution.DELETED
