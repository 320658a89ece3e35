"""Every settings class of the project. The app layer is the one place that knows all the
services, so the check for unknown ``VECTOROS_*`` variables (a typo is otherwise silently
ignored) reads the list from here."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from pydantic_settings import BaseSettings

from app.pipeline import RunSettings
from consumer.api.settings import ApiSettings
from consumer.enricher.settings import EnricherSettings
from consumer.forecast.settings import ForecastSettings
from consumer.history.settings import HistorySettings
from consumer.monitor.settings import MonitorSettings
from consumer.notifier.settings import NotifierSettings
from consumer.sink.settings import SinkSettings
from producer.capture.settings import CaptureSettings
from producer.gateway.settings import GatewaySettings
from producer.simulate import SimulatorSettings
from producer.ticker import TickerSettings
from vectoros import native, settings
from vectoros.settings import CommonSettings, DatabaseSettings, KafkaSettings

SETTINGS: tuple[type[BaseSettings], ...] = (
    CommonSettings,
    KafkaSettings,
    DatabaseSettings,
    MonitorSettings,
    TickerSettings,
    SimulatorSettings,
    SinkSettings,
    NotifierSettings,
    EnricherSettings,
    GatewaySettings,
    CaptureSettings,
    HistorySettings,
    ApiSettings,
    ForecastSettings,
    RunSettings,
)


def known_variables() -> set[str]:
    """Every ``VECTOROS_*`` variable some service reads (and ``VECTOROS_NATIVE``, read when the
    pure core is first imported: ``vectoros.native``)."""
    return settings.known_variables(SETTINGS) | {native.ENV_SWITCH}


def unknown_variables(environ: Mapping[str, str] | Iterable[str]) -> list[tuple[str, str | None]]:
    """``VECTOROS_*`` names in ``environ`` that no service reads, with the closest known one."""
    return settings.unknown_variables(environ, known_variables())
