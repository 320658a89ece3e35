"""Kafka's default partition for a keyed record: ``murmur2(key) & 0x7fffffff`` modulo the
partition count, as the Java client and aiokafka's ``DefaultPartitioner`` compute it.

The same function as ``aiokafka.partitioner.murmur2``, about twice as fast: the key is read as
little-endian 32-bit words by one ``struct`` call instead of byte by byte, and each step masks
once. The monitor places every insight by its deal id, so this runs once per insight.
``tests/unit/test_partitioner.py`` checks it against aiokafka's on random keys.
"""

from __future__ import annotations

import random
import struct
from collections.abc import Sequence

_SEED = 0x9747B28C
_M = 0x5BD1E995
_MASK = 0xFFFFFFFF
_WORDS: dict[int, struct.Struct] = {}


def murmur2(data: bytes) -> int:
    """MurmurHash2 (32-bit, Kafka's seed) of ``data``."""
    length = len(data)
    h = _SEED ^ length
    words = length >> 2
    if words:
        fmt = _WORDS.get(words)
        if fmt is None:
            fmt = _WORDS[words] = struct.Struct(f"<{words}I")
        for k in fmt.unpack_from(data):
            k = (k * _M) & _MASK
            k = ((k ^ (k >> 24)) * _M) & _MASK
            h = ((h * _M) & _MASK) ^ k
    rest = length & 3
    if rest:
        base = length - rest
        if rest == 3:
            h ^= data[base + 2] << 16
        if rest >= 2:
            h ^= data[base + 1] << 8
        h = ((h ^ data[base]) * _M) & _MASK
    h ^= h >> 13
    h = (h * _M) & _MASK
    return h ^ (h >> 15)


def partition_for(key: bytes | None, partitions: Sequence[int]) -> int:
    """The partition Kafka's default partitioner picks for ``key`` among ``partitions``
    (sorted by id, as producers list them); a random one for a record without a key."""
    if key is None:
        return random.choice(partitions)
    return partitions[(murmur2(key) & 0x7FFFFFFF) % len(partitions)]
