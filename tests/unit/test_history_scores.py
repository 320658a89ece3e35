"""The history service and scores on ``deal-events``: a ``deal.scored`` event (the service's
own output) is not a change of the deal, so it never reaches the projection."""

from __future__ import annotations

from typing import Any, NamedTuple

from aiokafka import TopicPartition

from consumer.history.service import decode_batch
from schemas.events import encode_event
from tests.unit.test_deal_scores import created, scored


class Rec(NamedTuple):
    topic: str
    partition: int
    offset: int
    value: bytes | None


def test_scores_on_deal_events_are_not_recorded_in_the_history() -> None:
    events: list[Any] = [created(), scored(0.4, 1), created("d2")]
    recs = [Rec("deal-events", 0, i, encode_event(e)) for i, e in enumerate(events)]
    got = decode_batch({TopicPartition("deal-events", 0): recs})
    assert [(e.type, e.deal_id) for e in got] == [("deal.created", "d1"), ("deal.created", "d2")]


def _score(day: int, probability: float, p10: int | None, version: int = 1) -> Any:
    import datetime as dt

    from schemas.scores import DealScore

    base = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
    return DealScore(
        workspace_id="w",
        deal_id="d1",
        as_of=base + dt.timedelta(days=day),
        model_version=version,
        win_probability=probability,
        close_p10=None if p10 is None else (base + dt.timedelta(days=p10)).date(),
    )


def test_a_score_is_worth_publishing_only_when_it_matters() -> None:
    """Against the last published score: the first, a new model, 5 points, 7 days of P10, a P10
    across the rep's close date; the published one again; never an older one."""
    import datetime as dt

    from consumer.intelligence.scoring import Published, worth_publishing

    last_score = _score(0, 0.40, 30)
    last = Published(last_score.as_of, 1, 0.40, last_score.close_p10)
    rep_close = (last_score.as_of + dt.timedelta(days=33)).date()

    def worth(s: Any, rep: dt.date | None = None) -> bool:
        return worth_publishing(s, last, min_points=5, min_days=7, rep_close=rep)

    assert worth_publishing(_score(1, 0.40, 30), None, min_points=5, min_days=7)
    assert worth(_score(1, 0.40, 30, version=2))
    assert worth(_score(1, 0.45, 30))
    assert worth(_score(1, 0.35, 30))
    assert not worth(_score(1, 0.44, 30))
    assert not worth(_score(1, 0.36, 30))
    assert worth(_score(1, 0.40, 37))
    assert worth(_score(1, 0.40, 23))
    assert not worth(_score(1, 0.40, 36))
    assert worth(_score(1, 0.40, 34), rep_close)  # the rep's date is now before the P10
    assert not worth(_score(1, 0.40, 32), rep_close)
    assert worth(_score(1, 0.40, None))
    assert not worth(_score(1, 0.40, 30))
    assert worth(last_score)  # the published one again (a batch processed again)
    assert not worth(_score(-1, 0.9, 90))  # older than the published one
    # 0 and 0: any change
    assert worth_publishing(_score(1, 0.401, 30), last)
    assert worth_publishing(_score(1, 0.40, 31), last)
    assert not worth_publishing(_score(1, 0.40, 30), last)
