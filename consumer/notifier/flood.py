"""Flood control: which insight notifications go out, grouped how, and when. Pure: no I/O, no
clock (``now`` is passed in, in seconds), no logging; the service persists :meth:`to_state`.

The anchor is Alertmanager; per recipient (a destination) and workspace:

- **Grouping** (``group_wait`` / ``group_interval`` / ``repeat_interval``): the first insight of
  a new group waits ``group_wait`` so that what comes with it is sent in the same message; after
  a message, the group's next one goes out no sooner than ``group_interval`` after it; while the
  insights a group announced are still open (not resolved) and nothing new came, a reminder
  listing them is sent every ``repeat_interval`` (0 = never).
- **Prompt** (``prompt_rank`` / ``prompt_wait``): a raised or escalated insight at or above
  ``prompt_rank`` makes its group go out within ``prompt_wait`` (at most ``group_wait``),
  whatever ``group_interval`` says: urgent news is not held for minutes, and what arrives with it
  still shares its message.
- **Cooldown** per (deal, rule): after a message about a deal's rule, the same deal and rule is
  not announced again for ``cooldown`` unless its priority rose above what was announced. An
  insight raised and then resolved before its group went out is announced neither way.
- **Flapping** per (deal, rule): more than ``flap_threshold`` raised/resolved events within
  ``flap_window`` make the key flapping: its pending notifications are dropped, one ``flapping``
  note goes out (in the group's next message), and nothing more is announced for it until it has
  been quiet for ``flap_window``.
- **Burst guard** per workspace: more than ``burst_threshold`` new insights within
  ``burst_window`` switch the workspace to burst mode: its pending and following insights are
  counted into one ``burst`` summary per recipient, sent ``burst_window`` after the burst began
  (and one more per window while the burst lasts).
- **Inhibition**: an open ``high_value_at_risk`` on a deal silences that deal's ``stale_deal``
  and ``low_probability`` notifications (pending ones are dropped when it arrives).

A replayed event (same insight id and lifecycle) is ignored, so re-offering a batch after a
crash is harmless. Memory is bounded: at most ``max_groups`` groups (beyond that the oldest
group is sent at once and forgotten) and ``max_keys`` per-key states (least recently used
dropped: it loses only its cooldown).
"""

from __future__ import annotations

import hashlib
import heapq
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

Kind = Literal["alert", "digest", "reminder", "burst", "escalation"]

INHIBITOR = "high_value_at_risk"
INHIBITED = frozenset({"stale_deal", "low_probability"})
BURST_SAMPLE = 5  # deals listed in a burst summary (highest value first)
REMINDER_MAX = 50  # open insights a group remembers for its reminders


@dataclass(frozen=True)
class FloodPolicy:
    group_wait: float = 30.0
    group_interval: float = 300.0
    repeat_interval: float = 0.0
    cooldown: float = 3600.0
    flap_window: float = 3600.0
    flap_threshold: int = 4
    burst_threshold: int = 50
    burst_window: float = 60.0
    max_groups: int = 100_000
    max_keys: int = 200_000
    prompt_rank: int | None = None  # raised/escalated at or above it: out within prompt_wait
    prompt_wait: float = 5.0


@dataclass(frozen=True)
class Item:
    """What flood control needs of one insight event; ``payload`` is the event (opaque here).

    ``lifecycle`` is raised, escalated, resolved, or ``flapping`` (the note flood control adds;
    ``count`` is then the number of raised/resolved events in the window)."""

    insight_id: str
    lifecycle: str
    workspace_id: str
    deal_id: str
    rule: str
    rank: int
    value: float | None = None
    payload: str = ""
    count: int = 0

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.workspace_id, self.deal_id, self.rule)

    def to_json(self) -> list[Any]:
        return [
            self.insight_id,
            self.lifecycle,
            self.workspace_id,
            self.deal_id,
            self.rule,
            self.rank,
            self.value,
            self.payload,
            self.count,
        ]

    @classmethod
    def from_json(cls, raw: list[Any]) -> Item:
        return cls(*raw)


@dataclass(frozen=True)
class Message:
    """One message to one recipient. ``items``: the insights listed (for a burst, a sample of
    ``count`` insights whose priorities are counted in ``by_rank``)."""

    message_id: str
    recipient: str
    workspace_id: str
    kind: Kind
    items: tuple[Item, ...]
    count: int
    by_rank: tuple[tuple[int, int], ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "message_id": self.message_id,
            "recipient": self.recipient,
            "workspace_id": self.workspace_id,
            "kind": self.kind,
            "items": [i.to_json() for i in self.items],
            "count": self.count,
            "by_rank": [list(p) for p in self.by_rank],
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Message:
        return cls(
            message_id=raw["message_id"],
            recipient=raw["recipient"],
            workspace_id=raw["workspace_id"],
            kind=raw["kind"],
            items=tuple(Item.from_json(i) for i in raw["items"]),
            count=int(raw["count"]),
            by_rank=tuple((int(a), int(b)) for a, b in raw["by_rank"]),
        )


@dataclass(slots=True)
class _KeyState:
    transitions: list[float] = field(default_factory=list)  # short: a deque costs 600 bytes
    sent_at: float | None = None
    sent_rank: int = -1
    announced: bool = False
    flapping: bool = False


@dataclass(slots=True)
class _Group:
    pending: dict[str, Item] = field(default_factory=dict)  # insight_id -> latest event
    open: dict[str, Item] = field(default_factory=dict)  # announced, not resolved
    last_sent: float | None = None
    due: float | None = None


@dataclass(slots=True)
class _Burst:
    arrivals: list[float] = field(default_factory=list)
    until: float | None = None  # burst mode until then (the summary goes out at that time)
    counts: dict[str, dict[int, int]] = field(default_factory=dict)  # recipient -> rank -> n
    sample: dict[str, dict[str, Item]] = field(default_factory=dict)  # recipient -> top by value


GroupKey = tuple[str, str]  # (recipient, workspace)


class FloodControl:
    """See the module docstring. ``offer`` takes events, ``due`` hands back the messages whose
    time has come; ``next_due`` says when to call ``due`` next."""

    def __init__(self, policy: FloodPolicy) -> None:
        self.policy = policy
        self._seen: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._keys: OrderedDict[tuple[str, str, str], _KeyState] = OrderedDict()
        self._inhibitors: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._groups: OrderedDict[GroupKey, _Group] = OrderedDict()
        self._bursts: dict[str, _Burst] = {}
        self._heap: list[tuple[float, GroupKey]] = []
        self._by_workspace: dict[str, set[GroupKey]] = {}  # the groups of each workspace
        self._not_before: Mapping[str, float] = {}  # of the event being offered
        # insight_id -> (deadline, item): escalate unless resolved (or acknowledged) by then
        self._watches: OrderedDict[str, tuple[float, Item]] = OrderedDict()
        self._ready: list[Message] = []  # sent early (group evicted), returned by the next due()
        self._seq = 0
        self.suppressed: dict[str, int] = {}  # reason -> count, for metrics

    # -- input -----------------------------------------------------------------------------------

    def _suppress(self, reason: str) -> str:
        self.suppressed[reason] = self.suppressed.get(reason, 0) + 1
        return reason

    def offer(
        self,
        item: Item,
        recipients: tuple[str, ...],
        now: float,
        not_before: Mapping[str, float] | None = None,
    ) -> str:
        """Take one event for ``recipients``; returns what became of it (``queued``, or the
        reason it will not be announced on its own: duplicate, cooldown, flapping, inhibited,
        cancelled, unannounced, burst). ``not_before``: per recipient, the earliest time its
        group may go out (quiet hours); what is queued for it waits until then."""
        self._not_before = not_before or {}
        seen = (item.insight_id, item.lifecycle)
        if seen in self._seen:
            return self._suppress("duplicate")
        self._seen[seen] = None
        while len(self._seen) > self.policy.max_keys:
            self._seen.popitem(last=False)
        state = self._key_state(item.key)
        deal = (item.workspace_id, item.deal_id)
        flaps = item.lifecycle in ("raised", "resolved")
        if flaps and self._flaps(state, item, recipients, now):
            return self._suppress("flapping")
        if state.flapping:
            return self._suppress("flapping")
        if item.lifecycle == "resolved":
            self._watches.pop(item.insight_id, None)
            if item.rule == INHIBITOR:
                self._inhibitors.pop(deal, None)
            cancelled = self._drop_pending(
                item.workspace_id, lambda i: i.insight_id == item.insight_id
            )
            for group in self._groups_of(item.workspace_id):
                group.open.pop(item.insight_id, None)
            if cancelled:
                return self._suppress("cancelled")
            if not state.announced:
                return self._suppress("unannounced")
            state.announced = False
            self._queue(item, recipients, now)
            return "queued"
        # raised or escalated
        if item.rule in INHIBITED and deal in self._inhibitors:
            return self._suppress("inhibited")
        if item.rule == INHIBITOR:
            self._inhibitors[deal] = None
            self._inhibitors.move_to_end(deal)
            while len(self._inhibitors) > self.policy.max_keys:
                self._inhibitors.popitem(last=False)
            self._drop_pending(
                item.workspace_id, lambda i: i.deal_id == item.deal_id and i.rule in INHIBITED
            )
        if (
            state.sent_at is not None
            and now - state.sent_at < self.policy.cooldown
            and item.rank <= state.sent_rank
        ):
            return self._suppress("cooldown")
        if self._burst_absorbs(item, recipients, now):
            return self._suppress("burst")
        self._queue(item, recipients, now)
        return "queued"

    def _key_state(self, key: tuple[str, str, str]) -> _KeyState:
        state = self._keys.get(key)
        if state is None:
            state = self._keys[key] = _KeyState()
            while len(self._keys) > self.policy.max_keys:
                self._keys.popitem(last=False)
        else:
            self._keys.move_to_end(key)
        return state

    def _flaps(self, state: _KeyState, item: Item, recipients: tuple[str, ...], now: float) -> bool:
        """Record a raised/resolved event; True when it starts flapping (note queued)."""
        p = self.policy
        window = state.transitions
        if state.flapping and window and now - window[-1] >= p.flap_window:
            state.flapping = False  # quiet for a whole window: settled
            window.clear()
        while window and now - window[0] >= p.flap_window:
            del window[0]
        window.append(now)
        if len(window) > p.flap_threshold + 1:
            del window[: len(window) - p.flap_threshold - 1]
        if state.flapping or len(window) <= p.flap_threshold:
            return False
        state.flapping = True
        self._drop_pending(item.workspace_id, lambda i: i.key == item.key)
        note = Item(
            insight_id=item.insight_id,
            lifecycle="flapping",
            workspace_id=item.workspace_id,
            deal_id=item.deal_id,
            rule=item.rule,
            rank=max(item.rank, state.sent_rank, 0),
            value=item.value,
            payload=item.payload,
            count=len(window),
        )
        self._queue(note, recipients, now)
        return True

    def _burst_absorbs(self, item: Item, recipients: tuple[str, ...], now: float) -> bool:
        p = self.policy
        if p.burst_threshold <= 0 or item.lifecycle != "raised":
            return False
        burst = self._bursts.get(item.workspace_id)
        if burst is None:
            burst = self._bursts[item.workspace_id] = _Burst()
        arrivals = burst.arrivals
        while arrivals and now - arrivals[0] >= p.burst_window:
            del arrivals[0]
        arrivals.append(now)
        if len(arrivals) > p.burst_threshold + 1:
            del arrivals[: len(arrivals) - p.burst_threshold - 1]
        if burst.until is None:
            if len(arrivals) <= p.burst_threshold:
                return False
            burst.until = now + p.burst_window
            heapq.heappush(self._heap, (burst.until, ("", item.workspace_id)))
            # what is still waiting in this workspace's groups joins the summary
            for recipient, ws in sorted(self._by_workspace.get(item.workspace_id, ())):
                group = self._groups[(recipient, ws)]
                for waiting in list(group.pending.values()):
                    if waiting.lifecycle == "raised":
                        del group.pending[waiting.insight_id]
                        self._count_burst(burst, recipient, waiting)
        for recipient in recipients:
            self._count_burst(burst, recipient, item)
        return True

    @staticmethod
    def _count_burst(burst: _Burst, recipient: str, item: Item) -> None:
        counts = burst.counts.setdefault(recipient, {})
        counts[item.rank] = counts.get(item.rank, 0) + 1
        sample = burst.sample.setdefault(recipient, {})
        sample[item.insight_id] = item
        if len(sample) > BURST_SAMPLE:
            lowest = min(sample.values(), key=lambda i: (i.rank, i.value or 0.0))
            del sample[lowest.insight_id]

    def _groups_of(self, workspace_id: str) -> list[_Group]:
        return [self._groups[k] for k in self._by_workspace.get(workspace_id, ())]

    def _drop_pending(self, workspace_id: str, match: Any) -> bool:
        dropped = False
        for group in self._groups_of(workspace_id):
            for waiting in [i for i in group.pending.values() if match(i)]:
                del group.pending[waiting.insight_id]
                dropped = True
        return dropped

    def _queue(self, item: Item, recipients: tuple[str, ...], now: float) -> None:
        for recipient in recipients:
            gkey = (recipient, item.workspace_id)
            group = self._groups.get(gkey)
            if group is None:
                group = self._groups[gkey] = _Group()
                self._by_workspace.setdefault(item.workspace_id, set()).add(gkey)
                if len(self._groups) > self.policy.max_groups:
                    self._evict_oldest_group(now)
            else:
                self._groups.move_to_end(gkey)
            group.pending[item.insight_id] = item
            if self._prompt(item):
                due = now + min(self.policy.group_wait, self.policy.prompt_wait)
            elif group.last_sent is None:
                due = now + self.policy.group_wait
            else:
                due = max(now, group.last_sent + self.policy.group_interval)
            due = max(due, self._not_before.get(recipient, due))
            if group.due is None or due < group.due:
                group.due = due
                heapq.heappush(self._heap, (due, gkey))

    def _prompt(self, item: Item) -> bool:
        """Urgent enough not to wait for ``group_wait`` / ``group_interval``."""
        rank = self.policy.prompt_rank
        return rank is not None and item.rank >= rank and item.lifecycle != "resolved"

    def _evict_oldest_group(self, now: float) -> None:
        """Over ``max_groups``: the least recently used group is sent now and forgotten."""
        (recipient, ws), group = self._groups.popitem(last=False)
        keys = self._by_workspace[ws]
        keys.discard((recipient, ws))
        if not keys:
            del self._by_workspace[ws]
        group.open.clear()
        message = self._flush(recipient, ws, group, now)
        if message is not None:
            self._ready.append(message)

    def watch(self, item: Item, deadline: float) -> None:
        """Hand ``item`` back from :meth:`expired` at ``deadline`` unless it is resolved first
        (escalation to a manager). Watching an insight again keeps the first deadline."""
        if item.insight_id in self._watches:
            return
        self._watches[item.insight_id] = (deadline, item)
        while len(self._watches) > self.policy.max_keys:
            self._watches.popitem(last=False)

    def expired(self, now: float) -> list[Item]:
        """The watched insights whose deadline has come (each once), earliest first."""
        out = []
        for insight_id, (deadline, item) in list(self._watches.items()):
            if deadline <= now:
                del self._watches[insight_id]
                out.append(item)
        return out

    def escalation(self, item: Item, recipient: str) -> Message:
        """The message escalating ``item`` to ``recipient`` (id stable per insight and
        recipient: a replay cannot send it twice)."""
        text = f"escalation\x1f{item.insight_id}\x1f{recipient}"
        message_id = "esc_" + hashlib.sha256(text.encode()).hexdigest()[:32]
        return Message(message_id, recipient, item.workspace_id, "escalation", (item,), 1)

    # -- output ----------------------------------------------------------------------------------

    def next_due(self) -> float | None:
        return self._heap[0][0] if self._heap else None

    def due(self, now: float) -> list[Message]:
        """The messages whose time has come (each group at most once per call)."""
        out, self._ready = self._ready, []
        while self._heap and self._heap[0][0] <= now:
            at, (recipient, ws) = heapq.heappop(self._heap)
            if recipient == "":
                out.extend(self._end_burst(ws, at, now))
                continue
            group = self._groups.get((recipient, ws))
            if group is None or group.due != at:
                continue  # superseded entry
            group.due = None
            message = self._flush(recipient, ws, group, now)
            if message is not None:
                out.append(message)
            if self.policy.repeat_interval > 0 and group.open:
                group.due = (group.last_sent or now) + self.policy.repeat_interval
                heapq.heappush(self._heap, (group.due, (recipient, ws)))
        return out

    def _message_id(self, recipient: str, ws: str, kind: str, ids: list[str], now: float) -> str:
        self._seq += 1
        text = "\x1f".join([recipient, ws, kind, repr(now), str(self._seq), *ids])
        return "grp_" + hashlib.sha256(text.encode()).hexdigest()[:32]

    def _flush(self, recipient: str, ws: str, group: _Group, now: float) -> Message | None:
        if group.pending:
            items = tuple(group.pending.values())
            group.pending = {}
            kind: Kind = "alert" if len(items) == 1 else "digest"
            for item in items:
                state = self._key_state(item.key)
                if item.lifecycle in ("raised", "escalated"):
                    state.sent_at = now
                    state.sent_rank = max(state.sent_rank, item.rank)
                    state.announced = True
                    group.open[item.insight_id] = item
                    while len(group.open) > REMINDER_MAX:
                        del group.open[next(iter(group.open))]
                elif item.lifecycle == "resolved":
                    group.open.pop(item.insight_id, None)
        elif group.open and self.policy.repeat_interval > 0:
            items = tuple(group.open.values())
            kind = "reminder"
        else:
            return None
        group.last_sent = now
        ids = [f"{i.insight_id}:{i.lifecycle}" for i in items]
        return Message(
            self._message_id(recipient, ws, kind, ids, now), recipient, ws, kind, items, len(items)
        )

    def _end_burst(self, ws: str, at: float, now: float) -> list[Message]:
        burst = self._bursts.get(ws)
        if burst is None or burst.until != at:
            return []
        out = []
        for recipient, counts in sorted(burst.counts.items()):
            sample = sorted(
                burst.sample.get(recipient, {}).values(),
                key=lambda i: (-i.rank, -(i.value or 0.0), i.insight_id),
            )
            ids = [i.insight_id for i in sample]
            out.append(
                Message(
                    self._message_id(recipient, ws, "burst", ids, now),
                    recipient,
                    ws,
                    "burst",
                    tuple(sample),
                    sum(counts.values()),
                    tuple(sorted(counts.items(), reverse=True)),
                )
            )
        burst.counts, burst.sample = {}, {}
        arrivals = burst.arrivals
        while arrivals and now - arrivals[0] >= self.policy.burst_window:
            del arrivals[0]
        if len(arrivals) > self.policy.burst_threshold:
            burst.until = at + self.policy.burst_window  # still bursting: one more summary
            heapq.heappush(self._heap, (burst.until, ("", ws)))
        else:
            burst.until = None
        return out

    # -- persistence (the service stores this JSON in PostgreSQL) --------------------------------

    def to_state(self) -> dict[str, Any]:
        return {
            "seq": self._seq,
            "ready": [m.to_json() for m in self._ready],
            "seen": [list(k) for k in self._seen],
            "keys": [
                [list(k), list(s.transitions), s.sent_at, s.sent_rank, s.announced, s.flapping]
                for k, s in self._keys.items()
            ],
            "inhibitors": [list(k) for k in self._inhibitors],
            "watches": [[d, i.to_json()] for d, i in self._watches.values()],
            "groups": [
                [
                    list(k),
                    [i.to_json() for i in g.pending.values()],
                    [i.to_json() for i in g.open.values()],
                    g.last_sent,
                    g.due,
                ]
                for k, g in self._groups.items()
            ],
            "bursts": [
                [
                    ws,
                    list(b.arrivals),
                    b.until,
                    [[r, [list(p) for p in c.items()]] for r, c in b.counts.items()],
                    [[r, [i.to_json() for i in s.values()]] for r, s in b.sample.items()],
                ]
                for ws, b in self._bursts.items()
            ],
        }

    @classmethod
    def from_state(cls, policy: FloodPolicy, raw: dict[str, Any]) -> FloodControl:
        flood = cls(policy)
        flood._seq = int(raw["seq"])
        flood._ready = [Message.from_json(m) for m in raw["ready"]]
        flood._seen = OrderedDict(((a, b), None) for a, b in raw["seen"])
        for key, transitions, sent_at, sent_rank, announced, flapping in raw["keys"]:
            flood._keys[tuple(key)] = _KeyState(
                list(transitions), sent_at, sent_rank, announced, flapping
            )
        flood._inhibitors = OrderedDict(((a, b), None) for a, b in raw["inhibitors"])
        for deadline, item in raw.get("watches", []):
            watched = Item.from_json(item)
            flood._watches[watched.insight_id] = (deadline, watched)
        for (recipient, ws), pending, open_, last_sent, due in raw["groups"]:
            group = _Group(
                {i[0]: Item.from_json(i) for i in pending},
                {i[0]: Item.from_json(i) for i in open_},
                last_sent,
                due,
            )
            flood._groups[(recipient, ws)] = group
            flood._by_workspace.setdefault(ws, set()).add((recipient, ws))
            if due is not None:
                flood._heap.append((due, (recipient, ws)))
        for ws, arrivals, until, counts, samples in raw["bursts"]:
            burst = _Burst(
                list(arrivals),
                until,
                {r: {int(a): int(b) for a, b in c} for r, c in counts},
                {r: {i[0]: Item.from_json(i) for i in s} for r, s in samples},
            )
            flood._bursts[ws] = burst
            if until is not None:
                flood._heap.append((until, ("", ws)))
        heapq.heapify(flood._heap)
        return flood
