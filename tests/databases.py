"""A fresh database per test on the session's PostgreSQL, and a migrated pool on it."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from vectoros.db import PgPool, connect_pool, migrate


@contextlib.asynccontextmanager
async def fresh_database(database_url: str, prefix: str) -> AsyncIterator[str]:
    """The DSN of a new, empty database; dropped (connections forced out) on exit."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(database_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    try:
        yield urlunsplit(urlsplit(database_url)._replace(path=f"/{name}"))
    finally:
        admin = await asyncpg.connect(database_url)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


@contextlib.asynccontextmanager
async def migrated_pool(dsn: str) -> AsyncIterator[PgPool]:
    pool = await connect_pool(dsn, deadline_seconds=10)
    try:
        await migrate(pool)
        yield pool
    finally:
        await pool.close()
