"""`lmgate keys create|list|revoke|rotate`: managed API keys, straight in the data dir.

No gateway needs to be running; one that is picks the change up on its next request. A new
key is printed once, alone on stdout (so `KEY=$(lmgate keys create --name x)` works); every
other line goes to stderr.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import orjson
import typer
from rich.console import Console

from lmgate.cli.output import json_output, record
from lmgate.cli.serve import check_state, load_settings
from lmgate.cli.tables import print_table
from lmgate.store.db import Database
from lmgate.store.keys import KeyProblem, KeyRow, KeyStore, NewKey, load_secret, parse_expiry

keys_app = typer.Typer(help="Create, list, revoke and rotate API keys (works on the data dir).")
err = Console(stderr=True)

DataDir = Annotated[
    Path | None,
    typer.Option(help="State directory [LMGATE_DATA_DIR, config, or the per-user data dir]."),
]
Config = Annotated[Path | None, typer.Option(help="TOML config file (LMGATE_CONFIG).")]


def _store(data_dir: Path | None, config: Path | None) -> KeyStore:
    settings = load_settings(data_dir=data_dir, config=config)
    check_state(settings)  # never make keys in a fresh database over a lost one
    try:
        return KeyStore(Database(settings.data_dir), load_secret(settings.data_dir))
    except (OSError, KeyProblem) as exc:
        typer.echo(f"lmgate: cannot open the key store in {settings.data_dir}: {exc}", err=True)
        raise typer.Exit(1) from exc


def _fail(exc: KeyProblem) -> typer.Exit:
    record({"error": {"message": str(exc), "code": "key_problem"}})
    typer.echo(f"lmgate: {exc}", err=True)
    return typer.Exit(1)


def _when(stamp: float | None) -> str:
    if stamp is None:
        return "-"
    return datetime.fromtimestamp(stamp, UTC).strftime("%Y-%m-%d %H:%M UTC")


def _describe(row: KeyRow) -> str:
    limits = [
        f"{label} {value}"
        for label, value in (("rpm", row.rpm), ("tpm", row.tpm), ("concurrent", row.max_concurrent))
        if value is not None
    ]
    models = ",".join(row.models) if row.models else "any model"
    return (
        f"{row.name} ({row.id}), scope {row.scope}, {models}, "
        f"{', '.join(limits) or 'no limits'}, tools {_tools(row)}, "
        f"expires {_when(row.expires_at)}"
    )


def _tools(row: KeyRow) -> str:
    return "allow" if row.tools else "deny"


def _print_key(key: str, row: KeyRow, verb: str) -> None:
    record({"key": key, **row.as_json()})  # with --json: the key goes in the JSON, once
    typer.echo(f"{verb} key {_describe(row)}.", err=True)
    typer.echo("Store it now: it is shown only this once.", err=True)
    typer.echo(key)


@keys_app.command("create")
@json_output
def create(
    name: Annotated[str, typer.Option(help="A name to tell the key by (unique among active).")],
    scope: Annotated[
        str, typer.Option(help="inference, metrics (GET /metrics only) or admin.")
    ] = "inference",
    expires: Annotated[str | None, typer.Option(help="Lifetime: 30d, 12h, 90m, or a date.")] = None,
    models: Annotated[
        str | None, typer.Option(help="Comma-separated model patterns, e.g. 'qwen*,nomic*'.")
    ] = None,
    rpm: Annotated[int | None, typer.Option(help="Requests per minute.")] = None,
    tpm: Annotated[int | None, typer.Option(help="Tokens per minute.")] = None,
    max_concurrent: Annotated[
        int | None, typer.Option(help="Requests in progress at once.")
    ] = None,
    tools: Annotated[
        str | None,
        typer.Option(
            help="allow: requests may have LM Studio use tools (MCP servers from its mcp.json, "
            "plugins, remote MCP servers) [default: allow for admin keys, deny for others]."
        ),
    ] = None,
    data_dir: DataDir = None,
    config: Config = None,
) -> None:
    """Make a key; it is printed once, alone on its own line."""
    store = _store(data_dir, config)
    try:
        spec = NewKey(
            name=name,
            scope=scope,
            models=tuple(m.strip() for m in (models or "").split(",") if m.strip()),
            rpm=rpm,
            tpm=tpm,
            max_concurrent=max_concurrent,
            expires_at=parse_expiry(expires, time.time()) if expires else None,
            tools=tools.strip().lower() if tools is not None else None,
        )
        row, key = store.create(spec)
    except KeyProblem as exc:
        raise _fail(exc) from exc
    _print_key(key, row, "Created")


@keys_app.command("list")
def list_keys(
    all_: Annotated[bool, typer.Option("--all", help="Include revoked keys.")] = False,
    json: Annotated[bool, typer.Option("--json", help="JSON instead of a table.")] = False,
    data_dir: DataDir = None,
    config: Config = None,
) -> None:
    """Every key: name, id, scope, models, limits, tools, expiry, status (never the key)."""
    rows = _store(data_dir, config).list(include_revoked=all_)
    if json:
        typer.echo(orjson.dumps([r.as_json() for r in rows], option=orjson.OPT_INDENT_2))
        return
    columns = ("name", "id", "hint", "scope", "models", "rpm", "tpm", "conc.", "tools", "expires")
    now = time.time()
    cells = [
        [
            r.name, r.id, r.hint + "...", r.scope, ",".join(r.models) or "*",
            *(str(v) if v is not None else "-" for v in (r.rpm, r.tpm, r.max_concurrent)),
            _tools(r), _when(r.expires_at), r.status(now),
        ]
        for r in rows
    ]  # fmt: skip
    print_table(f"{len(rows)} key(s)", (*columns, "status"), cells, keep=("id", "hint"))


@keys_app.command("show")
@json_output
def show(
    key: Annotated[str, typer.Argument(help="The key's name or id.")],
    data_dir: DataDir = None,
    config: Config = None,
) -> None:
    """One key's record (never the key itself)."""
    row = _store(data_dir, config).find(key)
    if row is None:
        record({"error": {"message": f"no key named or with id '{key}'", "code": "not_found"}})
        typer.echo(f"lmgate: no key named or with id '{key}'", err=True)
        raise typer.Exit(1)
    record(row.as_json())
    typer.echo(f"{_describe(row)}, status {row.status(time.time())}")


@keys_app.command("revoke")
@json_output
def revoke(
    key: Annotated[str, typer.Argument(help="The key's name or id.")],
    data_dir: DataDir = None,
    config: Config = None,
) -> None:
    """Revoke a key; a running gateway refuses it from its next request on."""
    try:
        row = _store(data_dir, config).revoke(key)
    except KeyProblem as exc:
        raise _fail(exc) from exc
    record(row.as_json())
    typer.echo(f"Revoked key {row.name} ({row.id}).", err=True)


@keys_app.command("rotate")
@json_output
def rotate(
    key: Annotated[str, typer.Argument(help="The key's name or id.")],
    data_dir: DataDir = None,
    config: Config = None,
) -> None:
    """Replace a key's secret, keeping its name and limits; the old secret stops working."""
    try:
        row, secret = _store(data_dir, config).rotate(key)
    except KeyProblem as exc:
        raise _fail(exc) from exc
    _print_key(secret, row, "Rotated")
