"""Kafka plumbing every service shares: topic creation and a producer with the right settings."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Callable, Collection, Iterator
from typing import Any, Protocol, TypeVar

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, for_code

from vectoros.errors import BrokerUnavailable, ConfigError
from vectoros.settings import KafkaSettings

log = logging.getLogger(__name__)

CONNECT_TIMEOUT = 30.0  # default of VECTOROS_KAFKA_CONNECT_TIMEOUT_SECONDS
FIRST_RETRY_DELAY = 0.5
MAX_RETRY_DELAY = 5.0
_EXISTS = 36  # TOPIC_ALREADY_EXISTS
_CONFIG_REJECTED = {35, 40, 42}  # UNSUPPORTED_VERSION, INVALID_CONFIG, INVALID_REQUEST
_warned_no_compaction = False
_no_idempotence: set[str] = set()  # bootstrap strings whose broker refused InitProducerId


def standard_topics(settings: KafkaSettings) -> dict[str, int]:
    """The four topics of the design, each with ``topic_partitions`` partitions."""
    names = (
        settings.topic_events,
        settings.topic_insights,
        settings.topic_dlq,
        settings.topic_state,
    )
    return dict.fromkeys(names, settings.topic_partitions)


PARTITIONS_MOVE_KEYS = (
    "The partition count of a topic cannot be changed in place: a record goes to partition "
    "hash(key) mod count, so with another count most deals' next events would land on another "
    "partition than the one whose monitor holds their state (and their order would break). To "
    "change it, create new topics: set VECTOROS_TOPIC_EVENTS, _INSIGHTS, _DLQ and _STATE to new "
    "names (e.g. deal-events-v2), run `vectoros topics create --partitions N`, and switch the "
    "producers and every service to them (the monitor starts with empty state on them). "
    "Or keep the existing count (VECTOROS_TOPIC_PARTITIONS / --partitions)."
)


async def standard_topic_partitions(settings: KafkaSettings) -> dict[str, int | None]:
    """The partition count of each standard topic as it is now (None: it does not exist).
    Waits for the broker like ``ensure_topics``."""
    bootstrap = settings.bootstrap()
    wait = getattr(settings, "kafka_connect_timeout_seconds", CONNECT_TIMEOUT)
    await ensure_topics(bootstrap, {}, retry_for=wait)  # waits for the broker, creates nothing
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id="vectoros-admin")
    try:
        await admin.start()
        existing = set(await admin.list_topics())
        return {
            name: await partition_count(admin, name) if name in existing else None
            for name in standard_topics(settings)
        }
    finally:
        await admin.close()


def compacted_topics(settings: KafkaSettings) -> frozenset[str]:
    return frozenset({settings.topic_state})


async def ensure_standard_topics(settings: KafkaSettings) -> None:
    await ensure_topics(
        settings.bootstrap(),
        standard_topics(settings),
        compacted=compacted_topics(settings),
        retry_for=settings.kafka_connect_timeout_seconds,
    )


class _Client(Protocol):
    async def start(self) -> None: ...


C = TypeVar("C", bound=_Client)

# What aiokafka logs (at ERROR) for each failed connection attempt and for a broker that refuses
# InitProducerId: we say it once, in our own words, instead.
_CONNECT_NOISE = re.compile(r"^Unable (?:to )?connect to |^Unexpected error during InitProducerId")


class _Swallow(logging.Filter):
    """Drops aiokafka's per-attempt connection errors, remembering the last for the message."""

    def __init__(self) -> None:
        super().__init__()
        self.last: str | None = None

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if _CONNECT_NOISE.search(message):
            self.last = message
            return False
        return True


@contextlib.contextmanager
def _quiet_aiokafka() -> Iterator[_Swallow]:
    swallow = _Swallow()
    names = ["aiokafka"] + [n for n in logging.root.manager.loggerDict if n.startswith("aiokafka.")]
    loggers = [logging.getLogger(n) for n in names]
    for logger in loggers:
        logger.addFilter(swallow)
    try:
        yield swallow
    finally:
        for logger in loggers:
            logger.removeFilter(swallow)


def _reason(exc: BaseException, swallowed: str | None) -> str:
    """Why a connection failed, in words (not "KafkaConnectionError: KafkaConnectionError")."""
    if swallowed and swallowed.startswith("Unable"):
        # 'Unable connect to "h:p": [Errno 111] Connect call failed (...)' -> after the colon
        return swallowed.split(": ", 1)[-1]
    if isinstance(exc, TimeoutError):
        return "no answer"
    text = str(exc)
    name = type(exc).__name__
    text = text.removeprefix(f"{name}: ").strip()
    return f"{name}: {text}" if text and text != name else name


async def _close(client: Any) -> None:
    closer = getattr(client, "stop", None) or getattr(client, "close", None)
    if closer is not None:
        with contextlib.suppress(Exception):
            await closer()


async def start_client(
    make: Callable[[], C],
    bootstrap: str,
    *,
    wait_seconds: float = CONNECT_TIMEOUT,
    what: str = "client",
) -> C:
    """Start an aiokafka client (producer, consumer or admin) made by ``make``: one policy for
    every command. While the broker cannot be reached it retries with backoff (a new client per
    attempt, one INFO line per attempt) for up to ``wait_seconds``, then raises
    ``BrokerUnavailable`` with one readable sentence. Other errors are raised at once (the failed
    client is closed first: it never leaks a connection)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_seconds
    delay = FIRST_RETRY_DELAY
    while True:
        client = make()
        error: BaseException
        with _quiet_aiokafka() as swallowed:
            try:
                await asyncio.wait_for(client.start(), max(0.1, deadline - loop.time()))
                return client
            except BaseException as exc:
                await _close(client)
                if not _retriable(exc):
                    raise
                reason, error = _reason(exc, swallowed.last), exc
        left = deadline - loop.time()
        if left <= 0:
            raise BrokerUnavailable(
                f"cannot reach the broker at {bootstrap} (VECTOROS_KAFKA_BOOTSTRAP_SERVERS) after "
                f"{wait_seconds:.4g} s: {reason}. Is it running and is the address right? "
                "(VECTOROS_KAFKA_CONNECT_TIMEOUT_SECONDS sets how long to wait)"
            ) from error
        wait = min(delay, left)
        log.info(
            "%s: broker %s not reachable (%s); retrying in %.1f s", what, bootstrap, reason, wait
        )
        await asyncio.sleep(wait)
        delay = min(delay * 2, MAX_RETRY_DELAY)


def _retriable(exc: BaseException) -> bool:
    return isinstance(exc, OSError | TimeoutError) or (
        isinstance(exc, KafkaError) and exc.retriable
    )


async def ensure_topics(
    bootstrap: str,
    topics: dict[str, int],
    *,
    compacted: Collection[str] = frozenset(),
    replication_factor: int = 1,
    retry_for: float = CONNECT_TIMEOUT,
) -> None:
    """Create the missing ``topics`` ({name: partitions}); ``compacted`` get cleanup.policy=compact.

    Existing topics are left alone (a different partition count is logged as a warning). Waits
    up to ``retry_for`` seconds for an unreachable broker (``start_client``), then raises
    ``BrokerUnavailable``; retriable errors of the broker are retried within the same time.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + retry_for
    delay = FIRST_RETRY_DELAY
    while True:
        try:
            await _ensure_once(
                bootstrap,
                topics,
                set(compacted),
                replication_factor,
                connect=max(0.1, deadline - loop.time()),
            )
            return
        except BrokerUnavailable:
            raise
        except Exception as exc:
            if not _retriable(exc):
                raise
            if loop.time() + delay > deadline:
                raise BrokerUnavailable(
                    f"the broker at {bootstrap} (VECTOROS_KAFKA_BOOTSTRAP_SERVERS) did not "
                    f"create the topics within {retry_for:.0f} s: {_reason(exc, None)}"
                ) from exc
            log.info("broker %s not ready (%s), retrying in %.1f s", bootstrap, exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, MAX_RETRY_DELAY)


async def _ensure_once(
    bootstrap: str,
    topics: dict[str, int],
    compacted: set[str],
    replication: int,
    *,
    connect: float = CONNECT_TIMEOUT,
) -> None:
    global _warned_no_compaction

    def make() -> AIOKafkaAdminClient:
        return AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id="vectoros-admin")

    admin = await start_client(make, bootstrap, wait_seconds=connect, what="admin")
    try:
        existing = set(await admin.list_topics())
        missing = [name for name in topics if name not in existing]
        configs: dict[str, dict[str, str]] = {
            name: {"cleanup.policy": "compact"} for name in missing if name in compacted
        }
        while missing:
            new = [
                NewTopic(n, topics[n], replication, topic_configs=configs.get(n)) for n in missing
            ]
            response = await admin.create_topics(new)
            missing = []
            for name, code, *rest in response.topic_errors:
                detail = f"{for_code(code).__name__} {rest[0] if rest else ''}".strip()
                if code == 0:
                    log.info("created topic %s (%d partitions)", name, topics[name])
                elif code == _EXISTS:
                    existing.add(name)
                elif code in _CONFIG_REJECTED and configs.pop(name, None) is not None:
                    if not _warned_no_compaction:
                        _warned_no_compaction = True
                        msg = "broker rejected cleanup.policy=compact (%s); creating %s without it"
                        log.warning(msg, detail, name)
                    missing.append(name)
                elif for_code(code).retriable:
                    raise for_code(code)(f"creating topic {name}: {detail}")
                else:
                    raise ConfigError(f"cannot create topic {name}: {detail}")
        for name in sorted(existing & topics.keys()):
            count = await partition_count(admin, name)
            if count != topics[name]:
                log.warning("topic %s has %d partitions, %d configured", name, count, topics[name])
    finally:
        await admin.close()


async def partition_count(client: Any, topic: str) -> int:
    """Partitions of ``topic``, asked through a started producer or admin client."""
    if isinstance(client, AIOKafkaProducer):
        return len(await client.partitions_for(topic))
    for meta in await client.describe_topics([topic]):
        if meta["topic"] == topic and meta["error_code"] == 0:
            return len(meta["partitions"])
    raise ConfigError(f"topic {topic} does not exist")


async def start_producer(settings: KafkaSettings, **overrides: Any) -> AIOKafkaProducer:
    """A started producer: acks=all, linger 5 ms, no compression; ``overrides`` win.

    Idempotence follows ``settings.kafka_idempotence`` (or ``enable_idempotence`` in overrides):
    "auto" falls back, with one INFO line per broker, to a plain producer when the broker refuses
    it (the embedded Tansu broker does); "on" raises ``ConfigError`` then. An unreachable broker is
    waited for up to ``kafka_connect_timeout_seconds`` (``start_client``), then
    ``BrokerUnavailable``.
    """
    bootstrap = settings.bootstrap()
    mode = settings.kafka_idempotence
    if "enable_idempotence" in overrides:
        mode = "on" if overrides.pop("enable_idempotence") else "off"
    if mode == "auto" and bootstrap in _no_idempotence:
        mode = "off"
    options: dict[str, Any] = {
        "bootstrap_servers": bootstrap,
        "client_id": settings.kafka_client_id,
        "acks": "all",
        "linger_ms": 5,
        "compression_type": None,
        **overrides,
    }
    timeout = settings.kafka_connect_timeout_seconds
    if mode != "off":
        try:
            return await start_client(
                lambda: AIOKafkaProducer(**options, enable_idempotence=True),
                bootstrap,
                wait_seconds=timeout,
                what="producer",
            )
        except KafkaError as exc:
            if mode == "on":
                raise ConfigError(
                    f"VECTOROS_KAFKA_IDEMPOTENCE=on but the broker at {bootstrap} refused an "
                    f"idempotent producer ({type(exc).__name__}); use auto or off"
                ) from exc
            _no_idempotence.add(bootstrap)
            log.info(
                "the broker at %s has no idempotent producer (%s): using acks=all without "
                "idempotence (VECTOROS_KAFKA_IDEMPOTENCE=off skips this check)",
                bootstrap,
                type(exc).__name__,
            )
    return await start_client(
        lambda: AIOKafkaProducer(**options), bootstrap, wait_seconds=timeout, what="producer"
    )
