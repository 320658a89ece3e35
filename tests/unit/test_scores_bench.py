"""The scores benchmark's stream (``bench/scores.py``): each deal's first score, then a share of
its later deal events, as valid ``deal.scored`` events on the deal's partition after the event
they follow."""

from __future__ import annotations

from bench.data import build_events
from bench.scores import with_scores
from schemas.events import DealScored, event_adapter


def scores_of(partitions: dict[int, list[tuple[bytes | None, bytes, object]]]) -> list[str]:
    out = []
    for records in partitions.values():
        previous: bytes | None = None
        for key, value, _ in records:
            if key is not None and b'"deal.scored"' in value:
                event = event_adapter.validate_json(value)
                assert isinstance(event, DealScored)
                assert key == previous == event.deal_id.encode()  # right after its deal's event
                out.append(event.deal_id)
            previous = key
    return out


def test_the_first_score_of_every_deal_then_a_share_of_its_events() -> None:
    data = build_events(60, events_per_deal=10, partitions=3)
    first, n_first = with_scores(data, first_only=True)
    assert n_first == 60
    assert sorted(scores_of(first.partitions)) == sorted(f"deal-{i:07d}" for i in range(60))
    none, n_none = with_scores(data, share=0.0)
    assert n_none == n_first
    assert sorted(scores_of(none.partitions)) == sorted(scores_of(first.partitions))
    _, n_every = with_scores(data, share=1.0)
    closing = sum(
        1
        for records in data.partitions.values()
        for key, value, _ in records
        if key is not None and (b'"deal.closed"' in value or b'"deal.deleted"' in value)
    )
    assert n_every == data.deal_events - closing  # after every event but a close or deletion
    half, n_half = with_scores(data)
    assert n_first < n_half < n_every
    assert len(scores_of(half.partitions)) == n_half
