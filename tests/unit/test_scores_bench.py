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


def test_the_history_steps_pair_each_score_with_its_deal_as_of_it() -> None:
    from bench.scores import history_steps, model_rules_rate

    data = build_events(60, events_per_deal=10, partitions=3)
    scored, n_scores = with_scores(data, share=1.0)
    steps = history_steps(scored)
    assert sum(1 for _, s in steps if s is not None) == n_scores
    seen: dict[str, int] = {}
    for h, score in steps:
        if score is None:
            assert h.outcome is not None or h.deleted_ms is not None
            continue
        assert score.deal_id == h.deal_id
        assert h.event_count >= seen.get(h.deal_id, 1)  # the deal as of the score, growing
        seen[h.deal_id] = h.event_count
    capped = history_steps(scored, deals=10)
    assert len({h.deal_id for h, _ in capped}) == 10
    n, seconds, _insights = model_rules_rate(steps)
    assert n == n_scores
    assert seconds >= 0
