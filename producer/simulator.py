"""A seeded, reproducible generator of a realistic sales pipeline (demo, tests, benchmarks).

Pure: ``random.Random(spec.seed)`` is its only randomness; no I/O, no clock, no logging. It
streams: deal creation times are sorted order statistics drawn one at a time, and each open deal
is a small state machine with one entry in a heap keyed by its next event time, so memory grows
with the deals open at once, not with the events. A deal plans one *episode* at a time: a gap
(0.3-4 days, or a silence of 8-30 days so ``stale_deal`` fires), a burst of 2-5 activities, then
maybe a pushed close date, a value or owner change, a stage advance, a win, loss or deletion.

With ``spec.capture`` (the default) deals also get buyer contacts and an account domain, and
each episode what ``vectoros capture`` would see of it: email exchanges (outbound, then a reply
from one or more contacts), meetings scheduled ahead and then held (or cancelled, or missed).
About one deal in six has a buyer who stops replying (``ghosting``); deals with one contact are
single-threaded; a silence stops the meetings (``meeting_cadence_drop``). Those come from a
second generator seeded from the same seed, and never after an episode's last CRM action, so
the CRM events are the same with or without capture.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from heapq import heappop, heappush, heapreplace
from itertools import accumulate, pairwise
from typing import Any

from schemas.events import (
    ActivityLogged,
    ActivityType,
    DealClosed,
    DealCreated,
    DealDeleted,
    DealEvent,
    DealFields,
    DealUpdated,
    Direction,
    EmailLogged,
    MeetingLogged,
    MeetingStatus,
    Outcome,
    Stage,
)

_US = 1_000_000  # internal time: integer microseconds since spec.start
_HOUR = 3600 * _US
_DAY = 24 * _HOUR
_STAGES = (Stage.LEAD, Stage.QUALIFIED, Stage.PROPOSAL, Stage.NEGOTIATION)
_NEXT_STAGE = dict(pairwise(_STAGES))
_BASE_PROBABILITY = dict(zip(_STAGES, (20, 35, 55, 75), strict=True))
_WORKSPACES = ("northwind", "acme", "globex", "initech", "umbrella", "hooli", "vandelay", "wonka")
_FIRST = ("Ana", "Ben", "Chloe", "Diego", "Emma", "Farid", "Grace", "Hiro", "Ines", "Jonas")
_LAST = ("Alvarez", "Brooks", "Chen", "Dubois", "Evans", "Fischer", "Gupta", "Hansen", "Ito")
_PRODUCTS = (
    "Platform License", "Enterprise Plan", "Analytics Add-on", "Annual Renewal", "API Access",
    "Seat Expansion", "Onboarding Package", "Pilot", "Data Migration", "Premium Support",
)  # fmt: skip
_PREFIX = ("Blue", "North", "Silver", "Red", "Green", "Iron", "Bright", "Summit", "Pine", "Stone")
_CORE = ("field", "bridge", "wave", "peak", "gate", "line", "point", "works", "leaf", "ridge")
_KIND = ("Logistics", "Labs", "Health", "Systems", "Foods", "Capital", "Energy", "Retail", "Media")
_CURRENCIES = ("USD",) * 55 + ("EUR",) * 25 + ("GBP",) * 13 + ("CAD",) * 4 + ("AUD",) * 3
_EMAIL, _CALL = ActivityType.EMAIL, ActivityType.CALL
_ACTIVITY_MIX: tuple[tuple[ActivityType, Direction | None], ...] = (
    ((_EMAIL, Direction.OUTBOUND),) * 27 + ((_EMAIL, Direction.INBOUND),) * 18
    + ((_CALL, Direction.OUTBOUND),) * 15 + ((_CALL, Direction.INBOUND),) * 10
    + ((ActivityType.MEETING, None),) * 15 + ((ActivityType.NOTE, None),) * 10
    + ((ActivityType.TASK, None),) * 5
)  # fmt: skip
_SUBJECTS = dict(zip(_STAGES, ("Intro call", "Discovery", "Proposal", "Contract"), strict=True))
_LOSS_REASONS = ("Chose a competitor", "No budget this year", "No decision", "Timing")
_WIN_REASONS = ("Contract signed", "Purchase order received")
_UUID_CLEAR = ~((0xF000 << 64) | (0xC000 << 48))
_UUID_SET = (0x4000 << 64) | (0x8000 << 48)


@dataclass(frozen=True)
class SimulationSpec:
    """``deals`` deals over ``days`` days from ``start``, spread over ``workspaces``."""

    deals: int = 200
    days: int = 90
    workspaces: int = 3
    seed: int = 42
    start: datetime = datetime(2026, 1, 5, 8, 0, tzinfo=UTC)
    tick_every: timedelta = timedelta(hours=6)
    capture: bool = True
    """Also emit captured emails and meetings (``email.logged``, ``meeting.logged``)."""

    def __post_init__(self) -> None:
        bad = self.deals < 0 or self.days < 1 or self.workspaces < 1
        if bad or self.tick_every <= timedelta(0) or self.start.utcoffset() is None:
            raise ValueError("need deals >= 0, days, workspaces >= 1, tick_every > 0, aware start")

    @property
    def end(self) -> datetime:
        return self.start + timedelta(days=self.days)


def start_ending_at(end: datetime, days: int) -> datetime:
    """The start of a ``days``-day simulation that ends at ``end`` (whole seconds).

    ``vectoros simulate`` and ``vectoros demo`` end their simulation now by default, so a
    wall-clock ticker started afterwards (``vectoros run``) continues the simulated clock instead
    of jumping it months ahead (every deal "stuck in qualified for 321.9 days").
    """
    if end.utcoffset() is None:
        raise ValueError("end must be timezone-aware")
    return end.replace(microsecond=0) - timedelta(days=days)


@dataclass(frozen=True, slots=True)
class SimTick:
    """Advance the clock to ``at`` (a publisher sends it as a ``tick`` to every partition)."""

    at: datetime


SimItem = DealEvent | SimTick


@dataclass(slots=True, eq=False)
class _Deal:
    deal_id: str
    plan: list[tuple[int, str]]  # upcoming (time, action), soonest last
    workspace_id: str = ""
    owners: list[tuple[str, str]] = field(default_factory=list)  # workspace's (id, name)
    owner_id: str = ""
    owner_name: str = ""
    stage: Stage = Stage.LEAD
    probability: float = 0.0
    value: float = 0.0
    close_date: date = date.min
    cold_prone: bool = False
    product: str = ""
    contacts: tuple[str, ...] = ()
    ghoster: bool = False  # stops replying to emails after a while
    replies_left: int = 0
    captures: list[Any] = field(default_factory=list)  # built captured events, by plan action
    meetings: int = 0


class _Simulation:
    def __init__(self, spec: SimulationSpec) -> None:
        self.spec = spec
        self.rng = rng = random.Random(spec.seed)
        self.crng = random.Random(spec.seed * 1_000_003 + 16)  # captured emails and meetings
        self.end = spec.days * _DAY
        self.heap: list[tuple[int, int, _Deal]] = []  # (next event time, tie-break, deal)
        self.seq = self.created = 0
        self.u = 0.0  # the last of the sorted uniforms that place deal creations in time
        self.workspaces: list[tuple[str, list[tuple[str, str]]]] = []
        for i in range(spec.workspaces):
            name = _WORKSPACES[i % len(_WORKSPACES)]
            name = name if i < len(_WORKSPACES) else f"{name}-{i // len(_WORKSPACES) + 1}"
            owners = [
                (f"usr-{name}-{j + 1:02d}", f"{rng.choice(_FIRST)} {rng.choice(_LAST)}")
                for j in range(rng.randint(3, 7))
            ]
            self.workspaces.append((f"ws-{name}", owners))

    def _date(self, t: int) -> date:
        return (self.spec.start + timedelta(microseconds=t)).date()

    def _base(self, d: _Deal, t: int, rng: random.Random | None = None) -> dict[str, Any]:
        # A version 4 UUID from the seeded generator: reproducible and (practically) unique.
        h = f"{(rng or self.rng).getrandbits(128) & _UUID_CLEAR | _UUID_SET:032x}"
        return {
            "event_id": f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}",
            "workspace_id": d.workspace_id,
            "deal_id": d.deal_id,
            "occurred_at": self.spec.start + timedelta(microseconds=t),
        }

    def run(self) -> Iterator[SimItem]:
        end, heap = self.end, self.heap
        step, next_tick = self.spec.tick_every // timedelta(microseconds=1), 0
        self._queue_next_creation()
        while True:
            t = heap[0][0] if heap else end + 1
            if next_tick <= t and next_tick <= end:
                yield SimTick(self.spec.start + timedelta(microseconds=next_tick))
                next_tick += step
                continue
            if t > end:
                return
            deal = heap[0][2]
            item, done = self._act(deal, t, deal.plan.pop()[1])
            yield item
            if not done and not deal.plan:
                self._plan(deal, t)
            if done or deal.plan[-1][0] > end:  # finished, or still open at the horizon
                heappop(heap)
            else:
                heapreplace(heap, (deal.plan[-1][0], self.seq, deal))
                self.seq += 1
            if item.type == "deal.created":
                self._queue_next_creation()

    def _queue_next_creation(self) -> None:
        """Sorted uniforms drawn one at a time (order statistics); u**1.7 makes most deals early."""
        left = self.spec.deals - self.created
        if left > 0:
            self.u = 1.0 - (1.0 - self.u) * self.rng.random() ** (1.0 / left)
            self.created += 1
            t = int(self.end * 0.97 * self.u**1.7)
            heappush(self.heap, (t, self.seq, _Deal(f"deal-{self.created:05d}", [(t, "create")])))
            self.seq += 1

    def _create(self, d: _Deal, t: int) -> DealCreated:
        rng = self.rng
        d.workspace_id, d.owners = self.workspaces[rng.randrange(len(self.workspaces))]
        d.owner_id, d.owner_name = rng.choice(d.owners)
        d.stage = Stage.LEAD if rng.random() < 0.8 else Stage.QUALIFIED
        d.probability = float(_BASE_PROBABILITY[d.stage] + 5 * rng.randint(-1, 2))
        d.value = min(250_000.0, max(2_000.0, round(math.exp(rng.gauss(9.6, 1.0)), -2)))
        d.close_date = self._date(t) + timedelta(days=rng.randint(20, 120))
        d.cold_prone = rng.random() < 0.3
        d.product = rng.choice(_PRODUCTS)
        company = f"{rng.choice(_PREFIX)}{rng.choice(_CORE)} {rng.choice(_KIND)}"
        extra: dict[str, Any] = {}
        if self.spec.capture:
            extra = self._buyer(d, company)
        return DealCreated(
            **self._base(d, t),
            title=f"{d.product} - {company}",
            value=d.value,
            currency=rng.choice(_CURRENCIES),
            stage=d.stage,
            probability=d.probability,
            close_date=d.close_date,
            owner_id=d.owner_id,
            owner_name=d.owner_name,
            company=company,
            **extra,
        )

    def _buyer(self, d: _Deal, company: str) -> dict[str, Any]:
        """The buyer's contacts and domain (from the capture generator)."""
        crng = self.crng
        domain = company.lower().replace(" ", "-") + ".com"
        people = crng.choice((1, 1, 2, 2, 3, 4))
        d.contacts = tuple(
            f"{crng.choice(_FIRST).lower()}.{crng.choice(_LAST).lower()}{i or ''}@{domain}"
            for i in range(people)
        )
        d.ghoster = crng.random() < 0.18
        d.replies_left = crng.randint(1, 4)  # a ghoster's replies before the silence
        return {"contacts": d.contacts, "account_domains": (domain,)}

    def _capture(self, d: _Deal, start: int, until: int, cold: bool) -> list[tuple[int, str]]:
        """What a mailbox and a calendar see of an episode from ``start`` to ``until`` (its
        last CRM action): plan entries ``cap<i>`` for the events built into ``d.captures``."""
        crng, out = self.crng, []

        def add(t: int, kind: str, **fields: Any) -> None:
            if t < until:  # never after the episode's last CRM action
                out.append((t, f"cap{len(d.captures)}"))
                d.captures.append((kind, fields))

        t = start + int(crng.uniform(0, 6) * _HOUR)
        for _ in range(crng.randint(1, 3)):
            thread = f"thr-{crng.getrandbits(40):010x}"
            to = tuple(crng.sample(d.contacts, crng.randint(1, len(d.contacts))))
            add(t, "email", direction=Direction.OUTBOUND, thread_id=thread, participants=to)
            silent = d.ghoster and d.replies_left <= 0
            if not silent and crng.random() < 0.85:
                d.replies_left -= 1
                who = (crng.choice(to),) if crng.random() < 0.7 else to
                reply = t + int(crng.uniform(1, 30) * _HOUR)
                add(reply, "email", direction=Direction.INBOUND, thread_id=thread, participants=who)
            t += int(crng.uniform(6, 48) * _HOUR)
        if not cold and not (d.ghoster and d.replies_left <= 0) and crng.random() < 0.85:
            seen = start + int(crng.uniform(0, 12) * _HOUR)
            begin = seen + int(crng.uniform(0.5, 3) * _DAY)
            begin -= begin % (15 * 60 * _US)  # on a quarter hour
            end = begin + int(crng.choice((0.5, 1.0)) * _HOUR)
            d.meetings += 1
            mid = f"mtg-{d.deal_id}-{d.meetings}"
            attendees = tuple(crng.sample(d.contacts, crng.randint(1, len(d.contacts))))
            when = {"meeting_id": mid, "start": begin, "end": end, "attendees": attendees}
            add(seen, "meeting", status=MeetingStatus.SCHEDULED, **when)
            r = crng.random()
            status = MeetingStatus.HELD if r < 0.85 else MeetingStatus.CANCELLED
            if r >= 0.95:
                status = MeetingStatus.NO_SHOW
            add(end if status is not MeetingStatus.CANCELLED else seen + _HOUR, "meeting",
                status=status, **when)  # fmt: skip
        return out

    def _captured(self, d: _Deal, t: int, index: int) -> DealEvent:
        kind, fields = d.captures[index]
        base = self._base(d, t, self.crng)
        if kind == "email":
            return EmailLogged(**base, **fields)
        start = self.spec.start + timedelta(microseconds=fields["start"])
        end = self.spec.start + timedelta(microseconds=fields["end"])
        return MeetingLogged(**base, **{**fields, "start": start, "end": end})

    def _plan(self, d: _Deal, now: int) -> None:
        """Plan the next episode: a gap or a silence, a burst of activity, then what came of it."""
        rng = self.rng
        cold = rng.random() < (0.4 if d.cold_prone else 0.03)
        t = now + int((rng.uniform(8, 30) if cold else rng.uniform(0.3, 4)) * _DAY)
        overdue = (self._date(t) - d.close_date).days
        if (cold and rng.random() < 0.3) or (overdue > 14 and rng.random() < 0.3):
            d.plan = [(t, "lost")]  # went dark, or never closed
            return
        acts: list[tuple[str, float]] = []  # (action, hours until the next one)
        if cold and rng.random() < 0.5:
            acts.append(("probability_down", rng.uniform(1, 12)))
        acts.extend(("activity", rng.uniform(1, 30)) for _ in range(rng.randint(2, 5)))
        if overdue > -10 and rng.random() < 0.6:
            acts.append(("push_close_date", rng.uniform(1, 6)))
        if rng.random() < 0.1:
            acts.append(("value", rng.uniform(1, 6)))
        if rng.random() < 0.02:
            acts.append(("owner", rng.uniform(1, 6)))
        r = rng.random()
        if d.stage is Stage.NEGOTIATION:
            last = "delete" if r < 0.005 else "won" if r < 0.4 else "lost" if r < 0.52 else ""
        else:
            last = "delete" if r < 0.005 else "lost" if r < 0.06 else "advance" if r < 0.5 else ""
        if last:
            acts.append((last, 0))
        times = accumulate((int(hours * _HOUR) for _, hours in acts), initial=t)
        plan = [(when, action) for when, (action, _) in zip(times, acts, strict=False)]
        if self.spec.capture and d.contacts:
            # ties: the CRM action first (the captured one is built for times before the last)
            plan = sorted(plan + self._capture(d, t, plan[-1][0], cold), key=lambda p: p[0])
        d.plan = plan[::-1]

    def _act(self, d: _Deal, t: int, action: str) -> tuple[DealEvent, bool]:
        """The event for ``action`` and whether the deal is finished."""
        rng = self.rng
        if action.startswith("cap"):
            return self._captured(d, t, int(action[3:])), False
        if action == "activity":
            kind, direction = _ACTIVITY_MIX[int(rng.random() * len(_ACTIVITY_MIX))]
            subject = f"{_SUBJECTS[d.stage]}: {d.product}"
            return ActivityLogged(
                **self._base(d, t), activity_type=kind, direction=direction, subject=subject
            ), False
        if action == "create":
            return self._create(d, t), False
        if action == "won" or action == "lost":
            won = action == "won"
            return DealClosed(
                **self._base(d, t),
                outcome=Outcome.WON if won else Outcome.LOST,
                value=d.value if won else None,
                reason=rng.choice(_WIN_REASONS if won else _LOSS_REASONS),
            ), True
        if action == "delete":
            return DealDeleted(**self._base(d, t)), True
        if action == "advance":
            stage = _NEXT_STAGE[d.stage]
            typical = _BASE_PROBABILITY[stage] + 5 * rng.randint(-1, 2)
            probability = float(min(95, max(typical, d.probability + 5)))  # moving up the funnel
            changes: dict[str, Any] = {"stage": stage, "probability": probability}
        elif action == "probability_down":
            changes = {"probability": float(round(d.probability * rng.uniform(0.3, 0.7)))}
        elif action == "push_close_date":
            changes = {"close_date": d.close_date + timedelta(days=rng.randint(14, 45))}
        elif action == "value":
            amount = round(d.value * rng.uniform(0.7, 1.35), -2)
            changes = {"value": min(250_000.0, max(2_000.0, amount))}
        else:  # owner
            changes = dict(zip(("owner_id", "owner_name"), rng.choice(d.owners), strict=True))
        # deal.updated names only the fields that really change (and, often, their old values)
        new = {key: value for key, value in changes.items() if getattr(d, key) != value}
        if not new:
            return self._act(d, t, "activity")
        old = {key: getattr(d, key) for key in new}
        for key, value in new.items():
            setattr(d, key, value)
        return DealUpdated(
            **self._base(d, t),
            changes=DealFields.model_validate(new),
            previous=DealFields.model_validate(old) if rng.random() < 0.8 else None,
        ), False


def generate(spec: SimulationSpec | None = None) -> Iterator[SimItem]:
    """All events of the scenario in non-decreasing time order, with a SimTick every tick_every.

    Ticks run from ``spec.start`` to ``spec.end`` inclusive; a tick and an event at the same
    instant come tick first. Lazy: nothing is generated before the first ``next()``.
    """
    yield from _Simulation(spec or SimulationSpec()).run()


def summary(items: Iterable[SimItem]) -> dict[str, int]:
    """Counts by type (``tick`` for SimTick), plus ``won`` and ``lost`` deal.closed outcomes."""
    counts: Counter[str] = Counter()
    for item in items:
        counts["tick" if isinstance(item, SimTick) else item.type] += 1
        if isinstance(item, DealClosed):
            counts[item.outcome.value] += 1
    return dict(counts)
