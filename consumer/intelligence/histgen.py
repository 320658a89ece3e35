"""A known-truth history generator: past deals whose outcome is driven by a hidden propensity.

Each deal has a latent win propensity ``z`` (normal) which, with its owner's skill and its
segment, sets its true win probability. The same ``z`` drives what a model can see: how often
the buyer and the rep are in touch (and how much of it is inbound), how fast the deal moves
through the stages, how often its close date is pushed; lost deals fade out before they close.
The rep's probability is what real reps enter: the stage's usual number, too high, and noisy.
So a model that reads the activity can beat both the rep and the stage's win rate, and how
much is known. Pure and seeded: no I/O, no clock.
"""

from __future__ import annotations

import datetime as dt
import math
import random
from dataclasses import dataclass

from consumer.intelligence.projection import DAY_MS, Activity, DealHistory, StageSpell

STAGES = ("lead", "qualified", "proposal", "negotiation")
_REP_BASE = (25.0, 40.0, 60.0, 80.0)  # what reps enter per stage (real win rates are lower)
_SEGMENTS = (("SMB", 0.3, 8_000.0), ("Mid-Market", 0.0, 30_000.0), ("Enterprise", -0.4, 120_000.0))
_MEAN_STAGE_DAYS = (9.0, 14.0, 18.0, 12.0)
_TYPES = ("email", "email", "email", "call", "call", "meeting", "note")


@dataclass(frozen=True)
class HistorySpec:
    deals: int = 2000
    days: int = 720
    workspaces: int = 2
    owners_per_workspace: int = 8
    seed: int = 7
    start: dt.datetime = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def generate_histories(spec: HistorySpec) -> list[DealHistory]:
    """``spec.deals`` deals created uniformly over ``spec.days``; those whose story ends after
    the last day stay open (as they would be in a real export)."""
    rng = random.Random(spec.seed)
    start_ms = int(spec.start.timestamp() * 1000)
    end_ms = start_ms + spec.days * DAY_MS
    skill = {
        (w, o): rng.gauss(0.0, 0.6)
        for w in range(spec.workspaces)
        for o in range(spec.owners_per_workspace)
    }
    out: list[DealHistory] = []
    for n in range(spec.deals):
        w = rng.randrange(spec.workspaces)
        o = rng.randrange(spec.owners_per_workspace)
        segment, seg_effect, seg_value = _SEGMENTS[rng.randrange(3)]
        z = rng.gauss(0.0, 1.0)
        p_win = _sigmoid(-0.4 + 1.4 * z + skill[(w, o)] + seg_effect)
        won = rng.random() < p_win
        created = start_ms + int(rng.random() * spec.days * DAY_MS)
        h = DealHistory(
            workspace_id=f"ws-{w}",
            deal_id=f"sim-{n}",
            source="import",
            title=f"Deal {n}",
            value=round(seg_value * math.exp(rng.gauss(0.0, 0.5)), 2),
            currency="USD",
            owner_id=f"owner-{w}-{o}",
            owner_name=f"Owner {w}-{o}",
            created_ms=created,
            attributes={"segment": segment},
        )
        # the stages the deal reaches: a won deal all of them, a lost one stops early
        last = 3 if won else min(3, int(rng.random() ** (1.2 + max(z, -1.0)) * 4))
        speed = math.exp(-0.35 * z) * (1.0 if won else 1.4)
        t = created
        for i in range(last + 1):
            days = rng.gammavariate(2.0, _MEAN_STAGE_DAYS[i] * speed / 2.0)
            h.stages.append(StageSpell(STAGES[i], t, t + int(days * DAY_MS)))
            noisy = _REP_BASE[i] + 8.0 + 6.0 * (0.3 * z + rng.gauss(0.0, 1.0))
            h.probabilities.append((t, round(min(95.0, max(5.0, noisy)), 0)))
            t += int(days * DAY_MS)
        closed = t
        # activities: a Poisson stream whose rate follows z; lost deals go quiet at the end
        rate = 0.35 * math.exp(0.45 * z)
        inbound = _sigmoid(0.8 * z - 0.3)
        fade = created + int((closed - created) * (0.55 if not won else 1.0))
        at = created
        while True:
            at += int(rng.expovariate(rate if at < fade else rate * 0.25) * DAY_MS)
            if at >= closed:
                break
            kind = _TYPES[rng.randrange(len(_TYPES))]
            direction = None
            if kind in ("email", "call"):
                direction = "inbound" if rng.random() < inbound else "outbound"
            h.activities.append(Activity(at, kind, direction))
        # the expected close date, pushed now and then (more for weak deals)
        close_day = (created + int(rng.uniform(30, 90) * DAY_MS)) // DAY_MS
        for _ in range(min(6, _poisson(rng, 0.6 * math.exp(-0.6 * z) + (0.0 if won else 0.5)))):
            at = created + int(rng.random() * (closed - created))
            new_day = close_day + rng.randint(7, 45)
            h.close_date_changes.append((at, _iso(close_day), _iso(new_day)))
            close_day = new_day
        h.close_date_changes.sort()
        h.close_date = dt.date.fromisoformat(_iso(close_day))
        if closed <= end_ms:
            h.outcome, h.closed_ms = ("won" if won else "lost"), closed
            h.probability = 100.0 if won else 0.0
            h.stage = None
        else:  # still open at the end of the data: cut the story there
            _cut(h, end_ms)
        h.updated_ms = min(closed, end_ms)
        out.append(h)
    return out


def _cut(h: DealHistory, end_ms: int) -> None:
    h.stages = [s for s in h.stages if s.entered_ms < end_ms]
    if h.stages and (h.stages[-1].left_ms or 0) >= end_ms:
        h.stages[-1].left_ms = None
    h.stage = h.stages[-1].stage if h.stages else None
    h.activities = [a for a in h.activities if a.at_ms < end_ms]
    h.close_date_changes = [c for c in h.close_date_changes if c[0] < end_ms]
    h.probabilities = [p for p in h.probabilities if p[0] < end_ms]
    h.probability = h.probabilities[-1][1] if h.probabilities else None


def _poisson(rng: random.Random, lam: float) -> int:
    k, p, limit = 0, 1.0, math.exp(-lam)
    while True:
        p *= rng.random()
        if p < limit:
            return k
        k += 1


def _iso(day: int) -> str:
    return (dt.date(1970, 1, 1) + dt.timedelta(days=day)).isoformat()
