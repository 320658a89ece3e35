"""``vectoros run`` serves the read API and the page, and ``vectoros tokens`` manages the
tokens it accepts (real processes, the session's broker and a fresh PostgreSQL database)."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.databases import fresh_database
from tests.integration.test_cli import VECTOROS, env_for, run
from tests.kafka_utils import WAIT_LIMIT

pytestmark = pytest.mark.integration


@pytest.fixture
async def dsn(database_url: str) -> AsyncIterator[str]:
    async with fresh_database(database_url, "apirun") as fresh:
        yield fresh


async def test_run_serves_the_api_and_tokens_open_it(
    kafka_bootstrap: str, dsn: str, unique_name: Any, tmp_path: Path
) -> None:
    env = env_for(
        kafka_bootstrap,
        unique_name("apirun"),
        VECTOROS_DATABASE_URL=dsn,
        VECTOROS_RUN_TICKER="false",
        VECTOROS_API_PORT="0",
    )
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
        found = re.search(r"Dashboard and read API: (http://\S+/)", out_path.read_text())
        assert found, out_path.read_text()
        url = found.group(1)

        created = run(["tokens", "create", "--workspace", "ws-run", "--name", "ci"], env)
        assert created.returncode == 0, created.stderr
        token = created.stdout.strip()
        token_id = token.split("_")[1]
        assert "shown only now" in created.stderr
        listed = run(["tokens", "list", "--workspace", "ws-run"], env)
        assert token_id in listed.stdout
        assert token not in listed.stdout
        assert "active" in listed.stdout

        async with httpx.AsyncClient(base_url=url, timeout=WAIT_LIMIT) as client:
            assert (await client.get("/")).status_code == 200
            me = await client.get("/api/v1/me", headers={"Authorization": f"Bearer {token}"})
            assert me.status_code == 200
            assert me.json()["workspace_id"] == "ws-run"
            revoked = run(["tokens", "revoke", token_id, "--workspace", "ws-run"], env)
            assert revoked.returncode == 0, revoked.stderr
            again = await client.get("/api/v1/me", headers={"Authorization": f"Bearer {token}"})
            assert again.status_code == 401
        twice = run(["tokens", "revoke", token_id, "--workspace", "ws-run"], env)
        assert twice.returncode == 1
        assert "no active token" in twice.stderr
        bad = run(["tokens", "create", "--workspace", "not a workspace"], env)
        assert bad.returncode == 2
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(proc.wait(), WAIT_LIMIT)
    assert code == 0, err_path.read_text()[-3000:]


async def test_demo_keep_prints_dashboard_links_and_runs_until_ctrl_c(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VECTOROS_")}
    env.pop("ANTHROPIC_API_KEY", None)
    env.update(VECTOROS_METRICS_PORT="0", VECTOROS_API_PORT="0")
    out_path, err_path = tmp_path / "demo.out", tmp_path / "demo.err"
    args = ["demo", "--deals", "30", "--days", "20", "--workspaces", "2", "--seconds", "0"]
    with out_path.open("w") as out, err_path.open("w") as err:
        proc = await asyncio.create_subprocess_exec(
            *VECTOROS, *args, "--keep", env=env, stdout=out, stderr=err
        )
    try:
        deadline = time.monotonic() + 5 * WAIT_LIMIT  # the demo plays its simulation first
        while "Ctrl-C stops it" not in out_path.read_text():
            assert proc.returncode is None, out_path.read_text()[-3000:] + err_path.read_text()
            assert time.monotonic() < deadline, out_path.read_text()[-3000:]
            await asyncio.sleep(0.2)
        text = out_path.read_text()
        assert "cycle report" in text
        assert re.search(r"Dashboard while it runs: http://\S+/", text), text  # any demo says it
        links = re.findall(r"(ws-\S+): (http://\S+/)#token=(vos_\S+)", text)
        assert len(links) == 2, text
        async with httpx.AsyncClient(timeout=WAIT_LIMIT) as client:
            for workspace, url, token in links:
                me = await client.get(
                    f"{url}api/v1/me", headers={"Authorization": f"Bearer {token}"}
                )
                assert me.json()["workspace_id"] == workspace
                summary = await client.get(
                    f"{url}api/v1/summary", headers={"Authorization": f"Bearer {token}"}
                )
                assert summary.status_code == 200
        proc.send_signal(signal.SIGINT)
        code = await asyncio.wait_for(proc.wait(), WAIT_LIMIT)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert code == 0, err_path.read_text()[-3000:]
