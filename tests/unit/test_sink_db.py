"""vectoros.db helpers that need no server: DSN description, back-off, migration files."""

from __future__ import annotations

import time

import pytest

from vectoros.db import (
    backoff_delay,
    connect_pool,
    describe_dsn,
    load_migrations,
)
from vectoros.errors import ConfigError, DatabaseUnavailable


@pytest.mark.parametrize(
    ("dsn", "expected"),
    [
        ("postgresql://postgres:@/postgres?host=/tmp/x/pg", "postgres@[/tmp/x/pg]/postgres"),
        ("postgresql://sink:hunter2@db.internal:6432/vectoros", "sink@db.internal:6432/vectoros"),
        ("postgres://db/vectoros", "db/vectoros"),
        ("postgresql://u:p%40ss@h/d?sslmode=require&password=x", "u@h/d"),
    ],
)
def test_describe_dsn_never_shows_the_password(dsn: str, expected: str) -> None:
    assert describe_dsn(dsn) == expected


def test_describe_dsn_of_garbage() -> None:
    assert "hunter2" not in describe_dsn("postgresql://u:hunter2@[::1/x")


def test_backoff_doubles_up_to_the_cap() -> None:
    assert [backoff_delay(n, 0.1, 1.0) for n in range(1, 7)] == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    assert backoff_delay(10_000, 0.1, 30.0) == 30.0
    assert backoff_delay(0, 0.5, 30.0) == 0.5


def test_backoff_jitter_stays_within_range() -> None:
    delays = {backoff_delay(3, 1.0, 10.0, jitter=0.5) for _ in range(200)}
    assert all(2.0 <= d <= 4.0 for d in delays)
    assert len(delays) > 1


def test_migrations_are_packaged_and_ordered() -> None:
    migrations = load_migrations()
    names = [m.name for m in migrations]
    assert names == sorted(names)
    assert names[0] == "0001_insights"
    first = migrations[0]
    assert "CREATE TABLE insights" in first.sql
    assert "CREATE TABLE insight_events" in first.sql
    assert len(first.checksum) == 64


async def test_unreachable_database_raises_after_the_deadline(tmp_path: object) -> None:
    dsn = f"postgresql://sink:hunter2@/vectoros?host={tmp_path}/nowhere"
    started = time.monotonic()
    with pytest.raises(DatabaseUnavailable) as info:
        await connect_pool(dsn, deadline_seconds=0.5, initial_backoff=0.05, max_backoff=0.1)
    assert 0.4 < time.monotonic() - started < 5
    message = str(info.value)
    assert "hunter2" not in message
    assert "sink@" in message
    assert "/vectoros" in message


async def test_malformed_dsn_is_a_config_error() -> None:
    with pytest.raises(ConfigError) as info:
        await connect_pool("postgresql://u:hunter2@host:notaport/db", deadline_seconds=1)
    assert "hunter2" not in str(info.value)
