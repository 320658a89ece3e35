"""Synthetic data for the benchmarks, built directly as encoded bytes (no pydantic on the way).

The event stream is shaped like ``producer.simulator``'s (same event types and field shapes,
stage advances, probability drops, pushed close dates, silences that make deals stale, wins,
losses and deletions) but is generated about twenty times faster, with exactly
``events_per_deal`` deal events per deal, in non-decreasing time order, with a tick to every
partition every ``tick_hours`` of simulated time. Keys are the ``deal_id``; partitions follow
Kafka's default partitioner (murmur2), as a producer would pick them. The result is cached on
disk (``.bench-cache/``), keyed by its parameters and ``VERSION``.
"""

from __future__ import annotations

import datetime as dt
import logging
import pickle
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson

from bench.env import Record, cache_dir
from consumer.state import DAY_MS, DealState, OpenInsight
from schemas.events import TICK_HEADER, TICK_HEADER_VALUE, Stage
from schemas.insights import Priority, RuleName
from vectoros.partitioner import murmur2

logger = logging.getLogger("bench")

VERSION = 1
START_MS = int(dt.datetime(2026, 1, 5, 8, 0, tzinfo=dt.UTC).timestamp() * 1000)
MAX_EVENT_AGE_SECONDS = 100 * 365 * 86_400
"""The data is dated from 2026-01-05 and produced with the broker's time as record timestamp: a
generous VECTOROS_MAX_EVENT_AGE keeps it plausible whatever day the bench runs (the check still
runs on every record, so its cost is measured)."""
HOUR_MS = 3_600_000

_WORKSPACES = ("ws-northwind", "ws-acme", "ws-globex")
_FIRST = ("Ana", "Ben", "Chloe", "Diego", "Emma", "Farid", "Grace", "Hiro", "Ines", "Jonas")
_LAST = ("Alvarez", "Brooks", "Chen", "Dubois", "Evans", "Fischer", "Gupta", "Hansen", "Ito")
_PRODUCTS = (
    "Platform License", "Enterprise Plan", "Analytics Add-on", "Annual Renewal", "API Access",
    "Seat Expansion", "Onboarding Package", "Pilot", "Data Migration",
)  # fmt: skip
_PREFIX = ("Blue", "North", "Silver", "Red", "Green", "Iron", "Bright", "Summit", "Pine", "Stone")
_CORE = ("field", "bridge", "wave", "peak", "gate", "line", "point", "works", "leaf", "ridge")
_KIND = ("Logistics", "Labs", "Health", "Systems", "Foods", "Capital", "Energy", "Retail", "Media")
_CURRENCIES = ("USD",) * 55 + ("EUR",) * 25 + ("GBP",) * 13 + ("CAD",) * 4 + ("AUD",) * 3
_STAGES = ("lead", "qualified", "proposal", "negotiation")
_BASE_PROBABILITY = {"lead": 20, "qualified": 35, "proposal": 55, "negotiation": 75}
_ACTIVITIES = ("email", "email", "email", "call", "call", "meeting", "note", "task")
_DIRECTIONS = ("inbound", "outbound", None)


def iso(ms: int) -> str:
    """RFC 3339 with milliseconds and an explicit offset."""
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC).isoformat(timespec="milliseconds")


def day_iso(day: int) -> str:
    return (dt.date(1970, 1, 1) + dt.timedelta(days=day)).isoformat()


def partition_for(key: bytes, partitions: int) -> int:
    """Kafka's default partitioner (murmur2, as aiokafka and the Java client)."""
    return int(murmur2(key) & 0x7FFFFFFF) % partitions


@dataclass
class _Deal:
    deal_id: str
    workspace_id: str
    owner_id: str
    owner_name: str
    stage: str
    probability: float
    value: float
    close_day: int
    product: str


class Generator:
    """Seeded builder of deal event bytes."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.owners = {
            ws: [
                (f"usr-{ws[3:]}-{j:02d}", f"{self.rng.choice(_FIRST)} {self.rng.choice(_LAST)}")
                for j in range(1, 6)
            ]
            for ws in _WORKSPACES
        }

    def event_id(self) -> str:
        h = f"{self.rng.getrandbits(128):032x}"
        return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-a{h[17:20]}-{h[20:]}"

    def _base(self, d: _Deal, kind: str, t: int) -> dict[str, Any]:
        return {
            "schema_version": 1,
            "type": kind,
            "event_id": self.event_id(),
            "workspace_id": d.workspace_id,
            "deal_id": d.deal_id,
            "occurred_at": iso(t),
        }

    def new_deal(
        self, deal_id: str, t: int, *, stage: str | None = None, probability: float | None = None
    ) -> tuple[_Deal, bytes]:
        rng = self.rng
        ws = rng.choice(_WORKSPACES)
        owner_id, owner_name = rng.choice(self.owners[ws])
        stage = stage or ("lead" if rng.random() < 0.8 else "qualified")
        if probability is None:
            probability = float(_BASE_PROBABILITY[stage] + 5 * rng.randint(-1, 2))
        d = _Deal(
            deal_id=deal_id,
            workspace_id=ws,
            owner_id=owner_id,
            owner_name=owner_name,
            stage=stage,
            probability=probability,
            value=min(250_000.0, max(2_000.0, round(rng.lognormvariate(9.6, 1.0), -2))),
            close_day=t // DAY_MS + rng.randint(20, 120),
            product=rng.choice(_PRODUCTS),
        )
        company = f"{rng.choice(_PREFIX)}{rng.choice(_CORE)} {rng.choice(_KIND)}"
        body = self._base(d, "deal.created", t)
        body.update(
            title=f"{d.product} - {company}",
            value=d.value,
            currency=rng.choice(_CURRENCIES),
            stage=d.stage,
            probability=d.probability,
            close_date=day_iso(d.close_day),
            owner_id=d.owner_id,
            owner_name=d.owner_name,
            company=company,
        )
        return d, orjson.dumps(body)

    def next_event(self, d: _Deal, t: int, last: bool) -> bytes:
        rng = self.rng
        r = rng.random()
        if last and r < 0.75:
            won = r < 0.35
            body = self._base(d, "deal.closed", t)
            body["outcome"] = "won" if won else "lost"
            if won:
                body["value"] = d.value
            body["reason"] = "Contract signed" if won else "Chose a competitor"
            return orjson.dumps(body)
        if last and r < 0.77:
            return orjson.dumps(self._base(d, "deal.deleted", t))
        r = rng.random()
        changes: dict[str, Any]
        if r < 0.75:
            body = self._base(d, "activity.logged", t)
            body["activity_type"] = rng.choice(_ACTIVITIES)
            direction = rng.choice(_DIRECTIONS)
            if direction is not None:
                body["direction"] = direction
            body["subject"] = f"{d.stage.title()}: {d.product}"
            return orjson.dumps(body)
        if r < 0.87 and d.stage != "negotiation":
            stage = _STAGES[_STAGES.index(d.stage) + 1]
            probability = float(min(95, max(_BASE_PROBABILITY[stage], d.probability + 5)))
            changes = {"stage": stage, "probability": probability}
        elif r < 0.91:
            changes = {"probability": float(round(d.probability * rng.uniform(0.6, 0.95)))}
        elif r < 0.97:
            changes = {"close_date": d.close_day + rng.randint(14, 45)}
        else:
            changes = {"value": min(250_000.0, max(2_000.0, round(d.value * 1.2, -2)))}
        previous = {k: getattr(d, "close_day" if k == "close_date" else k) for k in changes}
        for k, v in changes.items():
            setattr(d, "close_day" if k == "close_date" else k, v)
        body = self._base(d, "deal.updated", t)
        body["changes"] = _dates(changes)
        if rng.random() < 0.8:
            body["previous"] = _dates(previous)
        return orjson.dumps(body)


def _dates(fields: dict[str, Any]) -> dict[str, Any]:
    return {k: day_iso(v) if k == "close_date" else v for k, v in fields.items()}


def tick_value(at_ms: int, name: str) -> bytes:
    return orjson.dumps({"schema_version": 1, "type": "tick", "event_id": name, "at": iso(at_ms)})


TICK_HEADERS = [(TICK_HEADER, TICK_HEADER_VALUE)]


@dataclass
class Dataset:
    """Records per partition, ready for ``bench.env.load``."""

    deals: int
    deal_events: int
    ticks: int
    partitions: dict[int, list[Record]] = field(default_factory=dict)
    clock_end_ms: int = 0

    @property
    def records(self) -> int:
        return self.deal_events + self.ticks

    def end_offsets(self) -> dict[int, int]:
        return {p: len(recs) for p, recs in self.partitions.items()}


def build_events(
    deals: int,
    *,
    events_per_deal: int = 10,
    partitions: int = 6,
    days: int = 90,
    tick_hours: float = 6.0,
    seed: int = 7,
) -> Dataset:
    gen = Generator(seed)
    rng = gen.rng
    horizon = days * DAY_MS
    timeline: list[tuple[int, int, bytes, bytes]] = []
    seq = 0
    for i in range(deals):
        deal_id = f"deal-{i:07d}"
        key = deal_id.encode()
        t = START_MS + int(horizon * 0.7 * rng.random())
        d, value = gen.new_deal(deal_id, t)
        timeline.append((t, seq, key, value))
        seq += 1
        for j in range(1, events_per_deal):
            silence = rng.random() < 0.03
            t += int((rng.uniform(8, 20) if silence else rng.uniform(0.2, 2.5)) * DAY_MS)
            timeline.append((t, seq, key, gen.next_event(d, t, j == events_per_deal - 1)))
            seq += 1
    timeline.sort()
    parts: dict[int, list[Record]] = {p: [] for p in range(partitions)}
    part_of: dict[bytes, int] = {}
    step = int(tick_hours * HOUR_MS)
    next_tick = [START_MS] * partitions
    ticks = 0
    for t, _, key, value in timeline:
        p = part_of.get(key)
        if p is None:
            p = part_of[key] = partition_for(key, partitions)
        while next_tick[p] <= t:
            parts[p].append(
                (None, tick_value(next_tick[p], f"tick-{next_tick[p]}-{p}"), TICK_HEADERS)
            )
            next_tick[p] += step
            ticks += 1
        parts[p].append((key, value, None))
    end = timeline[-1][0] if timeline else START_MS
    for p in range(partitions):  # a last tick everywhere so every partition's clock reaches the end
        parts[p].append((None, tick_value(end, f"tick-end-{p}"), TICK_HEADERS))
        ticks += 1
    return Dataset(deals, len(timeline), ticks, parts, end)


def events_dataset(deals: int, events_per_deal: int = 10, partitions: int = 6) -> Dataset:
    """``build_events`` through the on-disk cache."""
    path = cache_dir() / f"events-v{VERSION}-{deals}x{events_per_deal}-p{partitions}.pickle"
    if path.exists():
        started = time.perf_counter()
        with path.open("rb") as f:
            data: Dataset = pickle.load(f)  # our own cache file
        logger.info("dataset from %s (%.1fs)", path.name, time.perf_counter() - started)
        return data
    started = time.perf_counter()
    data = build_events(deals, events_per_deal=events_per_deal, partitions=partitions)
    logger.info(
        "generated %d records (%d deals) in %.1fs",
        data.records,
        deals,
        time.perf_counter() - started,
    )
    tmp = path.with_suffix(".tmp")
    with tmp.open("wb") as f:
        pickle.dump(data, f, protocol=pickle.HIGHEST_PROTOCOL)
    tmp.replace(path)
    return data


def created_events(count: int, *, seed: int = 11, start: int = 0) -> Iterator[tuple[bytes, bytes]]:
    """(key, value) of ``count`` deal.created events (memory scenario), lazily."""
    gen = Generator(seed)
    t = START_MS
    for i in range(start, start + count):
        deal_id = f"deal-{i:07d}"
        t += 1000
        _, value = gen.new_deal(deal_id, t)
        yield deal_id.encode(), value


_STAGE_BY_NAME = {s.value: s for s in Stage}
_RULES = tuple(RuleName)
_PRIORITIES = tuple(Priority)


def deal_states(count: int, clock_ms: int, *, seed: int = 13) -> Iterator[DealState]:
    """Plausible open deals as of ``clock_ms`` (restore and tick scenarios): every one active
    within the last day, in its stage for a week, closing in 30-120 days, a third with one or two
    open insights. None is due within the next 5 days."""
    rng = random.Random(seed)
    gen = Generator(seed)
    for i in range(count):
        ws = _WORKSPACES[i % 3]
        owner_id, owner_name = gen.owners[ws][i % 5]
        stage = _STAGES[i % 4]
        n_open = 0 if i % 3 else 1 + i % 2
        yield DealState(
            workspace_id=ws,
            deal_id=f"deal-{i:07d}",
            title=f"{_PRODUCTS[i % 9]} - {_PREFIX[i % 10]}{_CORE[i // 10 % 10]} {_KIND[i % 9]}",
            value=float(2000 + 100 * rng.randrange(0, 80)),  # below the high-value threshold
            currency=_CURRENCIES[i % 100],
            stage=_STAGE_BY_NAME[stage],
            probability=float(_BASE_PROBABILITY[stage] + 5),
            close_day=clock_ms // DAY_MS + 30 + i % 90,
            owner_id=owner_id,
            owner_name=owner_name,
            company=f"{_PREFIX[i % 10]}{_CORE[i // 10 % 10]} {_KIND[i % 9]}",
            created_at_ms=clock_ms - 20 * DAY_MS,
            last_activity_at_ms=clock_ms - rng.randrange(0, DAY_MS),
            stage_entered_at_ms=clock_ms - 7 * DAY_MS,
            activity_count=rng.randrange(1, 40),
            open=tuple(
                OpenInsight(_RULES[(i + k) % 6], _PRIORITIES[1 + k], clock_ms - 3 * DAY_MS)
                for k in range(n_open)
            ),
        )
