"""``vectoros.partitioner`` places keys exactly as aiokafka's (and Java's) default partitioner."""

from __future__ import annotations

from aiokafka.partitioner import DefaultPartitioner
from aiokafka.partitioner import murmur2 as reference
from hypothesis import given, settings
from hypothesis import strategies as st

from vectoros.partitioner import murmur2, partition_for


@settings(max_examples=2000, derandomize=True)
@given(st.binary(max_size=300))
def test_murmur2_equals_aiokafka(data: bytes) -> None:
    assert murmur2(data) == reference(data)


def test_every_tail_length_and_deal_ids() -> None:
    keys = [b"", b"a", b"ab", b"abc", b"abcd", b"\xff\xfe\xfd", "délai-ünïcode".encode()]
    keys += [f"deal-{i:07d}".encode() for i in range(2000)]
    keys += [f"hubspot:123:{i}".encode() for i in range(2000)]
    default = DefaultPartitioner()
    for count in (1, 6, 12, 7):
        parts = list(range(count))
        for key in keys:
            assert partition_for(key, parts) == default(key, parts, parts)


def test_a_record_without_a_key_goes_to_any_partition() -> None:
    assert {partition_for(None, [3, 4, 5]) for _ in range(200)} == {3, 4, 5}
