"""The first hour of an operator: `run`'s banner, `simulate --start`, `send`, `topics create`
against existing topics, and `insights list` (heading, filters, JSON, an 80-column terminal).
Every command runs as a separate process, as an operator runs it."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import re
import shlex
import signal
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from consumer.sink.rows import SourcePosition
from consumer.sink.store import PostgresInsightStore
from schemas.events import TICK_HEADER, Tick, event_adapter
from schemas.insights import InsightAction, InsightData, InsightEvent, Lifecycle, Priority, RuleName
from tests.databases import fresh_database, migrated_pool
from tests.integration.test_cli import VECTOROS, env_for, run
from tests.kafka_utils import WAIT_LIMIT, read_all

pytestmark = pytest.mark.integration

NOW = dt.datetime.now(dt.UTC)


def created(deal: str, event_id: str, workspace: str = "ws-a") -> dict[str, Any]:
    return {
        "type": "deal.created",
        "event_id": event_id,
        "workspace_id": workspace,
        "deal_id": deal,
        "occurred_at": (NOW - dt.timedelta(hours=1)).isoformat(),
        "title": f"Deal {deal}",
        "value": 1200.5,
        "currency": "EUR",
        "stage": "lead",
        "probability": 10,
        "close_date": "2027-06-30",
        "owner_id": "usr-1",
    }


def activity(deal: str, event_id: str) -> dict[str, Any]:
    return {
        "type": "activity.logged",
        "event_id": event_id,
        "workspace_id": "ws-a",
        "deal_id": deal,
        "occurred_at": NOW.isoformat(),
        "activity_type": "call",
    }


async def deal_records(bootstrap: str, topic: str) -> list[Any]:
    return [r for r in await read_all(bootstrap, topic) if not dict(r.headers).get(TICK_HEADER)]


def send_stdin(data: bytes, env: dict[str, str]) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [*VECTOROS, "send", "-"],
        input=data,
        env=env,
        capture_output=True,
        timeout=WAIT_LIMIT,
        check=False,
    )


# --- send --------------------------------------------------------------------------------------


async def test_send_file_array_json_lines_and_stdin(
    kafka_bootstrap: str, unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    prefix = unique_name("send")
    env = env_for(kafka_bootstrap, prefix)
    one = tmp_path / "one.json"
    one.write_bytes(orjson.dumps(created("d-1", "e-1"), option=orjson.OPT_INDENT_2))
    array = tmp_path / "array.json"
    array.write_bytes(orjson.dumps([created("d-2", "e-2"), activity("d-2", "e-3")]))
    lines = tmp_path / "events.jsonl"
    lines.write_bytes(
        b"\n".join(orjson.dumps(e) for e in (created("d-3", "e-4"), activity("d-1", "e-5"))) + b"\n"
    )

    for path in (one, array, lines):
        result = run(["send", str(path)], env)
        assert result.returncode == 0, result.stderr
    piped = send_stdin(orjson.dumps(activity("d-3", "e-6")), env)
    assert piped.returncode == 0, piped.stderr
    assert b"sent activity.logged deal d-3" in piped.stdout
    assert b"1 event(s) published" in piped.stdout
    assert "2 event(s) published" in run(["send", str(array)], env).stdout  # again: fine

    records = await deal_records(kafka_bootstrap, f"{prefix}-events")
    events = [event_adapter.validate_json(r.value) for r in records]
    ids = [e.event_id or "" for e in events]
    assert sorted(set(ids)) == ["e-1", "e-2", "e-3", "e-4", "e-5", "e-6"]
    for record, event in zip(records, events, strict=True):
        assert not isinstance(event, Tick)
        assert record.key == event.deal_id.encode()  # keyed by deal_id: one partition per deal
    partitions = {r.key: {s.partition for s in records if s.key == r.key} for r in records}
    assert all(len(p) == 1 for p in partitions.values())


async def test_send_invalid_input_publishes_nothing(
    kafka_bootstrap: str, unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    prefix = unique_name("send-bad")
    env = env_for(kafka_bootstrap, prefix)
    assert run(["topics", "create"], env).returncode == 0
    bad_value = created("d-2", "e-2") | {"value": "lots"}
    tick = {"type": "tick", "at": NOW.isoformat()}
    array = tmp_path / "array.json"
    array.write_bytes(orjson.dumps([created("d-1", "e-1"), bad_value, tick]))
    lines = tmp_path / "events.jsonl"
    lines.write_text(orjson.dumps(created("d-1", "e-1")).decode() + "\n{not json\n")

    result = run(["send", str(array)], env)
    assert result.returncode != 0
    errors = result.stderr.splitlines()
    assert any(line.startswith("event 2: schema_violation") and "value" in line for line in errors)
    assert any(line.startswith("event 3: ticks cannot be sent") for line in errors)
    assert not any(line.startswith("event 1") for line in errors)
    assert "nothing was published" in result.stderr

    result = run(["send", str(lines)], env)
    assert result.returncode != 0
    assert "line 2: invalid_json" in result.stderr

    assert await deal_records(kafka_bootstrap, f"{prefix}-events") == []


# --- simulate --start --------------------------------------------------------------------------


async def _ticks(bootstrap: str, topic: str) -> list[dt.datetime]:
    out = []
    for record in await read_all(bootstrap, topic):
        event = event_adapter.validate_json(record.value)
        if isinstance(event, Tick):
            out.append(event.at)
    return sorted(out)


async def test_simulate_ends_now_by_default_or_starts_at_start(
    kafka_bootstrap: str, unique_name: Callable[[str], str]
) -> None:
    prefix = unique_name("sim-now")
    env = env_for(kafka_bootstrap, prefix)
    before = dt.datetime.now(dt.UTC).replace(microsecond=0)
    result = run(["simulate", "--deals", "5", "--days", "3"], env)
    after = dt.datetime.now(dt.UTC)
    assert result.returncode == 0, result.stderr
    ticks = await _ticks(kafka_bootstrap, f"{prefix}-events")
    # the last tick is the simulation's end: the moment the command started, not January 2026
    assert before <= ticks[-1] <= after
    assert before - dt.timedelta(days=3) <= ticks[0] <= after - dt.timedelta(days=3)

    prefix = unique_name("sim-start")
    env = env_for(kafka_bootstrap, prefix)
    result = run(["simulate", "--deals", "5", "--days", "2", "--start", "2026-03-01T08:00Z"], env)
    assert result.returncode == 0, result.stderr
    ticks = await _ticks(kafka_bootstrap, f"{prefix}-events")
    assert ticks[0] == dt.datetime(2026, 3, 1, 8, tzinfo=dt.UTC)
    assert ticks[-1] == dt.datetime(2026, 3, 3, 8, tzinfo=dt.UTC)

    bad = run(["simulate", "--start", "last tuesday"], env)
    assert bad.returncode == 2
    assert "--start" in bad.stderr


# --- topics create -----------------------------------------------------------------------------


def test_topics_create_refuses_another_partition_count(
    kafka_bootstrap: str, unique_name: Callable[[str], str]
) -> None:
    prefix = unique_name("parts")
    env = env_for(kafka_bootstrap, prefix)  # 3 partitions
    first = run(["topics", "create"], env)
    assert first.returncode == 0, first.stderr
    assert f"{prefix}-events: 3 partitions, created" in first.stdout

    again = run(["topics", "create"], env)
    assert again.returncode == 0, again.stderr
    assert f"{prefix}-events: 3 partitions, exists" in again.stdout

    more = run(["topics", "create", "--partitions", "6"], env)
    assert more.returncode == 1
    assert f"{prefix}-events: exists with 3 partitions, 6 requested" in more.stdout
    assert "hash(key)" in more.stderr
    assert "new topics" in more.stderr
    assert "partitions, created" not in more.stdout


# --- insights list -----------------------------------------------------------------------------


def insight(
    n: int,
    *,
    priority: Priority = Priority.HIGH,
    rule: RuleName = RuleName.STALE_DEAL,
    workspace: str = "ws-northwind",
    owner: tuple[str, str] = ("usr-1", "Ada Lovelace"),
    age: dt.timedelta = dt.timedelta(days=1),
    lifecycle: Lifecycle = Lifecycle.RAISED,
) -> InsightEvent:
    at = NOW - age
    action = InsightAction(action="Call", priority=priority, timeline="today", expected_impact="x")
    return InsightEvent(
        insight_id=f"insight-{n:04d}",
        lifecycle=lifecycle,
        rule=rule,
        workspace_id=workspace,
        deal_id=f"deal-{n:05d}",
        title=f"Deal number {n} has gone quiet for a long while and needs a call",
        description="Nobody talked to the buyer.",
        priority=priority,
        confidence=0.9,
        data=InsightData(
            deal_id=f"deal-{n:05d}",
            deal_title=f"Deal {n}",
            deal_value=1000.0 * n,
            currency="EUR",
            owner_id=owner[0],
            owner_name=owner[1],
        ),
        actions=[action, action],
        source="rules",
        detected_at=at,
        raised_at=at,
    )


@pytest.fixture
async def insights_dsn(database_url: str) -> AsyncIterator[str]:
    async with fresh_database(database_url, "list") as dsn:
        async with migrated_pool(dsn) as pool:
            events = [
                insight(1, priority=Priority.CRITICAL, rule=RuleName.CLOSE_DATE_PRESSURE),
                insight(2, priority=Priority.HIGH),
                insight(3, priority=Priority.MEDIUM, owner=("usr-2", "Grace Hopper")),
                insight(4, priority=Priority.LOW, age=dt.timedelta(days=30)),
                insight(5, priority=Priority.MEDIUM, workspace="ws-acme"),
                insight(6, priority=Priority.HIGH, lifecycle=Lifecycle.RESOLVED),
            ]
            await PostgresInsightStore(pool).write_batch(
                [(e, SourcePosition("t", 0, i)) for i, e in enumerate(events)]
            )
        yield dsn


def list_insights(dsn: str, *args: str, columns: int = 200) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VECTOROS_")}
    env.update(VECTOROS_DATABASE_URL=dsn, COLUMNS=str(columns))
    return run(["insights", "list", *args], env)


def listed(dsn: str, *args: str) -> list[str]:
    result = list_insights(dsn, "--json", *args)
    assert result.returncode == 0, result.stderr
    return [row["insight_id"].removeprefix("insight-") for row in orjson.loads(result.stdout)]


async def test_insights_list_heading_and_filters(insights_dsn: str) -> None:
    result = list_insights(insights_dsn, "--limit", "2")
    assert result.returncode == 0, result.stderr
    assert "showing 2 of 5 open insights" in result.stdout
    assert "5 open insights" in list_insights(insights_dsn).stdout

    assert listed(insights_dsn) == ["0001", "0002", "0005", "0003", "0004"]
    assert listed(insights_dsn, "--priority", "high") == ["0001", "0002"]  # high and above
    assert listed(insights_dsn, "--priority", "critical") == ["0001"]
    assert listed(insights_dsn, "--deal", "deal-00003") == ["0003"]
    assert listed(insights_dsn, "--owner", "usr-2") == ["0003"]
    assert listed(insights_dsn, "--owner", "grace hopper") == ["0003"]
    assert listed(insights_dsn, "--workspace", "ws-acme") == ["0005"]
    assert listed(insights_dsn, "--status", "resolved") == ["0006"]
    assert len(listed(insights_dsn, "--status", "all")) == 6
    assert "0004" not in listed(insights_dsn, "--since", "7d")
    assert "0004" in listed(insights_dsn, "--since", "60d")
    since = (NOW - dt.timedelta(days=7)).isoformat()
    assert "0004" not in listed(insights_dsn, "--since", since)

    bad = list_insights(insights_dsn, "--since", "a while")
    assert bad.returncode == 2
    assert "--since" in bad.stderr


async def test_insights_list_json_carries_every_field(insights_dsn: str) -> None:
    result = list_insights(insights_dsn, "--json", "--status", "all")
    rows = orjson.loads(result.stdout)
    expected = set(InsightEvent.model_fields) - {"schema_version"}
    expected |= {"status", "actions", "resolved_at", "rule_title", "rule_description"}
    for row in rows:
        assert expected <= set(row), expected - set(row)
    resolved = next(r for r in rows if r["insight_id"] == "insight-0006")
    assert resolved["status"] == "resolved"
    assert resolved["resolved_at"] is not None
    assert resolved["actions"][0]["action"] == "Call"


@pytest.mark.parametrize("status", ["open", "all"])
async def test_insights_list_fits_80_columns(insights_dsn: str, status: str) -> None:
    result = list_insights(insights_dsn, "--status", status, columns=80)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert all(len(line) <= 80 for line in lines), "\n".join(lines)
    header = next(line for line in lines if " rule " in line)
    names = ["rule", "workspace", "deal", "value", "title", "age"]
    names += ["st"] if status == "all" else []
    assert all(re.search(rf"\b{name}\b", header) for name in names), header
    body = "\n".join(lines)
    for n in (1, 2, 3, 4, 5):
        assert f"deal-{n:05d}" in body  # ids whole
    assert "ws-northwind" in body
    assert "close_date_pressure" in body
    assert "…" in body  # the title is what gets shortened


# --- run ---------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_run_banner_exports_reach_the_running_pipeline(tmp_path: Path) -> None:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("VECTOROS_")}
    env.pop("ANTHROPIC_API_KEY", None)
    env.update(VECTOROS_METRICS_PORT=str(port), VECTOROS_RUN_TICKER="false")
    out_path, err_path = tmp_path / "run.out", tmp_path / "run.err"
    with out_path.open("w") as out, err_path.open("w") as err:
        proc = await asyncio.create_subprocess_exec(
            *VECTOROS, "run", env=env, stdout=out, stderr=err
        )
    try:
        deadline = time.monotonic() + WAIT_LIMIT
        while "Ctrl-C stops it" not in out_path.read_text():
            assert proc.returncode is None, err_path.read_text()[-3000:]
            assert time.monotonic() < deadline, err_path.read_text()[-3000:]
            await asyncio.sleep(0.1)
        banner = out_path.read_text()
        exports = dict(
            shlex.split(line.strip().removeprefix("export "))[0].split("=", 1)
            for line in banner.splitlines()
            if line.strip().startswith("export ")
        )
        assert set(exports) == {"VECTOROS_KAFKA_BOOTSTRAP_SERVERS", "VECTOROS_DATABASE_URL"}
        assert f"http://127.0.0.1:{port}/metrics" in banner
        assert "vectoros simulate" in banner
        assert "vectoros send" in banner
        async with httpx.AsyncClient() as client:
            metrics = await client.get(f"http://127.0.0.1:{port}/metrics")
        assert metrics.status_code == 200

        shell_env = {k: v for k, v in os.environ.items() if not k.startswith("VECTOROS_")}
        shell_env.update(exports)
        event = tmp_path / "event.json"
        event.write_bytes(orjson.dumps(created("d-banner", "e-banner")))
        sent = run(["send", str(event)], shell_env)
        assert sent.returncode == 0, sent.stderr
        records = await read_all(exports["VECTOROS_KAFKA_BOOTSTRAP_SERVERS"], "deal-events")
        assert b"e-banner" in b"".join(r.value for r in records)
        migrated = run(["db", "migrate"], shell_env)
        assert migrated.returncode == 0, migrated.stderr
        assert "schema is up to date" in migrated.stdout  # the sink of `run` migrated it
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(proc.wait(), WAIT_LIMIT)
    assert code == 0, err_path.read_text()[-3000:]
