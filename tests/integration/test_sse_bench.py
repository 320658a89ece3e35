"""The live-stream benchmark's scenario does what it names (no timings asserted): on the real
broker and PostgreSQL, every client in the child process connects before the first insight and
reads every insight produced."""

from __future__ import annotations

import pytest

from bench import sse
from bench.env import Session

pytestmark = pytest.mark.integration


async def test_every_client_reads_every_insight(kafka_bootstrap: str, database_url: str) -> None:
    session = Session(kafka_bootstrap, database_url, quick=True, runs=1, partitions=2)
    result = await sse.run(session, clients=5, rate=40, seconds=1)
    assert result.insights == 40
    assert result.complete == 5
    assert result.delivered == 5 * 40
    assert result.p50_ms <= result.p99_ms <= result.max_ms
