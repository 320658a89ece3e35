"""What the CLI prints: `run`'s banner and the `insights list` table."""

from __future__ import annotations

import datetime as dt
import io
import shlex
from typing import Any, cast

from pydantic import SecretStr
from rich.console import Console

from app.listing import heading, insights_table, print_table, short_money
from app.pipeline import Pipeline, RunSettings, masked_url, ready_banner

NOW = dt.datetime(2026, 12, 2, 12, 0, tzinfo=dt.UTC)


def test_masked_url_hides_only_the_password() -> None:
    assert masked_url("postgresql://app:s3cret@db:5432/vectoros") == (
        "postgresql://app:***@db:5432/vectoros"
    )
    assert masked_url("postgresql://postgres:@/postgres?host=/tmp/x") == (
        "postgresql://postgres:@/postgres?host=/tmp/x"
    )
    assert masked_url("postgresql://db/vectoros") == "postgresql://db/vectoros"


def _pipeline(database_url: str, *, embedded: bool) -> Pipeline:
    settings = RunSettings(
        kafka_bootstrap_servers="127.0.0.1:9092", database_url=SecretStr(database_url)
    )
    return Pipeline(settings, cast(Any, None), embedded_broker=embedded, embedded_database=embedded)


def test_banner_exports_copy_paste_and_never_a_password() -> None:
    embedded = "postgresql://postgres:@/postgres?host=/tmp/vectoros-pg-x/pg"
    banner = ready_banner(_pipeline(embedded, embedded=True), "http://127.0.0.1:9464/metrics")
    exports = [line.strip() for line in banner.splitlines() if line.strip().startswith("export")]
    assert [shlex.split(line)[1] for line in exports] == [
        "VECTOROS_KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:9092",
        f"VECTOROS_DATABASE_URL={embedded}",
    ]
    assert "http://127.0.0.1:9464/metrics" in banner
    assert "vectoros simulate" in banner
    assert "vectoros send" in banner

    configured = ready_banner(_pipeline("postgresql://app:s3cret@db/x", embedded=False), None)
    assert "s3cret" not in configured
    assert "postgresql://app:***@db/x" in configured


def test_heading_says_how_many_are_shown_of_how_many() -> None:
    assert heading(50, 108, "open") == "showing 50 of 108 open insights"
    assert heading(3, 3, "resolved") == "3 resolved insights"
    assert heading(0, 0, "all") == "0 insights"


def test_short_money() -> None:
    assert short_money(None, "EUR") == ""
    assert short_money(950, "USD") == "950 USD"
    assert short_money(8300, "GBP") == "8.3k GBP"
    assert short_money(30_100, "EUR") == "30k EUR"
    assert short_money(1_250_000, None) == "1.2M"


def test_long_ids_stay_whole_in_80_columns() -> None:
    row = {
        "priority": "critical",
        "rule": "close_date_pressure",
        "workspace_id": "hubspot-portal-24681357",
        "deal_id": "18734650213",
        "status": "open",
        "title": "A long title that has to give way to the ids",
        "detected_at": (NOW - dt.timedelta(hours=5)).isoformat(),
        "data": {"deal_value": 120_000.0, "currency": "USD"},
    }
    out = io.StringIO()
    print_table(Console(file=out, width=80), insights_table([row], 1, "open", NOW, 80))
    text = out.getvalue()
    assert "hubspot-portal-24681357" in text
    assert "18734650213" in text
    assert "close_date_pressure" in text
    assert "5h" in text
