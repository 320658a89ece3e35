"""`vectoros insights` (list, ack, snooze) and `vectoros report`."""

from __future__ import annotations

from typing import Any

import click

from app.commands.common import (
    load_settings,
    one_line,
    run_async,
)
from schemas.insights import RuleName


@click.group()
def insights() -> None:
    """Read insights from PostgreSQL."""


@insights.command("list")
@click.option("--workspace", default=None, help="Only this workspace id.")
@click.option(
    "--priority",
    type=click.Choice(["low", "medium", "high", "critical"]),
    default=None,
    help="This priority and above.",
)
@click.option("--rule", type=click.Choice([r.value for r in RuleName]), default=None)
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON array instead of a table.")
@click.option("--deal", default=None, help="Only this deal id.")
@click.option("--owner", default=None, help="Only deals of this owner (id, or name in any case).")
@click.option(
    "--status",
    type=click.Choice(["open", "resolved", "all"]),
    default="open",
    show_default=True,
)
@click.option(
    "--since",
    default=None,
    metavar="TIME",
    help="Raised, escalated or resolved at or after TIME: RFC 3339 or an age like 7d, 12h.",
)
def insights_list(
    workspace: str | None,
    priority: str | None,
    rule: str | None,
    deal: str | None,
    owner: str | None,
    status: str,
    since: str | None,
    limit: int,
    as_json: bool,
) -> None:
    """Insights (open by default), most urgent and most valuable first."""
    import datetime as dt

    import orjson
    from rich.console import Console

    from app.listing import insights_table, print_table
    from consumer.sink.queries import InsightPage, list_insights
    from vectoros.db import connect_pool
    from vectoros.settings import DatabaseSettings
    from vectoros.when import parse_when

    now = dt.datetime.now(dt.UTC)
    try:
        since_at = None if since is None else parse_when(since, now)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="'--since'") from None
    dsn = load_settings(DatabaseSettings).dsn()

    async def go() -> InsightPage:
        pool = await connect_pool(dsn)
        try:
            return await list_insights(
                pool,
                status=status,
                workspace=workspace,
                priority=priority,
                rule=rule,
                deal=deal,
                owner=owner,
                since=since_at,
                limit=limit,
            )
        finally:
            await pool.close()

    page = run_async(go())
    if as_json:
        click.echo(orjson.dumps(page.rows, option=orjson.OPT_INDENT_2).decode())
        return
    console = Console()
    print_table(console, insights_table(page.rows, page.total, status, now, console.width))


@insights.command("ack")
@click.argument("insight_id")
@click.option("--by", "actor", default=None, help="Who acknowledges (default: $USER).")
@click.option(
    "--not-useful", is_flag=True, help="Also say the insight was not useful (report usefulness)."
)
def insights_ack(insight_id: str, actor: str | None, not_useful: bool) -> None:
    """Acknowledge an insight: no more notifications about it except an escalation."""
    from schemas.acks import AckState

    state = AckState.NOT_USEFUL if not_useful else AckState.ACKNOWLEDGED
    _answer(insight_id, state, None, actor)
    click.echo(f"{'marked not useful' if not_useful else 'acknowledged'} {insight_id}")


@insights.command("snooze")
@click.argument("insight_id")
@click.option(
    "--until",
    "until_text",
    default="1d",
    show_default=True,
    metavar="TIME",
    help="An RFC 3339 time, or a duration from now like 12h, 1d, 1w.",
)
@click.option("--by", "actor", default=None, help="Who snoozes (default: $USER).")
def insights_snooze(insight_id: str, until_text: str, actor: str | None) -> None:
    """Snooze an insight: no notifications about it until then, except an escalation."""
    import datetime as dt

    from schemas.acks import AckState
    from vectoros.when import parse_when

    now = dt.datetime.now(dt.UTC)
    try:
        parsed = parse_when(until_text, now)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="'--until'") from None
    until = parsed if parsed >= now else now + (now - parsed)  # a duration counts forward
    if until <= now:
        raise click.BadParameter("must be in the future", param_hint="'--until'")
    _answer(insight_id, AckState.SNOOZED, until, actor)
    click.echo(f"snoozed {insight_id} until {until.isoformat(timespec='seconds')}")


def _answer(insight_id: str, state: Any, until: Any, actor: str | None) -> None:
    """Store the answer in ``insight_acks`` (on a migrated pool: the table may be new), then
    publish it on ``insight-acks`` when a broker is configured (for the read side; the table is
    what the notifiers read)."""
    import datetime as dt
    import getpass
    import uuid

    from consumer.notifier.acks import PgAcks
    from schemas.acks import AckSource, InsightAck
    from vectoros.db import connect_pool, migrate
    from vectoros.kafka import start_producer
    from vectoros.settings import DatabaseSettings, KafkaSettings

    try:
        ack = InsightAck(
            ack_id=f"cli-{uuid.uuid4()}",
            insight_id=insight_id,
            state=state,
            snoozed_until=until,
            actor=actor or getpass.getuser(),
            source=AckSource.CLI,
            at=dt.datetime.now(dt.UTC),
        )
    except ValueError as exc:
        raise click.BadParameter(one_line(str(exc)), param_hint="'INSIGHT_ID'") from None
    dsn = load_settings(DatabaseSettings).dsn()
    kafka = load_settings(KafkaSettings)

    async def go() -> None:
        pool = await connect_pool(dsn)
        try:
            await migrate(pool)
            await PgAcks(pool).record([ack])
        finally:
            await pool.close()
        if not kafka.kafka_bootstrap_servers:
            return
        producer = await start_producer(kafka)
        try:
            await producer.send_and_wait(
                kafka.topic_acks,
                value=ack.model_dump_json().encode(),
                key=ack.insight_id.encode(),
            )
        finally:
            await producer.stop()

    run_async(go())


@click.group()
def report() -> None:
    """Reports from PostgreSQL."""


@report.command("usefulness")
@click.option(
    "--since",
    default="30d",
    show_default=True,
    metavar="TIME",
    help="Notifications at or after TIME: RFC 3339 or an age like 7d, 12h.",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON array instead of a table.")
def report_usefulness(since: str, as_json: bool) -> None:
    """Per rule: insights notified, the share acknowledged, snoozed or marked not useful, and
    the share followed by activity on the deal within 72 hours."""
    import datetime as dt

    import orjson

    from consumer.notifier.usefulness import RuleUsefulness, usefulness
    from vectoros.db import connect_pool, migrate
    from vectoros.settings import DatabaseSettings
    from vectoros.when import parse_when

    try:
        since_at = parse_when(since, dt.datetime.now(dt.UTC))
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="'--since'") from None
    dsn = load_settings(DatabaseSettings).dsn()

    async def go() -> list[RuleUsefulness]:
        pool = await connect_pool(dsn)
        try:
            await migrate(pool)
            return await usefulness(pool, since_at)
        finally:
            await pool.close()

    rows = run_async(go())
    if as_json:
        click.echo(orjson.dumps([r.to_json() for r in rows], option=orjson.OPT_INDENT_2).decode())
        return
    click.echo(
        f"{'rule':<22} {'notified':>8} {'acknowledged':>14} {'snoozed':>11} {'not useful':>12}"
        f" {'activity 72h':>14}"
    )
    for r in rows:
        click.echo(
            f"{r.rule:<22} {r.notified:>8} {r.acknowledged:>7} ({r.acknowledged_share:>4.0%})"
            f" {r.snoozed:>4} ({r.snoozed_share:>4.0%})"
            f" {r.not_useful:>5} ({r.not_useful_share:>4.0%})"
            f" {r.followed:>7} ({r.followed_share:>4.0%})"
        )
    if not rows:
        click.echo(f"no notifications since {since_at.isoformat(timespec='seconds')}")


# --- revenue forecast (issue 15) ------------------------------------------------------------------
