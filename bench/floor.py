"""Reference: the floor. A bare aiokafka loop running a minimal 5-rule job, like the issue's.

The same loop as the bare loop (``bench.throughput.run_plain_loop``), but the work is the least
a per-deal rule job does: ``orjson.loads`` (no schema validation), a dict per deal, five
threshold rules on the event's time, and a small JSON insight when a rule starts firing on a
deal. No templates, no lifecycle, no packed state, no dedupe, no ticks evaluated. What it
reaches is what Kafka I/O in Python costs on this machine; the gap to the monitor is the
monitor's work per record, not its Kafka shell.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import orjson

from bench.data import Dataset
from bench.env import Session
from bench.throughput import Job, RunResult, run_plain_loop
from consumer.state import DAY_MS

_STAGE_DAYS = {"lead": 14, "qualified": 21, "proposal": 30, "negotiation": 21}


def _ms(text: str) -> int:
    return int(dt.datetime.fromisoformat(text).timestamp() * 1000)


def _rules(d: dict[str, Any], now: int) -> set[str]:
    out = set()
    if now - d["active"] > 14 * DAY_MS:
        out.add("stale_deal")
    if now - d["entered"] > _STAGE_DAYS.get(d["stage"], 30) * DAY_MS:
        out.add("stuck_in_stage")
    if d["prob"] < 20:
        out.add("low_probability")
    if d["value"] >= 50_000 and d["prob"] < 40:
        out.add("high_value_at_risk")
    if d["close"] < now:
        out.add("close_date_passed")
    return out


def minimal_job(
    deals: dict[str, dict[str, Any]], body: dict[str, Any], out: list[tuple[str, bytes]]
) -> None:
    """Apply one event to ``deals`` and append (deal_id, insight JSON) for each rule that starts
    firing on its deal."""
    kind = body.get("type")
    deal_id = body.get("deal_id")
    if deal_id is None or kind == "tick":
        return
    now = _ms(body["occurred_at"])
    if kind in ("deal.closed", "deal.deleted"):
        deals.pop(deal_id, None)
        return
    d = deals.get(deal_id)
    if kind == "deal.created":
        d = deals[deal_id] = {
            "value": body["value"],
            "prob": body["probability"],
            "stage": body["stage"],
            "active": now,
            "entered": now,
            "close": _ms(body["close_date"] + "T00:00:00+00:00"),
            "firing": set(),
        }
    elif d is None:
        return
    elif kind == "activity.logged":
        d["active"] = now
    elif kind == "deal.updated":
        changes = body["changes"]
        if "stage" in changes and changes["stage"] != d["stage"]:
            d["stage"], d["entered"] = changes["stage"], now
        for field, key in (("value", "value"), ("probability", "prob")):
            if changes.get(field) is not None:
                d[key] = changes[field]
        if changes.get("close_date"):
            d["close"] = _ms(changes["close_date"] + "T00:00:00+00:00")
    firing = _rules(d, now)
    for rule in firing - d["firing"]:
        out.append((deal_id, orjson.dumps({"deal_id": deal_id, "rule": rule, "at": now})))
    d["firing"] = firing


def floor_job() -> Job:
    states: dict[int, dict[str, dict[str, Any]]] = {}

    def job(partition: int, recs: list[Any]) -> list[tuple[bytes, bytes]]:
        deals = states.setdefault(partition, {})
        found: list[tuple[str, bytes]] = []
        for rec in recs:
            minimal_job(deals, orjson.loads(rec.value), found)
        return [(deal_id.encode(), value) for deal_id, value in found]

    return job


async def run_floor_loop(session: Session, data: Dataset, events_topic: str) -> RunResult:
    return await run_plain_loop(session, data, events_topic, "floor", floor_job())
