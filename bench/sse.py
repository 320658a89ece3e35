"""The live stream under load: ``clients`` dashboards connected to one workspace's stream while
insights arrive on ``deal-insights`` at ``rate`` per second.

The API runs as in production (``run_api``: uvicorn, its live feed consuming the topic from its
end, the hub, server-sent events) on the session's broker and a PostgreSQL database of its own.
The clients run in a child process (``python -m bench.sse clients ...``; one event loop, raw
HTTP/1.1 connections, so that they do not share the server's event loop), each with the one
workspace token. Once every client is connected, ``rate`` insights a second are produced for
``seconds`` seconds, each with ``detected_at`` set to the moment it is sent; every client
notes, for every insight it reads, the wall-clock time since then (one machine, one clock).
Reported: the p50, p99 and largest of those delays over all clients and insights, and how many
clients read every insight (a client 1000 events behind is disconnected by design).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import statistics
import sys
import time
from dataclasses import dataclass

from prometheus_client import CollectorRegistry

from bench import api as api_bench
from bench.env import Session
from consumer.api.service import run_api
from consumer.api.settings import ApiSettings
from schemas.insights import InsightEvent
from vectoros.kafka import start_producer
from vectoros.ops_server import Health

START_LIMIT = 120.0  # a bound for "never happens", not a goal
_MARK = b'"detected_at":"'


@dataclass(frozen=True)
class SseResult:
    clients: int
    complete: int  # clients that read every insight
    insights: int
    delivered: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    server_cpu_s: float  # this process (the API, its live feed, the producer) while measuring
    clients_cpu_s: float  # the clients' process
    elapsed_s: float  # from the first send to the last client done


def _insight(n: int, now: dt.datetime) -> InsightEvent:
    return InsightEvent.model_validate(
        {
            "insight_id": f"sse-{n}",
            "lifecycle": "raised",
            "rule": "stale_deal",
            "workspace_id": api_bench.WORKSPACE,
            "deal_id": f"deal-{n}",
            "title": f"Deal {n} went quiet",
            "description": "No activity for 9 days while the close date is near.",
            "priority": ("low", "medium", "high", "critical")[n % 4],
            "confidence": 0.8,
            "data": {"deal_id": f"deal-{n}", "deal_title": f"Deal {n}", "deal_value": 12000.0},
            "actions": [
                {
                    "action": "Call the champion",
                    "priority": "high",
                    "timeline": "today",
                    "expected_impact": "x",
                },
                {
                    "action": "Send a recap",
                    "priority": "medium",
                    "timeline": "this week",
                    "expected_impact": "y",
                },
            ],
            "source": "rules",
            "detected_at": now,
            "raised_at": now,
        }
    )


async def run(session: Session, clients: int, rate: float, seconds: float) -> SseResult:
    setup = await api_bench.setup(session, 1)
    topic = session.name("sse-insights")
    await session.create_topics(topic)
    settings = ApiSettings(
        kafka_bootstrap_servers=session.bootstrap,
        kafka_idempotence="off",
        database_url=setup.dsn,
        metrics_enabled=False,
        topic_insights=topic,
        topic_acks=session.name("sse-acks"),
        topic_partitions=session.partitions,
        api_port=0,
        api_rate_limit_per_second=1e5,
        api_rate_limit_burst=1_000_000,
    )
    health, stop = Health(), asyncio.Event()
    port: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    server = asyncio.create_task(
        run_api(settings, CollectorRegistry(), health, stop, on_ready=port.set_result)
    )
    child: asyncio.subprocess.Process | None = None
    try:
        await asyncio.wait([server, port], timeout=START_LIMIT, return_when="FIRST_COMPLETED")
        if server.done():
            server.result()
        deadline = time.monotonic() + START_LIMIT
        while not health.ready():  # the live feed has its partitions
            if time.monotonic() > deadline:
                raise RuntimeError("the API's live feed did not start")
            await asyncio.sleep(0.05)
        total = int(rate * seconds)
        child = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.sse",
            "clients",
            str(port.result()),
            setup.token,
            str(clients),
            str(total),
            str(seconds + 60),
            stdout=asyncio.subprocess.PIPE,
        )
        assert child.stdout is not None
        line = await asyncio.wait_for(child.stdout.readline(), START_LIMIT)
        if line.strip() != b"connected":
            raise RuntimeError(f"the clients did not connect: {line!r}")
        producer = await start_producer(settings)
        cpu = time.process_time()
        try:
            sent = []
            started = time.monotonic()
            for n in range(total):
                delay = started + n / rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                event = _insight(n, dt.datetime.now(dt.UTC))
                sent.append(
                    await producer.send(
                        topic, event.model_dump_json().encode(), key=event.deal_id.encode()
                    )
                )
            await asyncio.gather(*sent)
        finally:
            await producer.stop()
        out, _ = await asyncio.wait_for(child.communicate(), seconds + 120)
        elapsed, cpu = time.monotonic() - started, time.process_time() - cpu
        report = json.loads(out.decode().strip().splitlines()[-1])
    finally:
        if child is not None and child.returncode is None:
            child.kill()
            await child.wait()
        stop.set()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(server, START_LIMIT)
        await api_bench.teardown(session, setup)
        await session.drop_topics(topic, settings.topic_acks)
    return SseResult(
        clients=clients,
        complete=int(report["complete"]),
        insights=total,
        delivered=int(report["delivered"]),
        p50_ms=float(report["p50_ms"]),
        p99_ms=float(report["p99_ms"]),
        max_ms=float(report["max_ms"]),
        server_cpu_s=cpu,
        clients_cpu_s=float(report["cpu_s"]),
        elapsed_s=elapsed,
    )


# -- the client side (a child process) -------------------------------------------------------


async def _client(
    port: int, token: str, expected: int, delays: list[float], connected: asyncio.Event
) -> int:
    """One dashboard's stream: the number of insights read (their delays go to ``delays``)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(
            (
                "GET /api/v1/stream HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                f"Authorization: Bearer {token}\r\nAccept: text/event-stream\r\n\r\n"
            ).encode()
        )
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        if b" 200 " not in head.split(b"\r\n", 1)[0]:
            raise RuntimeError(head.split(b"\r\n", 1)[0].decode())
        connected.set()
        buffer = b""
        seen = 0
        while seen < expected:
            chunk = await reader.read(65536)
            if not chunk:
                break
            now = time.time()
            buffer += chunk
            at = buffer.find(_MARK)
            while at >= 0:
                end = buffer.find(b'"', at + len(_MARK))
                if end < 0:
                    break
                sent = dt.datetime.fromisoformat(buffer[at + len(_MARK) : end].decode())
                delays.append(now - sent.timestamp())
                seen += 1
                buffer = buffer[end + 1 :]
                at = buffer.find(_MARK)
            buffer = buffer[-len(_MARK) :] if at < 0 else buffer[at:]
        return seen
    finally:
        writer.close()


async def _clients(port: int, token: str, count: int, expected: int, limit: float) -> None:
    delays: list[float] = []
    flags = [asyncio.Event() for _ in range(count)]
    tasks = [asyncio.create_task(_client(port, token, expected, delays, flag)) for flag in flags]
    try:
        await asyncio.wait_for(asyncio.gather(*(f.wait() for f in flags)), START_LIMIT)
    except TimeoutError:
        failed = [t.exception() for t in tasks if t.done() and not t.cancelled()]
        raise RuntimeError(
            f"{sum(not f.is_set() for f in flags)} clients not connected: {failed[:3]}"
        ) from None
    print("connected", flush=True)
    cpu = time.process_time()
    done, pending = await asyncio.wait(tasks, timeout=limit)
    for task in pending:
        task.cancel()
    seen = [t.result() for t in done if not t.cancelled() and t.exception() is None]
    delays.sort()
    p99 = delays[min(len(delays) - 1, int(len(delays) * 0.99))] if delays else float("nan")
    print(
        json.dumps(
            {
                "complete": sum(1 for s in seen if s >= expected),
                "delivered": len(delays),
                "p50_ms": statistics.median(delays) * 1000 if delays else float("nan"),
                "p99_ms": p99 * 1000,
                "max_ms": delays[-1] * 1000 if delays else float("nan"),
                "cpu_s": time.process_time() - cpu,
            }
        ),
        flush=True,
    )


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.sse")
    p.add_argument("role", choices=["clients"])
    p.add_argument("port", type=int)
    p.add_argument("token")
    p.add_argument("count", type=int)
    p.add_argument("expected", type=int)
    p.add_argument("limit", type=float)
    args = p.parse_args(argv)
    asyncio.run(_clients(args.port, args.token, args.count, args.expected, args.limit))


if __name__ == "__main__":
    main()
