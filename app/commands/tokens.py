"""`vectoros tokens`: API tokens of a workspace (create, list, revoke)."""

from __future__ import annotations

from typing import Any

import click

from app.commands.common import load_settings, run_async, with_pool


def _dsn() -> str:
    from vectoros.settings import DatabaseSettings

    return load_settings(DatabaseSettings).dsn()


@click.group()
def tokens() -> None:
    """API tokens: each reads one workspace (stored hashed; shown once, at creation)."""


@tokens.command("create")
@click.option("--workspace", required=True, help="The workspace the token reads.")
@click.option("--name", default="", help="What the token is for (shown by list).")
def tokens_create(workspace: str, name: str) -> None:
    """Create a token and print it (it cannot be shown again)."""
    from consumer.api.tokens import WORKSPACE_PATTERN, PgTokens

    if not WORKSPACE_PATTERN.match(workspace):
        raise click.BadParameter(
            f"{workspace!r} is not a valid workspace id", param_hint="--workspace"
        )

    async def go(pool: Any) -> tuple[Any, str]:
        return await PgTokens(pool).create(workspace, name)

    info, token = run_async(with_pool(_dsn(), go))
    click.echo(token)
    click.echo(
        f"token {info.token_id} for workspace {workspace} created; it is shown only now "
        "(send it as Authorization: Bearer <token>)",
        err=True,
    )


@tokens.command("list")
@click.option("--workspace", default=None, help="Only this workspace.")
def tokens_list(workspace: str | None) -> None:
    """Tokens (never their secret): id, workspace, name, created, revoked."""

    from consumer.api.tokens import PgTokens

    async def go(pool: Any) -> list[Any]:
        return await PgTokens(pool).list(workspace)

    rows = run_async(with_pool(_dsn(), go))
    if not rows:
        click.echo("no tokens")
        return
    for info in rows:
        revoked = f"revoked {info.revoked_at:%Y-%m-%d %H:%M}" if info.revoked_at else "active"
        click.echo(
            f"{info.token_id}  {info.workspace_id}  {info.name or '-'}  "
            f"created {info.created_at:%Y-%m-%d %H:%M}  {revoked}"
        )


@tokens.command("revoke")
@click.argument("token_id")
@click.option("--workspace", required=True, help="The token's workspace.")
def tokens_revoke(token_id: str, workspace: str) -> None:
    """Revoke a token at once (it stays listed)."""
    from consumer.api.tokens import PgTokens

    async def go(pool: Any) -> bool:
        return await PgTokens(pool).revoke(token_id, workspace)

    if not run_async(with_pool(_dsn(), go)):
        raise click.ClickException(f"no active token {token_id} in workspace {workspace}")
    click.echo(f"revoked {token_id}")
