"""The conventions every service's metrics follow (each service keeps its own metrics module,
e.g. ``consumer/monitor/metrics.py``; ``tests/unit/test_metrics.py`` checks them all).

Conventions: one prefix (``vectoros_``), the unit in the name (``_seconds``, ``_bytes``),
``_total`` on counters, and bounded labels only: event type, rule, priority, lifecycle, DLQ
reason, destination type and partition number — never a deal, workspace or insight id.
Each service builds its metrics on a ``CollectorRegistry`` passed in, so tests and the
all-in-one ``vectoros run`` can keep services apart or share one registry.
"""

from __future__ import annotations

PREFIX = "vectoros"

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
