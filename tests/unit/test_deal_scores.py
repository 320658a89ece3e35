"""The model's scores in the monitor's state: ``deal.scored`` folded into the deal's state and
stored by the deal codec (format 4; format 3 still restores). The rules that read them:
``test_model_rules.py``."""

from __future__ import annotations

import datetime as dt
import itertools
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

from consumer.changelog import restore
from consumer.deal_codec import FORMAT, deadline_of, pack, unpack, upgrade
from consumer.state import (
    DAY_MS,
    SCORE_WINDOW_DAYS,
    DealState,
    Score,
    apply_event,
    pack_scored_days,
    scored_days,
    to_ms,
)
from schemas.events import DealCreated, DealFields, DealScored, DealUpdated

ROOT = Path(__file__).resolve().parents[2]
T0 = dt.datetime(2026, 3, 2, 9, 0, tzinfo=dt.UTC)
DAY = dt.timedelta(days=1)
_ids = itertools.count()


def eid() -> str:
    return f"s{next(_ids)}"


def created(deal_id: str = "d1", **kw: Any) -> DealCreated:
    fields: dict[str, Any] = {
        "title": "Acme renewal",
        "value": 5_000,
        "currency": "USD",
        "stage": "negotiation",
        "probability": 80,
        "close_date": (T0 + 60 * DAY).date(),
        "owner_id": "u1",
    }
    fields.update(kw)
    return DealCreated(event_id=eid(), workspace_id="ws", deal_id=deal_id, occurred_at=T0, **fields)


def updated(day: float, deal_id: str = "d1", **changes: Any) -> DealUpdated:
    return DealUpdated(
        event_id=eid(),
        workspace_id="ws",
        deal_id=deal_id,
        occurred_at=T0 + day * DAY,
        changes=DealFields(**changes),
    )


def scored(
    probability: float,
    day: float,
    deal_id: str = "d1",
    *,
    p10_day: float | None = None,
    factors: tuple[tuple[str, float], ...] = (("days_since_activity", -0.12), ("stage", 0.05)),
    version: int = 1,
) -> DealScored:
    return DealScored(
        event_id=eid(),
        workspace_id="ws",
        deal_id=deal_id,
        occurred_at=T0 + day * DAY,
        model_version=version,
        win_probability=probability,
        top_factors=[{"feature": f, "effect": e} for f, e in factors],  # type: ignore[misc]
        close_p10=None if p10_day is None else (T0 + p10_day * DAY).date(),
    )


# --- the state -------------------------------------------------------------------------------


def test_a_score_is_folded_into_the_deal_and_an_older_one_changes_nothing() -> None:
    deal = apply_event(None, created())
    first = apply_event(deal, scored(0.62, 1, p10_day=40))
    assert first is not None
    assert first.score is not None
    day1 = (to_ms(T0) + DAY_MS) // DAY_MS
    assert first.score == Score(
        to_ms(T0 + DAY),
        1,
        62.0,
        day1 + 39,
        "days_since_activity (-12.0 pts), stage (+5.0 pts)",
        pack_scored_days([(day1, 62.0)]),
    )
    assert deal.score is None  # states are never changed in place
    assert apply_event(first, scored(0.1, 0.5)) is first  # older: ignored
    assert apply_event(first, scored(0.62, 1)) is first  # the same again (a replay)
    newer_model = apply_event(first, scored(0.5, 1, version=2))
    assert newer_model is not None
    assert newer_model.score is not None
    assert (newer_model.score.probability, newer_model.score.model_version) == (50.0, 2)
    assert scored_days(newer_model.score.daily) == [(day1, 62.0)]  # the day's highest is kept


def test_the_scored_days_keep_the_last_week_only() -> None:
    deal = apply_event(None, created())
    for day in range(12):
        deal = apply_event(deal, scored(0.05 * day, day))
    assert deal is not None
    assert deal.score is not None
    days = [d for d, _ in scored_days(deal.score.daily)]
    newest = (to_ms(T0) + 11 * DAY_MS) // DAY_MS
    assert days == list(range(newest - SCORE_WINDOW_DAYS, newest + 1))


# --- the deal codec --------------------------------------------------------------------------


def _scored_deal() -> DealState:
    deal = apply_event(None, created())
    for i, (p, day) in enumerate(((0.7, 0), (0.55, 2), (0.31, 3))):
        factors = (("owner_win_rate", 0.08), ("stage_days", -0.3), ("ümlaut-feature", 0.01))
        deal = apply_event(deal, scored(p, day, p10_day=45 if i else None, factors=factors))
    assert deal is not None
    return deal


def test_a_scored_deal_packs_and_unpacks() -> None:
    deal = _scored_deal()
    data = pack(deal, to_ms(T0) + 7 * DAY_MS)
    assert data[0] == FORMAT == 4
    assert unpack("d1", data) == deal
    assert deadline_of(data) == to_ms(T0) + 7 * DAY_MS
    no_p10 = replace(deal, score=replace_score(deal, p10_day=None, factors=""))
    assert unpack("d1", pack(no_p10, None)) == no_p10
    plain = replace(deal, score=None)
    assert unpack("d1", pack(plain, None)) == plain
    assert len(pack(plain, None)) == len(pack(apply_event(None, created()) or plain, None))


def replace_score(deal: DealState, **kw: Any) -> Score:
    assert deal.score is not None
    return deal.score._replace(**kw)


def test_a_changelog_of_format_3_restores_the_same_deals_without_a_score() -> None:
    """The monitor of main before this change wrote packed form 3 (with engagement; fixture
    tests/fixtures/changelog-v3-packed3.json, written by that code): its deals restore, the same
    state, in format 4."""
    fixture = json.loads((ROOT / "tests/fixtures/changelog-v3-packed3.json").read_text("utf-8"))
    records = [
        (bytes.fromhex(k), None if v is None else bytes.fromhex(v)) for k, v in fixture["records"]
    ]
    out = restore(records, fixture["committed"])
    assert out.unreadable == 0
    assert out.clock_ms == fixture["clock_ms"]
    assert out.tick_digests.hex() == fixture["tick_digests"]
    assert {d: [at, out.closed_seen[d].hex()] for d, at in out.closed.items()} == fixture["closed"]
    assert set(out.deals) == set(fixture["deals"])
    with_engagement = 0
    for deal_id, want in fixture["deals"].items():
        data = out.deals[deal_id]
        assert data[0] == FORMAT
        deal = unpack(deal_id, data)
        assert deadline_of(data) == want.pop("deadline")
        got: dict[str, Any] = {k: getattr(deal, k) for k in want}
        got["stage"] = deal.stage and deal.stage.value
        got["open"] = [[o.rule.value, o.priority.value, o.raised_at_ms] for o in deal.open]
        got["seen"], got["activity"] = deal.seen.hex(), deal.activity.hex()
        e = deal.engagement
        got["engagement"] = (
            None
            if e is None
            else [
                *e[:4],
                list(e.held),
                [list(x) for x in e.scheduled],
                [list(x) for x in e.contacts],
            ]
        )
        assert got == want
        with_engagement += e is not None
        assert deal.score is None
        assert unpack(deal_id, pack(deal, deadline_of(data))) == deal
    assert with_engagement == 1
    raw = next(v for k, v in records if k == b"d-eng" and v is not None)[10:]  # packed form 3
    assert raw[0] == 3
    assert upgrade("d-eng", raw) == bytes((FORMAT,)) + raw[1:]
