"""What ``vectoros capture`` keeps per connected mailbox (SQLite): the connection with its OAuth
tokens encrypted at rest (Fernet, key from ``VECTOROS_CAPTURE_TOKEN_KEY``), its sync cursor
(Gmail history id, Calendar sync token, Graph delta link, ...), and a log of the provider message
ids it captured (so a resync does not publish twice) with their time, pruned after the
workspace's retention. ``disconnect`` deletes all of a user's rows. No message content is ever
stored: ids and times only.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken
from pydantic import SecretStr

_SCHEMA = """
CREATE TABLE IF NOT EXISTS connection (
    user_id TEXT NOT NULL, provider TEXT NOT NULL, workspace_id TEXT NOT NULL,
    tokens BLOB NOT NULL, cursor TEXT, PRIMARY KEY (user_id, provider));
CREATE TABLE IF NOT EXISTS captured (
    user_id TEXT NOT NULL, provider TEXT NOT NULL, item_id TEXT NOT NULL,
    captured_ms INTEGER NOT NULL, PRIMARY KEY (user_id, provider, item_id));
CREATE TABLE IF NOT EXISTS channel (
    channel_id TEXT PRIMARY KEY, user_id TEXT NOT NULL, provider TEXT NOT NULL,
    resource_id TEXT, expires_ms INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS revoked (
    user_id TEXT NOT NULL, provider TEXT NOT NULL, revoked_ms INTEGER NOT NULL,
    PRIMARY KEY (user_id, provider));
CREATE TABLE IF NOT EXISTS oauth_state (
    state TEXT PRIMARY KEY, provider TEXT NOT NULL, workspace_id TEXT NOT NULL,
    verifier BLOB NOT NULL, created_ms INTEGER NOT NULL);
"""


class TokenCipher:
    """Encrypts OAuth tokens at rest (Fernet: AES-128-CBC with HMAC-SHA256, from the
    ``cryptography`` package). The key is never logged; a wrong key is a one-line error."""

    def __init__(self, key: SecretStr) -> None:
        try:
            self._fernet = Fernet(key.get_secret_value().encode())
        except ValueError:
            raise ValueError(
                "VECTOROS_CAPTURE_TOKEN_KEY is not a Fernet key (32 url-safe base64 bytes); "
                "make one with `python -c 'from cryptography.fernet import Fernet; "
                "print(Fernet.generate_key().decode())'`"
            ) from None

    def seal(self, tokens: str) -> bytes:
        return self._fernet.encrypt(tokens.encode())

    def open(self, sealed: bytes) -> str:
        try:
            return self._fernet.decrypt(sealed).decode()
        except InvalidToken:
            raise ValueError("stored tokens do not decrypt with this key") from None


@dataclass(frozen=True, slots=True)
class Channel:
    """A push channel a provider notifies us on (a Calendar ``events.watch`` channel, a Graph
    subscription): which user it is for and when it expires (to renew before)."""

    channel_id: str
    user_id: str
    provider: str
    resource_id: str | None
    expires_ms: int


@dataclass(frozen=True, slots=True)
class Connection:
    user_id: str
    provider: str
    workspace_id: str
    tokens: str
    """The provider's token response as JSON (decrypted)."""
    cursor: str | None


class CaptureStore:
    """Connections, cursors and the captured-id log of every connected mailbox."""

    def __init__(self, path: Path | str, cipher: TokenCipher) -> None:
        self._db = sqlite3.connect(str(path))
        self._db.executescript(_SCHEMA)
        self._cipher = cipher

    def close(self) -> None:
        self._db.close()

    def connect(self, user_id: str, provider: str, workspace_id: str, tokens: str) -> None:
        """A user connected a mailbox (the OAuth code exchange's token response); a connection
        marked revoked is live again."""
        with self._db:
            self._db.execute(
                "DELETE FROM revoked WHERE user_id = ? AND provider = ?", (user_id, provider)
            )
            self._db.execute(
                "INSERT INTO connection VALUES (?, ?, ?, ?, NULL) ON CONFLICT (user_id, provider)"
                " DO UPDATE SET workspace_id = excluded.workspace_id, tokens = excluded.tokens",
                (user_id, provider, workspace_id, self._cipher.seal(tokens)),
            )

    def connection(self, user_id: str, provider: str) -> Connection | None:
        row = self._db.execute(
            "SELECT workspace_id, tokens, cursor FROM connection c"
            " WHERE user_id = ? AND provider = ? AND NOT EXISTS (SELECT 1 FROM revoked r"
            " WHERE r.user_id = c.user_id AND r.provider = c.provider)",
            (user_id, provider),
        ).fetchone()
        if row is None:
            return None
        return Connection(user_id, provider, row[0], self._cipher.open(row[1]), row[2])

    def users(self, provider: str) -> list[str]:
        """The users with a live (not revoked) connection to ``provider``."""
        rows = self._db.execute(
            "SELECT user_id FROM connection c WHERE provider = ? AND NOT EXISTS (SELECT 1 FROM"
            " revoked r WHERE r.user_id = c.user_id AND r.provider = c.provider) ORDER BY user_id",
            (provider,),
        ).fetchall()
        return [str(r[0]) for r in rows]

    def mark_revoked(self, user_id: str, provider: str, now_ms: int) -> None:
        """The user revoked our access (``invalid_grant``): the connection is kept (cursor,
        captured ids) but not used until the user connects again; its channels are dropped."""
        with self._db:
            self._db.execute(
                "INSERT OR REPLACE INTO revoked VALUES (?, ?, ?)", (user_id, provider, now_ms)
            )
            self._db.execute(
                "DELETE FROM channel WHERE user_id = ? AND provider = ?", (user_id, provider)
            )

    def revoked(self, user_id: str, provider: str) -> bool:
        row = self._db.execute(
            "SELECT 1 FROM revoked WHERE user_id = ? AND provider = ?", (user_id, provider)
        ).fetchone()
        return row is not None

    def save_oauth_state(
        self, state: str, provider: str, workspace_id: str, verifier: str, now_ms: int
    ) -> None:
        """A started authorization (its PKCE verifier encrypted like the tokens)."""
        with self._db:
            self._db.execute(
                "INSERT INTO oauth_state VALUES (?, ?, ?, ?, ?)",
                (state, provider, workspace_id, self._cipher.seal(verifier), now_ms),
            )

    def take_oauth_state(
        self, state: str, provider: str, not_before_ms: int
    ) -> tuple[str, str] | None:
        """``(workspace_id, verifier)`` of a started authorization, once (deleted as read);
        ``None`` when unknown, of another provider, or started before ``not_before_ms``."""
        with self._db:
            row = self._db.execute(
                "DELETE FROM oauth_state WHERE state = ? RETURNING provider, workspace_id,"
                " verifier, created_ms",
                (state,),
            ).fetchone()
            self._db.execute("DELETE FROM oauth_state WHERE created_ms < ?", (not_before_ms,))
        if row is None or row[0] != provider or row[3] < not_before_ms:
            return None
        return str(row[1]), self._cipher.open(row[2])

    def save_tokens(self, user_id: str, provider: str, tokens: str) -> None:
        """After a refresh."""
        with self._db:
            self._db.execute(
                "UPDATE connection SET tokens = ? WHERE user_id = ? AND provider = ?",
                (self._cipher.seal(tokens), user_id, provider),
            )

    def save_cursor(self, user_id: str, provider: str, cursor: str | None) -> None:
        with self._db:
            self._db.execute(
                "UPDATE connection SET cursor = ? WHERE user_id = ? AND provider = ?",
                (cursor, user_id, provider),
            )

    def first_seen(
        self, user_id: str, provider: str, item_ids: Iterable[str], now_ms: int
    ) -> set[str]:
        """Log ``item_ids`` as captured; those not logged before (the ones to publish)."""
        new: set[str] = set()
        with self._db:
            for item_id in item_ids:
                cur = self._db.execute(
                    "INSERT OR IGNORE INTO captured VALUES (?, ?, ?, ?)",
                    (user_id, provider, item_id, now_ms),
                )
                if cur.rowcount:
                    new.add(item_id)
        return new

    def known(self, user_id: str, provider: str, item_ids: Iterable[str]) -> set[str]:
        """Those of ``item_ids`` already logged as captured (read only)."""
        return {
            item_id
            for item_id in item_ids
            if self._db.execute(
                "SELECT 1 FROM captured WHERE user_id = ? AND provider = ? AND item_id = ?",
                (user_id, provider, item_id),
            ).fetchone()
        }

    def forget(self, user_id: str, provider: str, item_ids: Iterable[str]) -> None:
        """Un-log ``item_ids`` (their events could not be published: a retry must)."""
        with self._db:
            self._db.executemany(
                "DELETE FROM captured WHERE user_id = ? AND provider = ? AND item_id = ?",
                [(user_id, provider, item_id) for item_id in item_ids],
            )

    def prune(self, before_ms: int) -> int:
        """Forget captured ids logged before ``before_ms`` (retention); how many."""
        with self._db:
            return self._db.execute(
                "DELETE FROM captured WHERE captured_ms < ?", (before_ms,)
            ).rowcount

    def save_channel(self, channel: Channel) -> None:
        with self._db:
            self._db.execute(
                "INSERT OR REPLACE INTO channel VALUES (?, ?, ?, ?, ?)",
                (
                    channel.channel_id,
                    channel.user_id,
                    channel.provider,
                    channel.resource_id,
                    channel.expires_ms,
                ),
            )

    def channel(self, channel_id: str) -> Channel | None:
        row = self._db.execute(
            "SELECT channel_id, user_id, provider, resource_id, expires_ms FROM channel"
            " WHERE channel_id = ?",
            (channel_id,),
        ).fetchone()
        return None if row is None else Channel(*row)

    def channels(self, provider: str, user_id: str | None = None) -> list[Channel]:
        """The provider's channels (of one user), soonest expiry first."""
        rows = self._db.execute(
            "SELECT channel_id, user_id, provider, resource_id, expires_ms FROM channel"
            " WHERE provider = ? AND (? IS NULL OR user_id = ?) ORDER BY expires_ms",
            (provider, user_id, user_id),
        ).fetchall()
        return [Channel(*row) for row in rows]

    def drop_channel(self, channel_id: str) -> None:
        with self._db:
            self._db.execute("DELETE FROM channel WHERE channel_id = ?", (channel_id,))

    def prune_workspace(self, workspace_id: str, before_ms: int) -> int:
        """Forget the captured ids logged before ``before_ms`` by the connections of one
        workspace (its retention); how many."""
        with self._db:
            return self._db.execute(
                "DELETE FROM captured WHERE captured_ms < ? AND EXISTS (SELECT 1 FROM connection c"
                " WHERE c.user_id = captured.user_id AND c.provider = captured.provider"
                " AND c.workspace_id = ?)",
                (before_ms, workspace_id),
            ).rowcount

    def prune_unconnected(self, before_ms: int) -> int:
        """Forget the captured ids logged before ``before_ms`` for users with no connection
        (the JSON webhook's users, disconnected ones); how many."""
        with self._db:
            return self._db.execute(
                "DELETE FROM captured WHERE captured_ms < ? AND NOT EXISTS (SELECT 1 FROM"
                " connection c WHERE c.user_id = captured.user_id"
                " AND c.provider = captured.provider)",
                (before_ms,),
            ).rowcount

    def disconnect(self, user_id: str) -> int:
        """Delete everything kept for ``user_id``: tokens, cursors, captured ids, push
        channels; rows deleted."""
        with self._db:
            a = self._db.execute("DELETE FROM connection WHERE user_id = ?", (user_id,)).rowcount
            b = self._db.execute("DELETE FROM captured WHERE user_id = ?", (user_id,)).rowcount
            c = self._db.execute("DELETE FROM channel WHERE user_id = ?", (user_id,)).rowcount
            d = self._db.execute("DELETE FROM revoked WHERE user_id = ?", (user_id,)).rowcount
        return a + b + c + d

    def rows_of(self, user_id: str) -> int:
        """Rows kept for ``user_id`` (connections, captured ids, push channels)."""
        total = 0
        for table in ("connection", "captured", "channel", "revoked"):  # fixed names, not input
            (n,) = self._db.execute(
                f"SELECT count(*) FROM {table} WHERE user_id = ?",  # noqa: S608
                (user_id,),
            ).fetchone()
            total += int(n)
        return total
