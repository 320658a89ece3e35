"""The Dockerfile and docker-compose.yml cannot run here (no Docker engine), so they are read
against the code: every service's command exists in the CLI, every VECTOROS_* variable they set
is a real setting, and Prometheus scrapes every service."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import click
import yaml
from pydantic_settings import BaseSettings

from app.cli import main
from app.pipeline import RunSettings
from app.settings_index import known_variables
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
from vectoros.settings import (
    METRICS_PORTS,
    DatabaseSettings,
    OpsSettings,
)

ROOT = Path(__file__).resolve().parents[2]
SETTINGS: list[type[BaseSettings]] = [
    RunSettings,
    GatewaySettings,
    SimulatorSettings,
    DatabaseSettings,
]


# The settings class each compose service's command reads.
SERVICE_SETTINGS: dict[str, type[OpsSettings]] = {
    "monitor": MonitorSettings,
    "ticker": TickerSettings,
    "sink": SinkSettings,
    "notifier": NotifierSettings,
    "enricher": EnricherSettings,
    "forecast": ForecastSettings,
    "gateway": GatewaySettings,
    "history": HistorySettings,
    "capture": CaptureSettings,
    "api": ApiSettings,
}


def test_known_variables_cover_every_settings_class() -> None:
    fields = {f"VECTOROS_{name.upper()}" for cls in SETTINGS for name in cls.model_fields}
    assert fields <= known_variables()


def compose() -> dict[str, Any]:
    loaded = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert isinstance(loaded, dict)
    return loaded


def vectoros_services() -> dict[str, Any]:
    return {
        name: svc
        for name, svc in compose()["services"].items()
        if svc.get("image", "").startswith("vectoros")
    }


def test_every_compose_command_exists_in_the_cli() -> None:
    services = vectoros_services()
    assert {"monitor", "ticker", "sink", "notifier", "gateway"} <= set(services)
    for name, svc in services.items():
        words = list(svc["command"])
        ctx = click.Context(main)
        command: click.Command = main
        while isinstance(command, click.Group) and words and not words[0].startswith("-"):
            sub = command.get_command(ctx, words.pop(0))
            assert sub is not None, f"{name}: unknown command {svc['command']}"
            command = sub
        # the remaining words must parse as that command's options
        command.make_context(command.name or name, words, resilient_parsing=False)


def test_every_environment_variable_is_a_setting() -> None:
    known = known_variables()
    for name, svc in vectoros_services().items():
        for var in svc.get("environment", {}):
            if var.startswith("VECTOROS_"):
                assert var in known, f"{name}: {var} is not a setting"
    docker_env = re.findall(r"(VECTOROS_[A-Z_]+)=", (ROOT / "Dockerfile").read_text())
    assert docker_env
    assert set(docker_env) <= known


def test_every_service_has_its_own_metrics_port() -> None:
    ports = {name: cls().metrics_port for name, cls in SERVICE_SETTINGS.items()}
    ports["run"] = RunSettings().metrics_port
    assert len(set(ports.values())) == len(ports), ports
    assert ports == METRICS_PORTS
    for name, svc in vectoros_services().items():
        assert "VECTOROS_METRICS_PORT" not in svc.get("environment", {}), name
    assert "VECTOROS_METRICS_PORT=" not in (ROOT / "Dockerfile").read_text()


def test_prometheus_scrapes_each_service_on_its_port() -> None:
    scrape = yaml.safe_load((ROOT / "deploy" / "prometheus.yml").read_text())
    targets = {t for job in scrape["scrape_configs"] for sc in job["static_configs"]
               for t in sc["targets"]}  # fmt: skip
    expected = {f"{name}:{cls().metrics_port}" for name, cls in SERVICE_SETTINGS.items()}
    assert targets == expected
    assert set(SERVICE_SETTINGS) == set(vectoros_services()) - {"topics"}


def test_prometheus_scrapes_every_service() -> None:
    scrape = yaml.safe_load((ROOT / "deploy" / "prometheus.yml").read_text())
    targets = {t.split(":")[0] for job in scrape["scrape_configs"] for sc in job["static_configs"]
               for t in sc["targets"]}  # fmt: skip
    long_running = set(vectoros_services()) - {"topics"}
    assert long_running <= targets


def test_readme_documents_every_setting() -> None:
    readme = (ROOT / "README.md").read_text() + (ROOT / "docs" / "gateway.md").read_text()
    readme += (ROOT / "docs" / "capture.md").read_text()
    missing = sorted(v for v in known_variables() if v not in readme and not _grouped(v, readme))
    assert not missing, f"settings missing from the README: {missing}"


def _grouped(var: str, text: str) -> bool:
    """Rows like `VECTOROS_SIM_DEALS` / `_DAYS` document a family with one prefix."""
    for suffix in re.findall(r"`_([A-Z_]+)`", text):
        if var.endswith("_" + suffix):
            family = var[: -len(suffix) - 1]
            if f"`{family}_" in text:
                return True
    return False


def test_the_image_copies_every_package_the_project_installs() -> None:
    """The image installs the project from what it copies: a package left out (app/, the
    command line, once was) makes the `vectoros` entry point fail in the container."""
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = [p.rstrip("*") for p in project["tool"]["setuptools"]["packages"]["find"]["include"]]
    copied = set(re.findall(r"^COPY (\w+) \./\1$", (ROOT / "Dockerfile").read_text(), re.M))
    assert set(packages) <= copied, sorted(set(packages) - copied)
