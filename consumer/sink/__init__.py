"""The sink: insight events from ``deal-insights`` into PostgreSQL.

``insights`` holds the current state of every insight (one row per ``insight_id``);
``insight_events`` is the append-only history (one row per lifecycle step). Writes are
idempotent and order-robust, so at-least-once delivery gives effectively-once tables.
"""

from consumer.sink.settings import SinkSettings
from consumer.sink.store import (
    InMemoryInsightStore,
    InsightStore,
    PostgresInsightStore,
    SourcePosition,
    WriteResult,
)

__all__ = [
    "InMemoryInsightStore",
    "InsightStore",
    "PostgresInsightStore",
    "SinkSettings",
    "SourcePosition",
    "WriteResult",
]
