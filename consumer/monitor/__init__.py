"""The monitor service: per-deal state and the rules over ``deal-events``; publishes
``deal-insights``, ``deal-events-dlq`` and the ``deal-monitor-state`` changelog.

``service`` (``Monitor``: connect, the batch loop, rebalances) ties together ``batch``,
``checkpoint``, ``assignment`` with ``restore``, ``gauges``, ``dlq``, ``metrics`` and
``settings``. ``Monitor`` is imported on first use, so that reading the settings (the CLI) does
not load the Kafka client.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from consumer.monitor.metrics import MonitorMetrics
from consumer.monitor.settings import MonitorSettings

if TYPE_CHECKING:
    from consumer.monitor.service import Monitor

__all__ = ["Monitor", "MonitorMetrics", "MonitorSettings"]


def __getattr__(name: str) -> Any:
    if name == "Monitor":
        from consumer.monitor.service import Monitor

        return Monitor
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
