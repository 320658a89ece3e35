"""The consume loop on the in-memory broker: order of handle → publish → commit, and the one
outage policy (wait with back-off while the broker or PostgreSQL is unreachable, at start too;
never exit for it; the stop event ends every wait)."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable, Sequence
from typing import Any

import pytest
from aiokafka import TopicPartition

from vectoros.batch_produce import OutRecord
from vectoros.consume_loop import (
    ConsumeLoop,
    Database,
    LoopOptions,
    Output,
    Records,
    Resources,
    Subscription,
)
from vectoros.memory_broker import MemoryBroker, MemoryConsumer

IN, OUT = "in", "out"
LIMIT = 10.0  # a bound for "never happens", not a timing goal


class Echo:
    """Publishes every value it reads, upper-cased, to ``out``; can fail on demand."""

    def __init__(self) -> None:
        self.opened: Resources | None = None
        self.handled: list[list[bytes]] = []
        self.fail_with: list[BaseException] = []
        self.closed = False
        self.ready: Callable[[], bool] = lambda: True
        self.ready_seen: list[bool] = []

    async def open(self, resources: Resources) -> None:
        self.opened = resources

    async def close(self) -> None:
        self.closed = True

    def decode(self, records: Records) -> list[bytes]:
        return [r.value or b"" for recs in records.values() for r in recs]

    async def handle(self, values: list[bytes], stop: asyncio.Event) -> Sequence[Output] | None:
        self.ready_seen.append(self.ready())
        if self.fail_with:
            raise self.fail_with.pop(0)
        self.handled.append(values)
        return [Output(OUT, v.upper(), v) for v in values]


def options(**kw: Any) -> LoopOptions:
    values: dict[str, Any] = {
        "name": "echo",
        "subscription": Subscription((IN,), "g", "c"),
        "publishes": True,
        "idle_poll_ms": 20,
        "retry_initial_seconds": 0.01,
        "retry_max_seconds": 0.02,
        **kw,
    }
    return LoopOptions(**values)


async def until(condition: Callable[[], bool], task: asyncio.Task[None] | None = None) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + LIMIT
    while not condition():
        if task is not None and task.done():
            task.result()
            raise AssertionError("the loop ended on its own")
        if loop.time() > deadline:
            raise AssertionError("condition not reached")
        await asyncio.sleep(0.005)


async def test_handles_publishes_then_commits() -> None:
    broker = MemoryBroker(partitions=1)
    handler = Echo()
    loop = ConsumeLoop(handler, broker, options())
    await broker.append(IN, b"a")
    await broker.append(IN, b"b")
    stop = asyncio.Event()
    task = asyncio.create_task(loop.run(stop))
    await until(lambda: bool(broker.committed_offsets("g")), task)
    assert broker.values(OUT) == [b"A", b"B"]
    assert broker.committed_offsets("g") == {TopicPartition(IN, 0): 2}
    assert loop.ready()
    assert loop.caught_up()
    stop.set()
    await asyncio.wait_for(task, LIMIT)
    assert handler.closed
    assert not loop.ready()


async def test_waits_for_a_broker_that_is_down_at_start(caplog: pytest.LogCaptureFixture) -> None:
    broker = MemoryBroker(partitions=1, down=True)
    loop = ConsumeLoop(Echo(), broker, options())
    stop = asyncio.Event()
    with caplog.at_level(logging.INFO, logger="vectoros.consume_loop"):
        task = asyncio.create_task(loop.run(stop))
        await until(lambda: len(caplog.records) >= 3, task)
        assert not loop.ready()
        broker.down = False
        await broker.append(IN, b"late")
        await until(lambda: broker.values(OUT) == [b"LATE"], task)
        assert loop.ready()
        stop.set()
        await asyncio.wait_for(task, LIMIT)
    waits = [r for r in caplog.records if "not reachable" in r.getMessage()]
    assert len(waits) >= 3
    assert all(r.exc_info is None for r in waits)  # one line per attempt, no traceback
    assert "in-memory broker not reachable (attempt 1, KafkaConnectionError" in (
        waits[0].getMessage()
    )


async def test_stop_ends_a_wait_for_the_broker_at_once() -> None:
    broker = MemoryBroker(down=True)
    handler = Echo()
    loop = ConsumeLoop(handler, broker, options(retry_initial_seconds=3600, retry_max_seconds=3600))
    stop = asyncio.Event()
    task = asyncio.create_task(loop.run(stop))
    await asyncio.sleep(0.05)
    assert not task.done()  # waiting (an hour) for the broker
    stop.set()
    await asyncio.wait_for(task, LIMIT)  # returns, no error
    assert handler.opened is None


async def test_stop_abandons_a_connection_attempt_in_progress() -> None:
    class Hanging(MemoryBroker):
        def producer(self) -> Any:
            class Never:
                async def start(self) -> None:
                    await asyncio.Event().wait()

                async def stop(self) -> None:
                    pass

            return Never()

    loop = ConsumeLoop(Echo(), Hanging(), options())
    stop = asyncio.Event()
    task = asyncio.create_task(loop.run(stop))
    await asyncio.sleep(0.05)
    stop.set()
    await asyncio.wait_for(task, LIMIT)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_waits_for_postgresql_and_stop_ends_the_wait(
    caplog: pytest.LogCaptureFixture,
) -> None:
    dsn = f"postgresql://u:s3cret@127.0.0.1:{_free_port()}/x"  # nothing listens there
    handler = Echo()
    loop = ConsumeLoop(handler, MemoryBroker(), options(database=Database(dsn=dsn)))
    stop = asyncio.Event()
    with caplog.at_level(logging.INFO, logger="vectoros.consume_loop"):
        task = asyncio.create_task(loop.run(stop))
        await until(lambda: len(caplog.records) >= 2, task)
        assert not loop.ready()
        stop.set()
        await asyncio.wait_for(task, LIMIT)
    messages = [r.getMessage() for r in caplog.records]
    assert any("PostgreSQL at u@127.0.0.1" in m and "attempt 2" in m for m in messages)
    assert not any("s3cret" in m for m in messages)
    assert handler.opened is None  # nothing was consumed without the database


async def test_an_outage_while_handling_retries_the_same_batch_uncommitted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    broker = MemoryBroker(partitions=1)
    handler = Echo()
    handler.fail_with = [OSError("database went away"), ConnectionResetError("again")]
    loop = ConsumeLoop(handler, broker, options())
    handler.ready = loop.ready
    await broker.append(IN, b"x")
    stop = asyncio.Event()
    with caplog.at_level(logging.ERROR, logger="vectoros.consume_loop"):
        task = asyncio.create_task(loop.run(stop))
        await until(lambda: bool(broker.committed_offsets("g")), task)
        assert loop.ready()  # ready again once the batch went through
        stop.set()
        await asyncio.wait_for(task, LIMIT)
    assert handler.handled == [[b"x"]]
    assert broker.values(OUT) == [b"X"]
    assert handler.ready_seen == [True, False, False]  # not ready while retrying
    assert sum("offsets not committed" in r.getMessage() for r in caplog.records) == 2


async def test_a_failed_publish_is_retried_before_the_commit() -> None:
    broker = MemoryBroker(partitions=1)

    class Flaky(Echo):
        async def handle(self, values: list[bytes], stop: asyncio.Event) -> Sequence[Output]:
            broker.down = len(self.handled) == 0  # the first publish meets a broker outage
            out = await super().handle(values, stop)
            assert out is not None
            return out

    handler = Flaky()
    loop = ConsumeLoop(handler, broker, options())
    await broker.append(IN, b"x")
    stop = asyncio.Event()
    task = asyncio.create_task(loop.run(stop))
    await until(lambda: bool(broker.committed_offsets("g")), task)
    stop.set()
    await asyncio.wait_for(task, LIMIT)
    assert len(handler.handled) == 2
    assert broker.values(OUT) == [b"X"]


async def test_a_commit_during_a_broker_outage_is_retried(
    caplog: pytest.LogCaptureFixture,
) -> None:
    broker = MemoryBroker(partitions=1)

    class Quiet(Echo):
        async def handle(self, values: list[bytes], stop: asyncio.Event) -> Sequence[Output]:
            await super().handle(values, stop)
            broker.down = True  # the broker goes away before the commit
            return ()

    handler = Quiet()
    loop = ConsumeLoop(handler, broker, options())
    await broker.append(IN, b"x")
    stop = asyncio.Event()
    with caplog.at_level(logging.ERROR, logger="vectoros.consume_loop"):
        task = asyncio.create_task(loop.run(stop))
        await until(lambda: any("committing" in r.getMessage() for r in caplog.records), task)
        assert not loop.ready()
        broker.down = False
        await until(lambda: bool(broker.committed_offsets("g")), task)
        assert loop.ready()
        stop.set()
        await asyncio.wait_for(task, LIMIT)
    assert handler.handled == [[b"x"]]  # committed without handling the batch again


async def test_stop_during_an_outage_leaves_the_batch_uncommitted() -> None:
    broker = MemoryBroker(partitions=1)
    handler = Echo()
    handler.fail_with = [OSError("down")] * 1000
    loop = ConsumeLoop(handler, broker, options())
    await broker.append(IN, b"x")
    stop = asyncio.Event()
    task = asyncio.create_task(loop.run(stop))
    await until(lambda: len(handler.fail_with) < 998, task)
    stop.set()
    await asyncio.wait_for(task, LIMIT)
    assert broker.committed_offsets("g") == {}
    assert broker.values(OUT) == []


async def test_a_bug_is_raised_not_retried() -> None:
    broker = MemoryBroker(partitions=1)
    handler = Echo()
    handler.fail_with = [RuntimeError("bug")]
    loop = ConsumeLoop(handler, broker, options())
    await broker.append(IN, b"x")
    with pytest.raises(RuntimeError, match="bug"):
        await asyncio.wait_for(loop.run(asyncio.Event()), LIMIT)
    assert broker.committed_offsets("g") == {}
    assert not loop.ready()


async def test_rebalance_hooks_see_the_partitions() -> None:
    seen: list[tuple[str, set[TopicPartition]]] = []

    async def assigned(tps: set[TopicPartition]) -> None:
        seen.append(("assigned", tps))

    async def revoked(tps: set[TopicPartition]) -> None:
        seen.append(("revoked", tps))

    sub = Subscription((IN,), "g", "c", on_assigned=assigned, on_revoked=revoked)
    loop = ConsumeLoop(Echo(), MemoryBroker(partitions=2), options(subscription=sub))
    stop = asyncio.Event()
    task = asyncio.create_task(loop.run(stop))
    await until(loop.ready, task)
    stop.set()
    await asyncio.wait_for(task, LIMIT)
    both = {TopicPartition(IN, 0), TopicPartition(IN, 1)}
    assert seen == [("assigned", both), ("revoked", both)]


async def test_a_restart_resumes_from_the_committed_offsets() -> None:
    broker = MemoryBroker(partitions=1)
    await broker.append(IN, b"a")
    for expected in ([b"A"], [b"A", b"B"]):
        handler = Echo()
        loop = ConsumeLoop(handler, broker, options())
        stop = asyncio.Event()
        task = asyncio.create_task(loop.run(stop))
        await until(lambda: broker.values(OUT) == expected, task)  # noqa: B023
        await until(loop.caught_up, task)
        stop.set()
        await asyncio.wait_for(task, LIMIT)
        assert len(handler.handled) == 1  # only what was not committed before
        await broker.append(IN, b"b")


# --- what a pipelined handler (the monitor) uses ------------------------------------------------


class Chooser(Echo):
    """Publishes ``OutRecord``s to explicit partitions; commits only partition 0's offsets
    (``CommitHooks``), and hears the commits and every fetch."""

    def __init__(self) -> None:
        super().__init__()
        self.commits: list[dict[Any, int]] = []
        self.fetches = 0

    def decode(self, records: Records) -> list[bytes]:
        self.last = {tp: max(r.offset for r in recs) + 1 for tp, recs in records.items()}
        return super().decode(records)

    async def handle(  # type: ignore[override]
        self, values: list[bytes], stop: asyncio.Event
    ) -> Sequence[OutRecord]:
        self.handled.append(values)
        return [OutRecord(OUT, None, v, [("h", b"1")], 1) for v in values]

    def offsets(self, decoded: Any) -> dict[Any, int]:
        return {tp: o for tp, o in self.last.items() if tp.partition == 0}

    def committed(self, decoded: Any, offsets: Any) -> None:
        self.commits.append(dict(offsets))

    def fetched(self) -> None:
        self.fetches += 1


async def test_batched_publish_and_commit_hooks() -> None:
    broker = MemoryBroker(partitions=2)
    broker.create_topic(OUT)
    handler = Chooser()
    loop = ConsumeLoop(handler, broker, options(batched_publish=True))
    await broker.append(IN, b"a", partition=0)
    await broker.append(IN, b"b", partition=1)
    stop = asyncio.Event()
    task = asyncio.create_task(loop.run(stop))
    await until(lambda: bool(handler.commits), task)
    stop.set()
    await asyncio.wait_for(task, LIMIT)
    # every record on the partition it names, with its headers
    assert [(r.partition, r.headers) for r in broker.records(OUT)] == [(1, (("h", b"1"),))] * 2
    # only the offsets the handler chose are committed, and it heard so
    assert broker.committed_offsets("g") == {TopicPartition(IN, 0): 1}
    assert handler.commits == [{TopicPartition(IN, 0): 1}]
    assert handler.fetches > 0


async def test_a_revoke_waits_for_the_batch_in_flight() -> None:
    release = asyncio.Event()
    revoked: list[set[TopicPartition]] = []

    class Held(Echo):
        async def handle(self, values: list[bytes], stop: asyncio.Event) -> Sequence[Output]:
            self.handled.append(values)
            await release.wait()
            return []

    async def on_revoked(tps: set[TopicPartition]) -> None:
        revoked.append(tps)

    broker = MemoryBroker(partitions=1)
    handler = Held()
    sub = Subscription((IN,), "g", "c", on_revoked=on_revoked)
    loop = ConsumeLoop(
        handler,
        broker,
        options(subscription=sub, read_ahead=True, revoke_waits_for_batch=True),
    )
    await broker.append(IN, b"a")
    stop = asyncio.Event()
    task = asyncio.create_task(loop.run(stop))
    await until(lambda: bool(handler.handled), task)
    consumer = loop.consumer
    assert isinstance(consumer, MemoryConsumer)
    revoke = asyncio.create_task(consumer.revoke({TopicPartition(IN, 0)}))
    for _ in range(20):
        await asyncio.sleep(0)
    assert not revoke.done(), "revoked while a batch was in flight"
    assert not revoked
    release.set()
    await asyncio.wait_for(revoke, LIMIT)
    assert revoked == [{TopicPartition(IN, 0)}]
    assert broker.committed_offsets("g") == {TopicPartition(IN, 0): 1}, "committed first"
    stop.set()
    await asyncio.wait_for(task, LIMIT)
