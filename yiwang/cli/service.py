"""CLI commands: `yiwang serve` (the HTTP API under uvicorn) and `yiwang keys` (API keys)."""

from __future__ import annotations

import json
from typing import Optional

import typer
from rich.table import Table

from yiwang.cli.context import app_context, console, err_console

keys_app = typer.Typer(help="API keys: create (shown once, stored hashed), list, revoke.", no_args_is_help=True)


def serve(
    ctx: typer.Context,
    host: Optional[str] = typer.Option(None, "--host", help="Bind address (default: settings api_host, 127.0.0.1)."),
    port: Optional[int] = typer.Option(
        None, "--port", min=1, max=65535, help="Port, 1-65535 (default: settings api_port, 8080)."
    ),
    log_level: str = typer.Option("info", "--log-level", help="uvicorn log level: debug, info, warning, error."),
) -> None:
    """Serve the HTTP API (OpenAPI at /openapi.json, docs at /docs) until interrupted.

    Exit 5 when the port is in use, 2 when the address cannot be listened on.
    """
    from yiwang.api.app import create_app
    from yiwang.api.server import serve_forever

    c = app_context(ctx)
    settings = c.settings
    c.db  # a bad --home is refused here, by name, rather than by the server's startup
    serve_forever(create_app(settings), host or settings.api_host, port or settings.api_port, log_level)


@keys_app.command("create")
def keys_create(
    ctx: typer.Context,
    name: str = typer.Option(..., "--name", help="Who holds the key: a system or team (e.g. portal-backend)."),
    scopes: list[str] = typer.Option(
        ..., "--scope", help="A scope to grant; repeat for several. One of: feed:read, events:write, "
        "profile:read, tags:write, rules:write, models:write, admin."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Create an API key. The key is printed once and only its hash is stored: keep it now."""
    from yiwang.api.keys import create_key

    record, full = create_key(app_context(ctx).db, name, scopes)
    if as_json:
        console.print_json(json.dumps({"key_id": record.key_id, "name": record.name, "scopes": sorted(record.scopes),
                                       "key": full}))
        return
    console.print(f"key id  {record.key_id}\nname    {record.name}\nscopes  {' '.join(sorted(record.scopes))}")
    console.print(f"key     {full}", highlight=False, soft_wrap=True)
    err_console.print("This key is shown once and stored only as a hash: keep it now.")


@keys_app.command("list")
def keys_list(
    ctx: typer.Context,
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """List API keys (ids, names, scopes, created and revoked times; never the keys)."""
    from yiwang.api.keys import list_keys

    keys = list_keys(app_context(ctx).db)
    rows = [
        {"key_id": k.key_id, "name": k.name, "scopes": sorted(k.scopes), "created_at": k.created_at,
         "revoked_at": k.revoked_at}
        for k in keys
    ]
    if as_json:
        console.print_json(json.dumps(rows))
        return
    table = Table("key id", "name", "scopes", "created", "revoked")
    for r in rows:
        table.add_row(r["key_id"], r["name"], " ".join(r["scopes"]), r["created_at"], r["revoked_at"] or "")
    console.print(table)


@keys_app.command("revoke")
def keys_revoke(
    ctx: typer.Context,
    key_id: str = typer.Argument(..., help="The key id shown by `yiwang keys list`."),
) -> None:
    """Revoke an API key; requests with it get 401 from then on."""
    from yiwang.api.keys import revoke_key

    record = revoke_key(app_context(ctx).db, key_id)
    console.print(f"revoked {record.key_id} ({record.name})")


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
    app.add_typer(keys_app, name="keys")
