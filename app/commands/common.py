"""What every command shares: settings loading, durations, one-line errors."""

from __future__ import annotations

import asyncio
import re
import sys
from collections.abc import Coroutine
from typing import Any, TypeVar

import click
from pydantic import ValidationError
from pydantic_settings import BaseSettings

from vectoros.errors import ConfigError, VectorOSError

S = TypeVar("S", bound=BaseSettings)

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def parse_duration(text: str) -> float:
    """'60s', '5m', '1h', '250ms' or a plain number of seconds."""
    match = _DURATION.match(text)
    if not match or float(match.group(1)) <= 0:
        raise click.BadParameter(f"{text!r} is not a positive duration like 60s, 5m or 1h")
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]


def describe_settings_error(exc: ValidationError) -> str:
    """One sentence naming the ``VECTOROS_*`` variables at fault (never their values)."""
    parts = []
    for err in exc.errors(include_url=False):
        message = str(err["msg"]).removeprefix("Value error, ")
        loc = err["loc"]
        if not loc:  # a check across fields: its message names the variables
            parts.append(message)
            continue
        name = str(loc[0])
        variable = name if name.isupper() else f"VECTOROS_{name.upper()}"
        variable += "".join(f"[{part}]" for part in loc[1:])
        parts.append(f"{variable}: {message}")
    return "invalid settings: " + "; ".join(parts)


def load_settings(cls: type[S], **overrides: Any) -> S:
    """Settings from the environment plus CLI overrides; invalid ones raise ``ConfigError``."""
    try:
        return cls(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        raise ConfigError(describe_settings_error(exc)) from exc


T = TypeVar("T")


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine; errors reach ``VectorOSGroup``, which reports them in one line."""
    try:
        return asyncio.run(coro)
    except KeyboardInterrupt:  # pragma: no cover - signals are handled inside services
        sys.exit(130)


def one_line(text: str) -> str:
    return "; ".join(line.strip() for line in text.splitlines() if line.strip()) or "(no detail)"


def describe_error(exc: BaseException) -> str:
    """What the person at the terminal needs: what is wrong and where, in one line."""
    if isinstance(exc, VectorOSError):
        return one_line(str(exc))
    if isinstance(exc, ValidationError):
        return one_line(describe_settings_error(exc))
    if isinstance(exc, OSError) and exc.strerror:
        where = f": {exc.filename}" if exc.filename else ""
        return one_line(f"{exc.strerror}{where}")
    return one_line(f"{type(exc).__name__}: {exc} (unexpected; run with --debug for the traceback)")


async def with_pool(dsn: str, work: Any) -> Any:
    """Run ``work(pool)`` on a migrated pool of ``dsn``, closed after."""
    from vectoros.db import connect_pool, migrate

    pool = await connect_pool(dsn)
    try:
        await migrate(pool)
        return await work(pool)
    finally:
        await pool.close()
