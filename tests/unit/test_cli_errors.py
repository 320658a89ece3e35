"""Every ``vectoros`` command answers a bad setting, rules file or argument, an unreachable broker
and a busy port with one ``Error:`` line and a non-zero exit code; a traceback only with
``--debug``. Run through click's CliRunner (a process where the traceback itself is the point)."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from app.cli import main

NO_BROKER = "VECTOROS_KAFKA_BOOTSTRAP_SERVERS is not set"
NO_DATABASE = "VECTOROS_DATABASE_URL is not set"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No VECTOROS_* variable of the caller; the root logger as it was (the CLI configures it)."""
    for name in list(os.environ):
        if name.startswith("VECTOROS_") or name == "ANTHROPIC_API_KEY":
            monkeypatch.delenv(name)
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def invoke(args: list[str], **env: str) -> Result:
    return CliRunner().invoke(main, args, env=env)


def error_line(result: Result) -> str:
    """The one ``Error:`` line of a failed command (and nothing that looks like a traceback)."""
    assert result.exit_code != 0, result.output
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.stderr
    # a command that failed on purpose did not die of an unhandled exception
    assert result.exception is None or isinstance(result.exception, SystemExit)
    return errors[0]


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize(
    ("args", "needs"),
    [
        (["monitor"], NO_BROKER),
        (["sink"], NO_BROKER),
        (["notify"], NO_BROKER),
        (["tick"], NO_BROKER),
        (["tick", "--once"], NO_BROKER),
        (["simulate"], NO_BROKER),
        (["topics", "create"], NO_BROKER),
        (["state", "reset-clock", "--partition", "0", "--to", "2026-01-01T00:00:00Z"], NO_BROKER),
        (["db", "migrate"], NO_DATABASE),
        (["insights", "list"], NO_DATABASE),
    ],
)
def test_a_missing_setting_is_one_line(args: list[str], needs: str) -> None:
    line = error_line(invoke(args))
    assert needs in line
    assert line == error_line(invoke(args))  # the whole stderr is that line
    assert invoke(args).stderr.strip() == line


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["--log-level", "verbose", "topics", "create"], "--log-level"),
        (["demo", "--deals", "-5"], "--deals"),
        (["demo", "--seconds", "-1"], "--seconds"),
        (["simulate", "--days", "0"], "--days"),
        (["insights", "list", "--limit", "-1"], "--limit"),
        (["topics", "create", "--partitions", "0"], "--partitions"),
        (["tick", "--interval", "soon"], "soon"),
        (["gateway", "--port", "70000"], "--port"),
    ],
)
def test_a_bad_argument_is_one_line(args: list[str], option: str) -> None:
    result = invoke(args, VECTOROS_KAFKA_BOOTSTRAP_SERVERS="127.0.0.1:1")
    line = error_line(result)
    assert option in line
    assert result.stderr.strip() == line  # no usage block


def test_a_bad_setting_names_the_variable() -> None:
    line = error_line(invoke(["topics", "create"], VECTOROS_TOPIC_PARTITIONS="zero"))
    assert line.startswith("Error: invalid settings: VECTOROS_TOPIC_PARTITIONS:")


def test_a_bad_log_level_variable_is_one_line_and_any_case_works() -> None:
    assert "VECTOROS_LOG_LEVEL" in error_line(invoke(["db", "migrate"], VECTOROS_LOG_LEVEL="loud"))
    line = error_line(invoke(["db", "migrate"], VECTOROS_LOG_LEVEL="warning"))
    assert NO_DATABASE in line


def test_a_check_across_settings_names_both_variables() -> None:
    line = error_line(
        invoke(
            ["notify"],
            VECTOROS_KAFKA_BOOTSTRAP_SERVERS="127.0.0.1:1",
            VECTOROS_WEBHOOK_URLS="https://hooks.example.com/x",
        )
    )
    assert "VECTOROS_WEBHOOK_URLS needs VECTOROS_WEBHOOK_SECRET" in line
    assert "VECTOROS_:" not in line
    assert "Value error" not in line


@pytest.mark.parametrize(
    ("content", "expect"),
    [
        (None, "rules.yaml"),
        ("bogus_key: 1\n", "bogus_key"),
        ("defaults: [unclosed\n", "rules.yaml"),
        ("defaults:\n  stale_days: -3\n", "stale_days"),
    ],
)
def test_a_bad_rules_file_is_one_line(tmp_path: Path, content: str | None, expect: str) -> None:
    rules = tmp_path / "rules.yaml"
    if content is not None:
        rules.write_text(content)
    result = invoke(
        ["monitor"], VECTOROS_KAFKA_BOOTSTRAP_SERVERS="127.0.0.1:1", VECTOROS_RULES_FILE=str(rules)
    )
    assert expect in error_line(result)


def test_an_unknown_variable_is_one_warning_with_the_closest_name() -> None:
    result = invoke(["db", "migrate"], VECTOROS_KAFKA_BOOTSTRAP_SERVER="kafka:9092")
    warnings = [
        line for line in result.stderr.splitlines() if "VECTOROS_KAFKA_BOOTSTRAP_SER" in line
    ]
    assert len(warnings) == 1, result.stderr
    assert "WARNING" in warnings[0]
    assert "did you mean VECTOROS_KAFKA_BOOTSTRAP_SERVERS?" in warnings[0]
    assert NO_DATABASE in error_line(result)


def test_known_variables_of_every_service_are_not_warned_about() -> None:
    result = invoke(
        ["db", "migrate"],
        VECTOROS_WEBHOOK_SECRET="x",  # notifier
        VECTOROS_GATEWAY_PORT="1",  # gateway
        VECTOROS_RUN_TICKER="false",  # run
        VECTOROS_ANTHROPIC_API_KEY="x",  # enricher, by alias
        VECTOROS_SIM_DEALS="3",  # simulate
        VECTOROS_NATIVE="1",  # every process that imports the pure core
    )
    assert "is not a VectorOS setting" not in result.stderr
    assert NO_DATABASE in error_line(result)


@pytest.mark.parametrize(
    "args",
    [
        ["topics", "create"],
        ["simulate"],
        ["tick", "--once"],
        ["state", "reset-clock", "--partition", "0", "--to", "2026-01-01T00:00:00Z"],
    ],
)
def test_an_unreachable_broker_is_one_line_after_the_connect_timeout(args: list[str]) -> None:
    port = closed_port()
    result = invoke(
        args,
        VECTOROS_KAFKA_BOOTSTRAP_SERVERS=f"127.0.0.1:{port}",
        VECTOROS_KAFKA_CONNECT_TIMEOUT_SECONDS="1",
    )
    line = error_line(result)
    assert line.startswith(
        f"Error: cannot reach the broker at 127.0.0.1:{port} (VECTOROS_KAFKA_BOOTSTRAP_SERVERS) "
        "after 1 s: "
    )
    assert "Connect call failed" in line
    assert "KafkaConnectionError" not in result.stderr
    assert "aiokafka" not in result.stderr  # its per-attempt ERRORs are folded into ours
    attempts = [line for line in result.stderr.splitlines() if "not reachable" in line]
    assert 1 <= len(attempts) <= 3, result.stderr  # one line per attempt, backing off


def test_a_busy_metrics_port_is_one_line_naming_the_variable() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = invoke(
            ["monitor"],
            VECTOROS_KAFKA_BOOTSTRAP_SERVERS="127.0.0.1:1",
            VECTOROS_METRICS_PORT=str(port),
        )
    line = error_line(result)
    assert f"port {port} on 127.0.0.1 is already in use" in line
    assert "VECTOROS_METRICS_PORT" in line


def run_process(args: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("VECTOROS_")}
    return subprocess.run(
        [sys.executable, "-m", "app", *args],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_a_process_prints_one_line_and_debug_shows_the_traceback() -> None:
    plain = run_process(["monitor"])
    assert plain.returncode == 1
    assert plain.stderr.strip().startswith("Error: " + NO_BROKER)
    assert len(plain.stderr.strip().splitlines()) == 1

    debug = run_process(["--debug", "monitor"])
    assert debug.returncode != 0
    assert "Traceback (most recent call last)" in debug.stderr
    assert "ConfigError: " + NO_BROKER in debug.stderr

    by_variable = run_process(["monitor"], VECTOROS_LOG_LEVEL="debug")
    assert "Traceback (most recent call last)" in by_variable.stderr
