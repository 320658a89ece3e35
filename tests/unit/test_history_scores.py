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
