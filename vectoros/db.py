"""PostgreSQL access: a connection pool that waits for the database, and the migrations.

``connect_pool`` retries with capped exponential back-off until a deadline, then raises
``DatabaseUnavailable`` (the message names the host and database, never the password).
``migrate`` applies ``vectoros/migrations/NNNN_name.sql`` in order, in one transaction, under a
transaction-level advisory lock, so two processes migrating at once is safe: the second waits
and then finds nothing left to do. ``vectoros db migrate`` and the sink both call it.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import random
import time
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING, TypeAlias
from urllib.parse import parse_qs, unquote, urlsplit

import asyncpg

from vectoros.errors import ConfigError, DatabaseUnavailable

if TYPE_CHECKING:
    from asyncpg.pool import PoolConnectionProxy

logger = logging.getLogger(__name__)

PgPool: TypeAlias = "asyncpg.Pool[asyncpg.Record]"
PgConnection: TypeAlias = "asyncpg.Connection[asyncpg.Record] | PoolConnectionProxy[asyncpg.Record]"

MIGRATIONS_PACKAGE = "vectoros.migrations"
# pg_advisory_xact_lock key of the migrations: the first 8 bytes of sha256("vectoros.migrations").
MIGRATION_LOCK_ID = int.from_bytes(
    hashlib.sha256(MIGRATIONS_PACKAGE.encode()).digest()[:8], "big", signed=True
)

# Errors after which trying again later can succeed: the server is down, starting, restarting
# or out of connection slots, the network failed, or a connection broke mid-way.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    asyncpg.InterfaceError,
)

# Errors that no amount of waiting fixes: wrong credentials, missing database.
_CONFIG_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.InvalidAuthorizationSpecificationError,
    asyncpg.InvalidCatalogNameError,
)


def describe_dsn(dsn: str) -> str:
    """``user@host:port/database`` of a ``postgresql://`` DSN, without the password."""
    try:
        parts = urlsplit(dsn)
        query = parse_qs(parts.query)
        host = parts.hostname or ",".join(query.get("host", [])) or "localhost"
        port = parts.port or (query.get("port") or [""])[0]
        user = unquote(parts.username) if parts.username else ""
    except ValueError:
        return "PostgreSQL (unparseable DSN)"
    database = unquote(parts.path.lstrip("/")) or user or "postgres"
    if host.startswith("/"):
        host = f"[{host}]"  # a unix-socket directory
    where = f"{host}:{port}" if port else host
    return f"{user + '@' if user else ''}{where}/{database}"


def backoff_delay(attempt: int, initial: float, maximum: float, jitter: float = 0.0) -> float:
    """Seconds to wait before retry number ``attempt`` (1-based): doubling, capped.

    ``jitter`` (0-1) spreads the delay randomly over ``[delay * (1 - jitter), delay]`` so that
    many instances recovering from the same outage do not retry in lock-step.
    """
    delay = min(maximum, initial * 2.0 ** min(max(attempt - 1, 0), 62))
    if jitter > 0:
        delay *= 1.0 - random.uniform(0.0, min(jitter, 1.0))
    return delay


async def _init_connection(conn: asyncpg.Connection[asyncpg.Record]) -> None:
    """json/jsonb columns read as Python objects (stdlib json: no 64-bit integer limit)."""
    for name in ("json", "jsonb"):
        await conn.set_type_codec(
            name, schema="pg_catalog", encoder=json.dumps, decoder=json.loads, format="text"
        )


async def connect_pool(
    dsn: str,
    *,
    min_size: int = 0,
    max_size: int = 4,
    deadline_seconds: float = 30.0,
    command_timeout: float | None = 30.0,
    initial_backoff: float = 0.1,
    max_backoff: float = 2.0,
) -> PgPool:
    """A connection pool, waiting up to ``deadline_seconds`` for the database to accept one.

    One connection is opened at once (so an unreachable server is noticed here). ``min_size``
    above 0 makes asyncpg keep that many connections open in the background, logging a
    traceback for every failed reconnect while the server is down; 0 reconnects on demand.
    json/jsonb values are decoded to Python objects. Raises ``DatabaseUnavailable`` when the
    database is still unreachable at the deadline, ``ConfigError`` at once for wrong
    credentials, a missing database or a malformed DSN.
    """
    where = describe_dsn(dsn)
    deadline = time.monotonic() + deadline_seconds
    attempt = 0
    while True:
        attempt += 1
        remaining = deadline - time.monotonic()
        try:
            pool: PgPool = await asyncpg.create_pool(
                dsn,
                min_size=min_size,
                init_size=max(1, min_size),
                max_size=max_size,
                command_timeout=command_timeout,
                timeout=max(1.0, min(10.0, remaining)),
                init=_init_connection,
            )
        except (asyncpg.ClientConfigurationError, ValueError):
            # The DSN parser's messages may quote the DSN, password included: do not repeat them.
            raise ConfigError("VECTOROS_DATABASE_URL is not a valid postgresql:// DSN") from None
        except _CONFIG_ERRORS as exc:
            raise ConfigError(
                f"PostgreSQL at {where} refused the connection for good: "
                f"{type(exc).__name__}: {exc}. Check VECTOROS_DATABASE_URL."
            ) from None
        except TRANSIENT_ERRORS as exc:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise DatabaseUnavailable(
                    f"PostgreSQL at {where} is not reachable after {attempt} attempts in "
                    f"{deadline_seconds:g}s: {type(exc).__name__}: {exc}"
                ) from exc
            delay = min(backoff_delay(attempt, initial_backoff, max_backoff), remaining)
            logger.warning(
                "PostgreSQL at %s not reachable yet (attempt %d: %s: %s); retrying in %.1fs",
                where,
                attempt,
                type(exc).__name__,
                exc,
                delay,
            )
            await asyncio.sleep(delay)
            continue
        if attempt > 1:
            logger.info("connected to PostgreSQL at %s after %d attempts", where, attempt)
        return pool


@dataclass(frozen=True, slots=True)
class Migration:
    name: str  # the file name without ".sql", e.g. "0001_insights"; sorted lexically
    sql: str
    checksum: str  # sha256 of the file


def load_migrations() -> list[Migration]:
    """Every ``*.sql`` file of ``vectoros.migrations``, in name order."""
    found: list[Migration] = []
    for entry in resources.files(MIGRATIONS_PACKAGE).iterdir():
        if entry.is_file() and entry.name.endswith(".sql"):
            data = entry.read_bytes()
            found.append(
                Migration(
                    name=entry.name.removesuffix(".sql"),
                    sql=data.decode("utf-8"),
                    checksum=hashlib.sha256(data).hexdigest(),
                )
            )
    found.sort(key=lambda m: m.name)
    return found


_CREATE_MIGRATIONS_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    text PRIMARY KEY,
    checksum   text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""


async def migrate(
    db: PgPool | PgConnection, migrations: list[Migration] | None = None
) -> list[str]:
    """Apply the pending migrations in one transaction; return the names applied (in order).

    Safe to run concurrently: the transaction takes an advisory lock first, so a second
    migrator waits for the first to commit, then sees every version recorded and applies none.
    """
    if isinstance(db, asyncpg.Pool):
        async with db.acquire() as conn:
            return await _migrate(conn, migrations)
    return await _migrate(db, migrations)


async def _migrate(conn: PgConnection, migrations: list[Migration] | None) -> list[str]:
    todo = load_migrations() if migrations is None else migrations
    applied: list[str] = []
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK_ID)
        await conn.execute(_CREATE_MIGRATIONS_TABLE)
        done = {
            row["version"]: row["checksum"]
            for row in await conn.fetch("SELECT version, checksum FROM schema_migrations")
        }
        for migration in todo:
            if migration.name in done:
                if done[migration.name] != migration.checksum:
                    logger.warning(
                        "migration %s was changed after it was applied; the database keeps "
                        "the applied version (write a new migration instead)",
                        migration.name,
                    )
                continue
            await conn.execute(migration.sql)
            await conn.execute(
                "INSERT INTO schema_migrations (version, checksum) VALUES ($1, $2)",
                migration.name,
                migration.checksum,
            )
            applied.append(migration.name)
    for name in applied:
        logger.info("applied migration %s", name)
    return applied
