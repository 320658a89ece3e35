"""SinkSettings: defaults, VECTOROS_* variables, frozen, the database URL stays secret."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from consumer.sink.settings import SinkSettings
from vectoros.settings import DatabaseSettings, KafkaSettings


def test_defaults() -> None:
    s = SinkSettings()
    assert s.sink_group_id == "vectoros-sink"
    assert s.sink_batch_max == 1000
    assert s.topic_insights == "deal-insights"
    assert s.database_url is None
    assert isinstance(s, KafkaSettings)
    assert isinstance(s, DatabaseSettings)


def test_reads_prefixed_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VECTOROS_SINK_GROUP_ID", "sink-b")
    monkeypatch.setenv("VECTOROS_SINK_BATCH_MAX", "250")
    monkeypatch.setenv("VECTOROS_SINK_FLUSH_MS", "20")
    monkeypatch.setenv("VECTOROS_DB_POOL_MAX_SIZE", "8")
    monkeypatch.setenv("VECTOROS_DB_RETRY_MAX_SECONDS", "5")
    monkeypatch.setenv("VECTOROS_KAFKA_BOOTSTRAP_SERVERS", "kafka:9092")
    monkeypatch.setenv("VECTOROS_DATABASE_URL", "postgresql://sink:hunter2@db/vectoros")
    s = SinkSettings()
    assert (s.sink_group_id, s.sink_batch_max, s.sink_flush_ms) == ("sink-b", 250, 20)
    assert (s.db_pool_max_size, s.db_retry_max_seconds) == (8, 5)
    assert s.bootstrap() == "kafka:9092"
    assert s.dsn() == "postgresql://sink:hunter2@db/vectoros"
    assert "hunter2" not in repr(s)
    assert "hunter2" not in str(s.model_dump())


def test_frozen() -> None:
    s = SinkSettings()
    with pytest.raises(ValidationError):
        s.sink_batch_max = 5  # type: ignore[misc]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"sink_batch_max": 0},
        {"sink_flush_ms": 0},
        {"db_pool_min_size": 5, "db_pool_max_size": 2},
        {"db_retry_initial_seconds": 10, "db_retry_max_seconds": 1},
    ],
)
def test_rejects_nonsense(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        SinkSettings(**kwargs)  # type: ignore[arg-type]
