"""Property-based tests of the read API from its own OpenAPI document (schemathesis): for every
operation, generated parameters (valid and invalid) against the real server and a real
PostgreSQL (and the real broker, for answers) never get a 5xx, and every answer conforms to the
document (status code, content type, body schema). The live stream is left out (an endless
response). Unknown query parameters are ignored by design, so the check that wants them rejected
is off."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from prometheus_client import CollectorRegistry

from consumer.api.openapi import openapi_document
from consumer.api.service import run_api
from consumer.api.settings import ApiSettings
from consumer.api.tokens import PgTokens
from tests.databases import fresh_database, migrated_pool
from tests.integration.test_api_db import seed
from tests.kafka_utils import WAIT_LIMIT
from vectoros.ops_server import Health

pytestmark = pytest.mark.integration

schema = schemathesis.openapi.from_dict(openapi_document()).exclude(path="/api/v1/stream")


@pytest.fixture(scope="module")
def server(database_url: str, kafka_bootstrap: str) -> Iterator[tuple[str, str]]:
    """The API on a seeded database, in a thread with its own event loop (schemathesis calls
    it over HTTP, synchronously); ``(base_url, token of ws-a)``."""
    ready = threading.Event()
    box: dict[str, Any] = {}

    async def serve() -> None:
        async with fresh_database(database_url, "apifuzz") as dsn:
            async with migrated_pool(dsn) as pool:
                await seed(pool)
                _, box["token"] = await PgTokens(pool).create("ws-a", "fuzz")
            api = ApiSettings(
                kafka_bootstrap_servers=kafka_bootstrap,
                kafka_idempotence="off",
                topic_acks=f"fuzz-acks-{uuid.uuid4().hex[:8]}",
                database_url=dsn,
                metrics_enabled=False,
                api_live=False,
                api_port=0,
                api_rate_limit_per_second=100_000,
                api_rate_limit_burst=1_000_000,
            )
            stop = asyncio.Event()
            box["stop"], box["loop"] = stop, asyncio.get_running_loop()

            def serving(port: int) -> None:
                box["url"] = f"http://127.0.0.1:{port}"
                ready.set()

            await run_api(api, CollectorRegistry(), Health(), stop, on_ready=serving)

    def main() -> None:
        try:
            asyncio.run(serve())
        except BaseException as exc:  # surfaced by the fixture
            box["error"] = exc
            ready.set()

    thread = threading.Thread(target=main, name="api-under-test")
    thread.start()
    try:
        assert ready.wait(WAIT_LIMIT), "the API did not start"
        assert "error" not in box, box.get("error")
        yield box["url"], box["token"]
    finally:
        if "loop" in box:
            box["loop"].call_soon_threadsafe(box["stop"].set)
        thread.join(WAIT_LIMIT)


@schema.parametrize()
@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_no_5xx_and_answers_conform(case: schemathesis.Case, server: tuple[str, str]) -> None:
    url, token = server
    response = case.call(base_url=url, headers={"Authorization": f"Bearer {token}"})
    assert response.status_code < 500, (response.status_code, response.text[:500])
    # unknown query parameters are ignored on purpose (clients may add their own), so requests
    # that only add some are not "negative data" to be rejected; a cursor is opaque: any string
    # fits its schema, but only the ones this API wrote are accepted (others: 400)
    excluded = [schemathesis.checks.negative_data_rejection]
    if case.query and "cursor" in case.query:
        excluded.append(schemathesis.checks.positive_data_acceptance)
    case.validate_response(response, excluded_checks=excluded)
