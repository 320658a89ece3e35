"""The notifier as a child process (``python -m app notify``, tests/processes.py) killed with
SIGKILL in the middle of sending flood control's digests to a real local SMTP server
(aiosmtpd), then restarted: no mail arrives twice, and every digest arrives.

Ten owners each get one digest of their three insights. The server holds the fourth mail's
DATA (received, not yet answered) until the notifier is dead: that mail was on the wire at the
crash. Email is at most once by default, so the restarted notifier records it as
``unknown_outcome`` (after the dead owner's claim goes stale) instead of sending it again, and
delivers the six digests still in the outbox."""

from __future__ import annotations

import asyncio
import email
import threading
from collections.abc import Awaitable, Callable, Iterator
from email.message import Message as Mail
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from tests.databases import fresh_database, migrated_pool
from tests.integration.test_notifier import produce
from tests.integration.test_notifier_email import free_port
from tests.processes import ServiceGroup, service_env
from tests.unit.test_notifier_service import insight
from vectoros.kafka import ensure_topics

pytestmark = pytest.mark.integration

WAIT_LIMIT = 120.0  # a bound for "never happens" (includes the 21 s stale-claim grace)
OWNERS = [f"u-{n}" for n in range(1, 11)]
HELD = 4  # the mail on the wire at the kill


class SlowInbox:
    """Keeps every mail it receives; holds the ``HELD``-th one's answer until released."""

    def __init__(self) -> None:
        self.mails: list[tuple[list[str], Mail]] = []
        self.release = threading.Event()
        self.lock = threading.Lock()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self.lock:
            self.mails.append((list(envelope.rcpt_tos), email.message_from_bytes(envelope.content)))
            count = len(self.mails)
        if count == HELD:
            await asyncio.to_thread(self.release.wait, WAIT_LIMIT)
        return "250 Message accepted for delivery"

    def snapshot(self) -> list[tuple[list[str], Mail]]:
        with self.lock:
            return list(self.mails)


@pytest.fixture
def slow_inbox() -> Iterator[tuple[SlowInbox, int]]:
    handler = SlowInbox()
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield handler, port
    finally:
        handler.release.set()
        controller.stop()


async def eventually(check: Callable[[], Awaitable[bool] | bool], what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT_LIMIT
    while True:
        result = check()
        if result if isinstance(result, bool) else await result:
            return
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


async def test_sigkill_mid_digest_sends_no_duplicate_mail(
    kafka_bootstrap: str,
    database_url: str,
    unique_name: Callable[[str], str],
    slow_inbox: tuple[SlowInbox, int],
    tmp_path: Path,
) -> None:
    inbox, port = slow_inbox
    topic = unique_name("insights")
    await ensure_topics(kafka_bootstrap, {topic: 1})
    directory = tmp_path / "owners.yaml"
    directory.write_text(
        "owners:\n" + "".join(f"  {o}: {{email: {o}@acme.test}}\n" for o in OWNERS)
    )
    events = [
        insight(
            10 * i + k,
            deal_id=f"deal-{i}-{k}",
            data={
                "deal_id": f"deal-{i}-{k}",
                "deal_title": f"D{i}-{k}",
                "deal_value": 1000.0,
                "owner_id": owner,
            },
        )
        for i, owner in enumerate(OWNERS, start=1)
        for k in (1, 2, 3)
    ]
    await produce(kafka_bootstrap, topic, events)
    async with fresh_database(database_url, "sigkill") as dsn, ServiceGroup(tmp_path) as group:
        env = service_env(
            kafka_bootstrap_servers=kafka_bootstrap,
            kafka_idempotence="off",
            database_url=dsn,
            topic_insights=topic,
            topic_acks=unique_name("acks"),
            notifier_group_id=unique_name("notifier"),
            metrics_enabled="false",
            smtp_host="127.0.0.1",
            smtp_port=port,
            smtp_security="none",
            email_from="alerts@vectoros.test",
            notify_directory_file=directory,
            notify_flood_control="true",
            notify_group_wait_seconds=0.5,
            notify_burst_threshold=0,
            notify_flush_tick_seconds=0.1,
            notify_http_timeout_seconds=1,
        )
        first = await group.start("notifier", "notify", env)
        await eventually(lambda: len(inbox.snapshot()) >= HELD, "the mail held on the wire")
        first.kill()
        await first.wait()
        inbox.release.set()
        second = await group.start("notifier", "notify", env)

        async with migrated_pool(dsn) as pool:

            async def settled() -> bool:
                left = await pool.fetchval("SELECT count(*) FROM notify_outbox")
                final = await pool.fetchval(
                    "SELECT count(*) FROM notifications WHERE status <> 'pending'"
                )
                return bool(left == 0 and final == len(OWNERS))

            await eventually(settled, "every digest to be sent or recorded")
            rows = await pool.fetch(
                "SELECT status, failure_kind FROM notifications ORDER BY created_at"
            )
        assert second.running
    mails = inbox.snapshot()
    ids = [mail["Message-ID"] for _, mail in mails]
    assert len(ids) == len(set(ids)) == len(OWNERS)  # each digest once, none twice
    assert sorted(r for rcpts, _ in mails for r in rcpts) == sorted(
        f"{o}@acme.test" for o in OWNERS
    )
    for rcpts, mail in mails:  # one digest of the owner's three deals
        text = next(p for p in mail.walk() if p.get_content_type() == "text/plain")
        body = text.get_payload(decode=True).decode()
        n = OWNERS.index(rcpts[0].split("@")[0]) + 1
        assert all(f"D{n}-{k}" in body for k in (1, 2, 3)), body
    statuses = [(r["status"], r["failure_kind"]) for r in rows]
    assert statuses.count(("failed", "unknown_outcome")) == 1  # the one on the wire
    assert statuses.count(("sent", None)) == len(OWNERS) - 1
