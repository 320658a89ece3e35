"""Per-workspace API tokens (table ``api_tokens``, migration ``0011_api_tokens``).

A token is ``vos_<token_id>_<secret>``: ``token_id`` (8 hex digits) names it in ``vectoros tokens
list|revoke`` and in logs; the secret is 32 random bytes. Only the sha256 of the whole token is
stored, so the table never holds a usable token. A token reads one workspace, for ever, until
revoked.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import secrets
from dataclasses import dataclass
from typing import Protocol

from vectoros.db import PgPool

PREFIX = "vos_"
_TOKEN = re.compile(r"^vos_([0-9a-f]{8})_([A-Za-z0-9_-]{43})$")
WORKSPACE_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,199}$")


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> tuple[str, str]:
    """``(token_id, token)``: a fresh random token."""
    token_id = secrets.token_hex(4)
    return token_id, f"{PREFIX}{token_id}_{secrets.token_urlsafe(32)}"


def well_formed(token: str) -> bool:
    return _TOKEN.match(token) is not None


@dataclass(frozen=True, slots=True)
class TokenInfo:
    token_id: str
    workspace_id: str
    name: str
    created_at: dt.datetime
    revoked_at: dt.datetime | None


class TokenLookup(Protocol):
    async def authenticate(self, token: str) -> TokenInfo | None: ...


class PgTokens:
    def __init__(self, pool: PgPool) -> None:
        self._pool = pool

    async def create(self, workspace_id: str, name: str) -> tuple[TokenInfo, str]:
        """A new token of ``workspace_id``; the token itself is returned once, here."""
        if not WORKSPACE_PATTERN.match(workspace_id):
            raise ValueError(f"{workspace_id!r} is not a valid workspace id")
        token_id, token = new_token()
        row = await self._pool.fetchrow(
            "INSERT INTO api_tokens (token_id, workspace_id, name, token_sha256)"
            " VALUES ($1, $2, $3, $4) RETURNING created_at",
            token_id,
            workspace_id,
            name,
            token_hash(token),
        )
        assert row is not None
        return TokenInfo(token_id, workspace_id, name, row["created_at"], None), token

    async def list(self, workspace_id: str | None = None) -> list[TokenInfo]:
        rows = await self._pool.fetch(
            "SELECT token_id, workspace_id, name, created_at, revoked_at FROM api_tokens"
            " WHERE ($1::text IS NULL OR workspace_id = $1) ORDER BY created_at, token_id",
            workspace_id,
        )
        return [TokenInfo(**dict(r)) for r in rows]

    async def revoke(self, token_id: str, workspace_id: str) -> bool:
        """Revoke ``token_id`` of ``workspace_id``; False when there is no such live token."""
        status = await self._pool.execute(
            "UPDATE api_tokens SET revoked_at = now()"
            " WHERE token_id = $1 AND workspace_id = $2 AND revoked_at IS NULL",
            token_id,
            workspace_id,
        )
        return status.endswith(" 1")

    async def authenticate(self, token: str) -> TokenInfo | None:
        """The live token ``token`` is, or None (malformed, unknown or revoked)."""
        if not well_formed(token):
            return None
        row = await self._pool.fetchrow(
            "SELECT token_id, workspace_id, name, created_at, revoked_at FROM api_tokens"
            " WHERE token_sha256 = $1 AND revoked_at IS NULL",
            token_hash(token),
        )
        return None if row is None else TokenInfo(**dict(row))


class MemoryTokens:
    """The same in memory (unit tests)."""

    def __init__(self) -> None:
        self._by_hash: dict[str, TokenInfo] = {}

    def add(self, workspace_id: str, name: str = "test") -> str:
        token_id, token = new_token()
        self._by_hash[token_hash(token)] = TokenInfo(
            token_id, workspace_id, name, dt.datetime.now(dt.UTC), None
        )
        return token

    async def authenticate(self, token: str) -> TokenInfo | None:
        return self._by_hash.get(token_hash(token)) if well_formed(token) else None
