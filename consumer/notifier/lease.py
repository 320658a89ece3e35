"""Who runs flood control for a consumer group: the one notifier instance that holds a
PostgreSQL session-level advisory lock for the group (``FloodLease``).

Flood control's state is one row per consumer group (``notify_flood_state``); two instances
running it would each keep their own groups and overwrite each other's row. So an instance
takes the lock on a connection it keeps for the life of the process *before* its consumer joins
the group (``NotifierHandler.may_join``, a ``vectoros.consume_loop.JoinGate``); one that cannot
stands by, not ready, and tries again with the loop's back-off. When the holder dies its
connection closes, PostgreSQL frees the lock, and a standby takes over: it loads the saved state
and outbox, joins the group and reads on from the committed offsets.

If the holder's own connection is lost while it runs (PostgreSQL restarted), the lock is gone
with it: before saving, flood control takes it again and reloads the saved state (another
instance may have run meanwhile), or fails the batch as an outage until it can.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from vectoros.db import PgPool

if TYPE_CHECKING:
    import asyncpg
    from asyncpg.pool import PoolConnectionProxy

logger = logging.getLogger(__name__)

LOCK_CLASS = 0x5EC7_0517
"""The first key of the two-key advisory lock (the second: ``hashtext(consumer group)``)."""

_TRY = "SELECT pg_try_advisory_lock($1::int4, hashtext($2))"
_UNLOCK = "SELECT pg_advisory_unlock($1::int4, hashtext($2))"


class FloodLease:
    """The advisory lock of one consumer group's flood control, on a pool connection kept (not
    returned to the pool) while it is held."""

    def __init__(self, pool: PgPool, consumer_group: str) -> None:
        self._pool = pool
        self.consumer_group = consumer_group
        self._conn: PoolConnectionProxy[asyncpg.Record] | None = None

    @property
    def held(self) -> bool:
        """Taken, and its connection still open (a closed one took the lock with it)."""
        return self._conn is not None and not self._conn.is_closed()

    async def take(self) -> bool:
        """Try once, without waiting: True when this instance holds the lock."""
        if self.held:
            return True
        await self._drop()
        conn = await self._pool.acquire()
        try:
            got = bool(await conn.fetchval(_TRY, LOCK_CLASS, self.consumer_group))
        except BaseException:
            await self._pool.release(conn)
            raise
        if not got:
            await self._pool.release(conn)
            return False
        self._conn = conn
        logger.info("flood control of consumer group %s: lock taken", self.consumer_group)
        return True

    async def _drop(self) -> None:
        """Forget a lost connection (its lock went with it)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                await self._pool.release(conn)
            except Exception as exc:  # already broken: nothing to give back
                logger.debug("lost lock connection not released: %s", exc)

    async def release(self) -> None:
        """Unlock and give the connection back (the pool's reset would unlock it too)."""
        conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            if not conn.is_closed():
                await conn.fetchval(_UNLOCK, LOCK_CLASS, self.consumer_group)
        finally:
            await self._pool.release(conn)
