"""Kafka plumbing every service shares: topic creation and a producer with the right settings."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError, KafkaError, for_code

from vectoros.errors import BrokerUnavailable, ConfigError
from vectoros.settings import KafkaSettings

log = logging.getLogger(__name__)

CONNECT_TIMEOUT = 30.0
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
        settings.bootstrap(), standard_topics(settings), compacted=compacted_topics(settings)
    )


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

    Existing topics are left alone (a different partition count is logged as a warning). Retries
    with backoff while the broker is unreachable, then raises ``BrokerUnavailable``.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + retry_for
    delay = 0.1
    while True:
        try:
            await _ensure_once(bootstrap, topics, set(compacted), replication_factor)
            return
        except Exception as exc:
            if not _retriable(exc):
                raise
            if loop.time() + delay > deadline:
                raise BrokerUnavailable(
                    f"Kafka broker at {bootstrap} did not answer within {retry_for:.0f} s "
                    f"({type(exc).__name__}: {exc}). Is it running, and is "
                    "VECTOROS_KAFKA_BOOTSTRAP_SERVERS right?"
                ) from exc
            log.info("broker %s not ready (%s), retrying in %.1f s", bootstrap, exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)


async def _ensure_once(
    bootstrap: str, topics: dict[str, int], compacted: set[str], replication: int
) -> None:
    global _warned_no_compaction
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id="vectoros-admin")
    try:
        await admin.start()
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


async def _started(producer: AIOKafkaProducer) -> AIOKafkaProducer:
    """Start, or close and re-raise: a failed producer never leaks a connection."""
    try:
        await asyncio.wait_for(producer.start(), CONNECT_TIMEOUT)
    except BaseException:
        await producer.stop()
        raise
    return producer


async def start_producer(settings: KafkaSettings, **overrides: Any) -> AIOKafkaProducer:
    """A started producer: acks=all, linger 5 ms, no compression; ``overrides`` win.

    Idempotence follows ``settings.kafka_idempotence`` (or ``enable_idempotence`` in overrides):
    "auto" falls back, with one warning per broker, to a plain producer when the broker refuses it
    (the embedded Tansu broker does); "on" raises ``ConfigError`` then.
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
    try:
        if mode != "off":
            try:
                return await _started(AIOKafkaProducer(**options, enable_idempotence=True))
            except KafkaConnectionError:
                raise
            except KafkaError as exc:
                if mode == "on":
                    raise ConfigError(
                        f"VECTOROS_KAFKA_IDEMPOTENCE=on but the broker at {bootstrap} refused an "
                        f"idempotent producer ({type(exc).__name__}: {exc}); use auto or off"
                    ) from exc
                _no_idempotence.add(bootstrap)
                log.warning(
                    "broker at %s does not support idempotent producers (%s); using acks=all "
                    "without idempotence: retries may duplicate records",
                    bootstrap,
                    type(exc).__name__,
                )
        return await _started(AIOKafkaProducer(**options))
    except (KafkaConnectionError, TimeoutError, OSError) as exc:
        raise BrokerUnavailable(
            f"cannot start a producer: Kafka broker at {bootstrap} not reachable "
            f"({type(exc).__name__}: {exc})"
        ) from exc
