"""`lmgate keys create|list|update|revoke|rotate`: managed API keys, straight in the data dir.

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
from lmgate.pairing.codes import PairingStore
from lmgate.settings import Settings
from lmgate.store.db import Database
from lmgate.store.keys import (
    KEEP,
    KeyProblem,
    KeyRow,
    KeyStore,
    KeyUpdate,
    NewKey,
    load_secret,
    parse_expiry,
)

keys_app = typer.Typer(
    help="Create, list, update, revoke and rotate API keys (works on the data dir)."
)
err = Console(stderr=True)

DataDir = Annotated[
    Path | None,
    typer.Option(help="State directory [LMGATE_DATA_DIR, config, or the per-user data dir]."),
]
Config = Annotated[Path | None, typer.Option(help="TOML config file (LMGATE_CONFIG).")]
HOURS_HELP = "Allowed hours, HH:MM-HH:MM, e.g. 07:00-21:00 (may cross midnight)."
DAYS_HELP = "Allowed days, e.g. mon-fri or sat,sun."
TZ_HELP = "IANA time zone of the hours, days and daily budget, e.g. Europe/Berlin."
DAILY_HELP = "Prompt + completion tokens a day; past it: 429 until local midnight."
WEIGHT_HELP = "Share among waiting requests of the same priority (above 0, at most 1000)."
PRIORITY_HELP = "Class: higher is served first (-100 to 100; above 0: admin keys only)."
LOADS_HELP = (
    "allow or deny: whether its requests may make lmgate load a model "
    "[default: allow for admin keys, LMGATE_KEY_LOADS_DEFAULT for others]."
)
MAX_LOADS_HELP = "Model loads its requests may cause per hour [default: no cap]."


def _store(data_dir: Path | None, config: Path | None) -> KeyStore:
    return _open(data_dir, config)[0]


def _open(data_dir: Path | None, config: Path | None) -> tuple[KeyStore, Settings]:
    settings = load_settings(data_dir=data_dir, config=config)
    check_state(settings)  # never make keys in a fresh database over a lost one
    try:
        store = KeyStore(Database(settings.data_dir), load_secret(settings.data_dir))
        return store, settings
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


def _describe(row: KeyRow, settings: Settings) -> str:
    limits = [
        f"{label} {value}"
        for label, value in (("rpm", row.rpm), ("tpm", row.tpm), ("concurrent", row.max_concurrent))
        if value is not None
    ]
    models = ",".join(row.models) if row.models else "any model"
    return (
        f"{row.name} ({row.id}), scope {row.scope}, {models}, "
        f"{', '.join(limits) or 'no limits'}, tools {_tools(row)}, "
        f"{_scheduling(row, settings)}, expires {_when(row.expires_at)}"
    )


def _loads(row: KeyRow, settings: Settings) -> str:
    """What applies now; `(default)` when the key follows the default for its scope."""
    shown = "allow" if row.may_load(settings.key_loads_default == "allow") else "deny"
    return f"{shown} (default)" if row.loads is None else shown


def _scheduling(row: KeyRow, settings: Settings) -> str:
    per_hour = row.max_loads_per_hour
    return f"weight {row.weight:g}, priority {row.priority}, loads {_loads(row, settings)}" + (
        f" (at most {per_hour}/h)" if per_hour is not None else ""
    )


def _tools(row: KeyRow) -> str:
    return "allow" if row.tools else "deny"


def _print_key(key: str, row: KeyRow, verb: str, settings: Settings) -> None:
    record({"key": key, **row.as_json()})  # with --json: the key goes in the JSON, once
    typer.echo(f"{verb} key {_describe(row, settings)}.", err=True)
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
    weight: Annotated[float, typer.Option(help=WEIGHT_HELP)] = 1.0,
    priority: Annotated[int, typer.Option(help=PRIORITY_HELP)] = 0,
    loads: Annotated[str | None, typer.Option(help=LOADS_HELP)] = None,
    max_loads_per_hour: Annotated[int | None, typer.Option(help=MAX_LOADS_HELP)] = None,
    hours: Annotated[str | None, typer.Option(help=HOURS_HELP)] = None,
    days: Annotated[str | None, typer.Option(help=DAYS_HELP)] = None,
    tz: Annotated[str | None, typer.Option(help=TZ_HELP)] = None,
    daily_tokens: Annotated[int | None, typer.Option(help=DAILY_HELP)] = None,
    data_dir: DataDir = None,
    config: Config = None,
) -> None:
    """Make a key; it is printed once, alone on its own line."""
    store, settings = _open(data_dir, config)
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
            weight=weight,
            priority=priority,
            loads=loads.strip().lower() if loads is not None else None,
            max_loads_per_hour=max_loads_per_hour,
            hours=hours,
            days=days,
            tz=tz,
            daily_tokens=daily_tokens,
        )
        row, key = store.create(spec)
    except KeyProblem as exc:
        raise _fail(exc) from exc
    _print_key(key, row, "Created", settings)


@keys_app.command("update")
@json_output
def update(
    key: Annotated[str, typer.Argument(help="The key's name or id.")],
    weight: Annotated[float | None, typer.Option(help=WEIGHT_HELP)] = None,
    priority: Annotated[int | None, typer.Option(help=PRIORITY_HELP)] = None,
    loads: Annotated[
        str | None, typer.Option(help="allow, deny, or default (back to the default).")
    ] = None,
    max_loads_per_hour: Annotated[
        str | None, typer.Option(help="Model loads it may cause per hour, or none (no cap).")
    ] = None,
    tools: Annotated[str | None, typer.Option(help="allow or deny.")] = None,
    hours: Annotated[str | None, typer.Option(help=HOURS_HELP + " none: any hour.")] = None,
    days: Annotated[str | None, typer.Option(help=DAYS_HELP + " none: every day.")] = None,
    tz: Annotated[str | None, typer.Option(help=TZ_HELP + " none: the gateway's.")] = None,
    daily_tokens: Annotated[str | None, typer.Option(help=DAILY_HELP + " none: no budget.")] = None,
    data_dir: DataDir = None,
    config: Config = None,
) -> None:
    """Change a key's weight, priority, loads, loads per hour, tools, hours, days, time zone
    or daily tokens in place; a running gateway applies them from its next request on."""
    store, settings = _open(data_dir, config)
    try:
        change = KeyUpdate(
            weight=KEEP if weight is None else weight,
            priority=KEEP if priority is None else priority,
            loads=KEEP if loads is None else _loads_choice(loads),
            max_loads_per_hour=KEEP if max_loads_per_hour is None else _cap(max_loads_per_hour),
            tools=KEEP if tools is None else tools.strip().lower(),
            hours=KEEP if hours is None else _none_or(hours),
            days=KEEP if days is None else _none_or(days),
            tz=KEEP if tz is None else _none_or(tz),
            daily_tokens=KEEP if daily_tokens is None else _cap(daily_tokens, "daily tokens"),
        )
        row = store.update(key, change)
    except KeyProblem as exc:
        raise _fail(exc) from exc
    record(row.as_json())
    typer.echo(f"Updated key {_describe(row, settings)}.", err=True)


def _loads_choice(text: str) -> str | None:
    value = text.strip().lower()
    return None if value == "default" else value


def _cap(text: str, what: str = "max loads per hour") -> int | None:
    value = text.strip().lower()
    if value in ("none", "off", "unlimited"):
        return None
    try:
        return int(value)
    except ValueError:
        raise KeyProblem(f"{what} must be a whole number, or none") from None


def _none_or(text: str) -> str | None:
    return None if text.strip().lower() in ("none", "off", "") else text


@keys_app.command("list")
def list_keys(
    all_: Annotated[bool, typer.Option("--all", help="Include revoked keys.")] = False,
    json: Annotated[bool, typer.Option("--json", help="JSON instead of a table.")] = False,
    data_dir: DataDir = None,
    config: Config = None,
) -> None:
    """Every key: name, the device it was paired to (if any), id, scope, models, limits, tools,
    scheduling (weight, priority, loads, loads per hour), allowed hours and daily tokens,
    expiry, status (never the key)."""
    store, settings = _open(data_dir, config)
    rows = store.list(include_revoked=all_)
    devices = PairingStore(store.db, store).devices()
    loads_default = settings.key_loads_default == "allow"
    if json:
        shown = [{**r.as_json(loads_default), "device": devices.get(r.id)} for r in rows]
        typer.echo(orjson.dumps(shown, option=orjson.OPT_INDENT_2))
        return
    columns = (
        *("name", "device", "id", "hint", "scope", "models", "rpm", "tpm", "conc.", "tools"),
        *("weight", "prio.", "loads", "loads/h", "schedule", "expires"),
    )
    now = time.time()
    cells = [
        [
            r.name, devices.get(r.id) or "-", r.id, r.hint + "...", r.scope,
            ",".join(r.models) or "*",
            *(str(v) if v is not None else "-" for v in (r.rpm, r.tpm, r.max_concurrent)),
            _tools(r), f"{r.weight:g}", str(r.priority), _loads(r, settings),
            str(r.max_loads_per_hour) if r.max_loads_per_hour is not None else "-",
            r.as_json()["schedule"] or "-", _when(r.expires_at), r.status(now),
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
    store, settings = _open(data_dir, config)
    row = store.find(key)
    if row is None:
        record({"error": {"message": f"no key named or with id '{key}'", "code": "not_found"}})
        typer.echo(f"lmgate: no key named or with id '{key}'", err=True)
        raise typer.Exit(1)
    record(row.as_json())
    typer.echo(f"{_describe(row, settings)}, status {row.status(time.time())}")


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
    store, settings = _open(data_dir, config)
    try:
        row, secret = store.rotate(key)
    except KeyProblem as exc:
        raise _fail(exc) from exc
    _print_key(secret, row, "Rotated", settings)
