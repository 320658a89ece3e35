"""Several notifiers with flood control on one consumer group (``consumer/notifier/lease.py``):
the one holding the group's PostgreSQL advisory lock runs, the others stand by *before* joining
the consumer group; SIGTERM stops a standby at once; after a SIGKILL of the holder (its
connection closes, the lock frees) a standby takes over, and no mail is sent twice.

Real processes (``python -m app notify``, tests/processes.py), the embedded broker and
PostgreSQL, and a real local SMTP server (aiosmtpd)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller

from schemas.insights import InsightEvent
from tests.databases import fresh_database, migrated_pool
from tests.integration.test_notifier import produce
from tests.integration.test_notifier_email import Inbox, free_port
from tests.integration.test_notifier_sigkill import eventually
from tests.processes import ServiceGroup, service_env
from tests.unit.test_notifier_service import insight
from vectoros.kafka import ensure_topics

pytestmark = pytest.mark.integration

STANDBY = "standing by before joining the consumer group"
JOINED = "notifier: connected"


def insights_of(owners: list[str], first: int) -> list[InsightEvent]:
    return [
        insight(
            first + n,
            data={
                "deal_id": f"deal-{first + n}",
                "deal_title": f"D{first + n}",
                "deal_value": 1000.0,
                "owner_id": owner,
            },
        )
        for n, owner in enumerate(owners)
    ]


async def test_one_notifier_runs_flood_control_the_other_stands_by_then_takes_over(
    kafka_bootstrap: str,
    database_url: str,
    unique_name: Callable[[str], str],
    tmp_path: Path,
) -> None:
    inbox = Inbox()
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    owners = [f"u-{n}" for n in range(1, 7)]
    directory = tmp_path / "owners.yaml"
    directory.write_text(
        "owners:\n" + "".join(f"  {o}: {{email: {o}@acme.test}}\n" for o in owners)
    )
    topic = unique_name("insights")
    await ensure_topics(kafka_bootstrap, {topic: 2})
    try:
        async with (
            fresh_database(database_url, "standby") as dsn,
            ServiceGroup(tmp_path) as group,
        ):
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
                notify_group_wait_seconds=0.2,
                notify_burst_threshold=0,
                notify_flush_tick_seconds=0.1,
                notify_db_retry_seconds=0.2,
                notify_db_retry_max_seconds=1,
            )
            first = await group.start("first", "notify", env)
            await first.wait_for_log(JOINED)
            second = await group.start("second", "notify", env)
            await second.wait_for_log(STANDBY)

            # a third standby stops at once on SIGTERM, without ever joining
            third = await group.start("third", "notify", env)
            await third.wait_for_log(STANDBY)
            code, _ = await third.stop()
            assert code == 0, third.tail()
            assert JOINED not in third.log()
            assert "stopped while waiting for its connections" in third.log()

            await produce(kafka_bootstrap, topic, insights_of(owners[:3], 1))
            await eventually(lambda: len(inbox.mails) >= 3, "the first three mails")
            assert JOINED not in second.log()  # it never joined the group meanwhile

            first.kill()
            await first.wait()
            await second.wait_for_log("standby over, joining the consumer group")
            await second.wait_for_log(JOINED)
            await produce(kafka_bootstrap, topic, insights_of(owners[3:], 4))

            async with migrated_pool(dsn) as pool:

                async def settled() -> bool:
                    left = await pool.fetchval("SELECT count(*) FROM notify_outbox")
                    sent = await pool.fetchval(
                        "SELECT count(*) FROM notifications WHERE status = 'sent'"
                    )
                    return bool(left == 0 and sent == len(owners))

                try:
                    await eventually(settled, "every mail to be sent")
                except AssertionError as exc:  # say where it stood: the rows and both logs
                    outbox = await pool.fetch("SELECT * FROM notify_outbox")
                    sent = await pool.fetch(
                        "SELECT deal_id, status, attempts, in_flight, owner, last_error"
                        " FROM notifications"
                    )
                    raise AssertionError(
                        f"{exc}; outbox {[dict(r) for r in outbox]}; notifications "
                        f"{[dict(r) for r in sent]}; {len(inbox.mails)} mails received\n"
                        f"second notifier:\n{second.tail()}\nfirst notifier:\n{first.tail()}"
                    ) from exc
                rows = await pool.fetch("SELECT status FROM notifications")
            assert second.running
            assert second.log().count(STANDBY) == 1  # one line, not one per attempt
            assert STANDBY not in first.log()
    finally:
        controller.stop()
    assert [r["status"] for r in rows] == ["sent"] * len(owners)
    ids = [mail["Message-ID"] for _, mail in inbox.mails]
    assert len(ids) == len(set(ids)) == len(owners)  # nothing sent twice
    assert sorted(r for rcpts, _ in inbox.mails for r in rcpts) == sorted(
        f"{o}@acme.test" for o in owners
    )
