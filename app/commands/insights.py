"""`vectoros insights` (list, ack, snooze) and `vectoros report`."""

from __future__ import annotations

from typing import Any

import click

from app.commands.common import (
    load_settings,
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
def insights_ack(insight_id: str, actor: str | None) -> None:
    """Acknowledge an insight: no more notifications about it except an escalation."""
    from consumer.notifier.acks import PgAcks

    async def go(acks: PgAcks, who: str) -> None:
        await acks.acknowledge(insight_id, who)

    _with_acks(go, actor)
    click.echo(f"acknowledged {insight_id}")


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

    from consumer.notifier.acks import PgAcks
    from vectoros.when import parse_when

    now = dt.datetime.now(dt.UTC)
    try:
        parsed = parse_when(until_text, now)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="'--until'") from None
    until = parsed if parsed >= now else now + (now - parsed)  # a duration counts forward
    if until <= now:
        raise click.BadParameter("must be in the future", param_hint="'--until'")

    async def go(acks: PgAcks, who: str) -> None:
        await acks.snooze(insight_id, until, who)

    _with_acks(go, actor)
    click.echo(f"snoozed {insight_id} until {until.isoformat(timespec='seconds')}")


def _with_acks(action: Any, actor: str | None) -> None:
    """Run ``action(PgAcks, actor)`` on a migrated pool (``insight_acks`` may be new)."""
    import getpass

    from consumer.notifier.acks import PgAcks
    from vectoros.db import connect_pool, migrate
    from vectoros.settings import DatabaseSettings

    dsn = load_settings(DatabaseSettings).dsn()
    who = actor or getpass.getuser()

    async def go() -> None:
        pool = await connect_pool(dsn)
        try:
            await migrate(pool)
            await action(PgAcks(pool), who)
        finally:
            await pool.close()

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
    """Per rule: insights notified, and the share acknowledged or snoozed."""
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
    click.echo(f"{'rule':<22} {'notified':>8} {'acknowledged':>14} {'snoozed':>9}")
    for r in rows:
        click.echo(
            f"{r.rule:<22} {r.notified:>8} {r.acknowledged:>6} ({r.acknowledged_share:>4.0%})"
            f" {r.snoozed:>3} ({r.snoozed_share:>3.0%})"
        )
    if not rows:
        click.echo(f"no notifications since {since_at.isoformat(timespec='seconds')}")


# --- revenue forecast (issue 15) ------------------------------------------------------------------
