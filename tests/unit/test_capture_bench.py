"""The capture benchmark's scenario does what it names (no timings asserted): every stand-in
message becomes one event through the real sync, and the matcher probes the index the same
number of times whatever the number of deals."""

from __future__ import annotations

from bench import capture


async def test_the_bench_sync_turns_every_message_into_one_event() -> None:
    publisher = capture.Counting()
    result = await capture.run_sync(250, 40, publisher)
    assert (result.messages, result.events, publisher.events) == (250, 250, 250)
    assert result.per_minute > 0


def test_matching_probes_do_not_depend_on_the_number_of_deals() -> None:
    small = capture.run_matching(200, 10)
    big = capture.run_matching(200, 5_000)
    assert small.lookups_per_message == big.lookups_per_message == 2.0  # address + domain
