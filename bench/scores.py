"""Scoring on against scoring off: the monitor on the same deal events without and with the
model's scores on ``deal-events``.

``vectoros history`` scores each open deal that an event batch changed and publishes a
``deal.scored`` event on the deal's partition, after the events it reflects, when the score
matters to the monitor (``consumer.intelligence.scoring.worth_publishing``, with the default
5 points / 7 days): the deal's first score, a probability 5 points from the last one published,
a close-date P10 7 days from it or across the rep's close date. In a live stream a deal's
events are days apart, so each lands in its own history batch. How often that happens was
measured on the simulator's history with a trained model (3,000 deals over 720 days, trained on
the first 540; every event of the 732 deals closed in the last 180 scored, 14,257 events):
after the first, 52 % of the events publish a score, which moves the probability by 14.5 points
on average (the isotonic calibration is a step function, but the simulator's activity moves it
often, by design; a P10 move adds a tenth of them). ``with_scores`` adds that to the throughput
dataset: a score with each deal's first event, then after each deal event but a close or a
deletion, with probability ``SHARE``, a score at the same time (the probability a random walk
with steps of ``STEP``, three top factors, a close-date P10). ``first_only`` keeps the first
score of each deal only: what carrying a score costs the deal's later events, without the
score records. Both are reported: deal events/s (what the pipeline is for) and records/s
(scores included), and their ratio on / off.
"""

from __future__ import annotations

import datetime as dt
import random
import time
from typing import TYPE_CHECKING

import orjson

from bench.data import DAY_MS, Dataset, day_iso
from bench.env import Record

if TYPE_CHECKING:
    from consumer.intelligence.projection import DealHistory
    from schemas.events import DealEvent, DealScored

SHARE = 0.52
STEP = 0.18  # the standard deviation of a change: mean absolute change ~14.5 points
FACTORS = ("days_since_activity", "stage", "owner_win_rate", "close_pushes", "activities_30d")


def with_scores(
    data: Dataset,
    *,
    share: float = SHARE,
    step: float = STEP,
    seed: int = 17,
    first_only: bool = False,
) -> tuple[Dataset, int]:
    """``data`` with a ``deal.scored`` record after each deal's first event and a ``share`` of
    the later deal events of open deals (``first_only``: none of those); the new dataset and
    how many scores it holds."""
    rng = random.Random(seed)
    probability: dict[bytes, float] = {}
    parts: dict[int, list[Record]] = {}
    scores = 0
    for partition, records in data.partitions.items():
        out: list[Record] = []
        for key, value, headers in records:
            out.append((key, value, headers))
            if key is None:  # a tick
                continue
            event = orjson.loads(value)
            if event["type"] in ("deal.closed", "deal.deleted"):
                probability.pop(key, None)
                continue
            p = probability.get(key)
            if p is not None and (first_only or rng.random() >= share):
                continue
            p = rng.uniform(0.25, 0.65) if p is None else p + rng.gauss(0, step)
            p = probability[key] = min(0.99, max(0.01, p))
            day = _day(event["occurred_at"])
            factors = rng.sample(FACTORS, 3)
            body = {
                "schema_version": 1,
                "type": "deal.scored",
                "event_id": f"score-{partition}-{scores:010d}",
                "workspace_id": event["workspace_id"],
                "deal_id": event["deal_id"],
                "occurred_at": event["occurred_at"],
                "model_version": 1,
                "win_probability": round(p, 4),
                "top_factors": [
                    {"feature": f, "effect": round(rng.uniform(-0.15, 0.15), 4)} for f in factors
                ],
                "close_p10": day_iso(day + rng.randint(10, 60)),
            }
            out.append((key, orjson.dumps(body), None))
            scores += 1
        parts[partition] = out
    scored = Dataset(data.deals, data.deal_events + scores, data.ticks, parts, data.clock_end_ms)
    return scored, scores


def _day(occurred_at: str) -> int:
    """The day number of an RFC 3339 timestamp (``bench.data.iso``)."""
    return int(dt.datetime.fromisoformat(occurred_at).timestamp() * 1000) // DAY_MS


def history_steps(
    data: Dataset, deals: int = 10_000
) -> list[tuple[DealHistory, DealScored | None]]:
    """What ``vectoros history`` hands its model rules on ``data`` (a ``with_scores`` dataset),
    for its first ``deals`` deals (the full bench's million events would only take longer):
    each ``deal.scored`` with the deal's history as of it, each close with the closed deal's
    (``None`` for the score), in stream order. Folded once, outside any timing: the service
    has the histories from its batch."""
    from consumer.intelligence.projection import fold
    from schemas.events import DealScored, event_adapter

    steps: list[tuple[DealHistory, DealScored | None]] = []
    events: dict[bytes, list[DealEvent]] = {}
    for records in data.partitions.values():
        for key, value, _headers in records:
            if key is None or (key not in events and len(events) >= deals):
                continue
            event = event_adapter.validate_json(value)
            if isinstance(event, DealScored):
                h = fold(events[key])
                if h is not None:
                    steps.append((h, event))
                continue
            assert not isinstance(event, dict)
            events.setdefault(key, []).append(event)  # type: ignore[arg-type]
            if event.type in ("deal.closed", "deal.deleted"):
                h = fold(events[key])
                if h is not None:
                    steps.append((h, None))
    return steps


def model_rules_rate(steps: list[tuple[DealHistory, DealScored | None]]) -> tuple[int, float, int]:
    """What the model rules cost ``vectoros history`` on ``history_steps``: each score through
    ``consumer.history.model_rules.on_score``, its watch stored and read back as
    ``model_watch`` keeps it, each close through ``on_close``; the scores, the CPU seconds and
    the insights."""
    from consumer.history.model_rules import Watch, from_json, on_close, on_score, to_json
    from consumer.thresholds import RulesConfig

    th = RulesConfig().for_workspace("bench")
    watches: dict[str, dict[str, object]] = {}
    insights = scores = 0
    started = time.process_time()
    for h, scored in steps:
        raw = watches.get(h.deal_id)
        watch = Watch() if raw is None else from_json(raw)
        if scored is None:
            insights += len(on_close(h, watch, th)[1])
            watches.pop(h.deal_id, None)
            continue
        after, out = on_score(h, watch, scored, th)
        watches[h.deal_id] = to_json(after)
        insights += len(out)
        scores += 1
    return scores, time.process_time() - started, insights
