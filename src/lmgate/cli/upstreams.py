"""`lmgate upstreams list|add|drain|resume|remove|wake`: the upstreams of a running gateway."""

from __future__ import annotations

from typing import Annotated, Any

import orjson
import typer
from rich.console import Console

from lmgate.cli.models import Key, Url, call_gateway
from lmgate.cli.tables import print_table, text

upstreams_app = typer.Typer(
    help="List, add, drain and remove the gateway's upstreams (admin key needed)."
)
console = Console()

Json = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
Name = Annotated[str, typer.Argument(help="The upstream's name.")]
DEFAULT_URL = "http://127.0.0.1:1235"


def _print(data: Any) -> None:
    typer.echo(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode())


def _act(url: str, key: str | None, method: str, path: str, as_json: bool) -> dict[str, Any]:
    """One admin call; with `--json` its answer is printed and {} returned (nothing to say)."""
    data: dict[str, Any] = call_gateway(url, key, method, path)
    if as_json:
        _print(data)
        return {}
    return data


@upstreams_app.command("list")
def list_upstreams(url: Url = DEFAULT_URL, admin_key: Key = None, as_json: Json = False) -> None:
    """Every upstream: kind, state, models offered and loaded."""
    data = call_gateway(url, admin_key, "GET", "/admin/upstreams")
    if as_json:
        _print(data)
        return
    rows = [
        [
            text(u["name"]) + (" *" if u.get("primary") else ""),
            text(u["url"]),
            text(u["kind"]),
            text(u["state"]),
            text(u.get("power") or "-"),
            text(len(u["models"])),
            text(", ".join(u["loaded"]) or "-"),
        ]
        for u in data.get("upstreams") or []
    ]
    columns = ("name", "url", "kind", "state", "power", "models", "loaded")
    print_table("upstreams (* primary)", columns, rows, keep=("name",))


@upstreams_app.command("add")
def add(
    name: Name,
    upstream_url: Annotated[str, typer.Argument(metavar="URL", help="Its base URL.")],
    token: Annotated[
        str | None,
        typer.Option(envvar="LMGATE_NEW_UPSTREAM_TOKEN", help="Bearer token sent to it alone."),
    ] = None,
    weight: Annotated[float | None, typer.Option(help="Preference among equals [1].")] = None,
    model: Annotated[
        list[str] | None, typer.Option(help="Model pattern it may serve (`!pattern` denies).")
    ] = None,
    wake: Annotated[
        str | None, typer.Option(help="Its machine's MAC address, to wake it (Wake-on-LAN).")
    ] = None,
    wake_broadcast: Annotated[
        str | None,
        typer.Option(help="Where its packet goes: address[:port] [LMGATE_WAKE_BROADCAST]."),
    ] = None,
    url: Url = DEFAULT_URL,
    admin_key: Key = None,
    as_json: Json = False,
) -> None:
    """Add an upstream; it is kept across restarts."""
    table: dict[str, Any] = {"name": name, "url": upstream_url}
    if token:
        table["token"] = token
    if weight is not None:
        table["weight"] = weight
    if model:
        table["models"] = model
    if wake:
        table["wake"] = wake
    if wake_broadcast:
        table["wake_broadcast"] = wake_broadcast
    data = call_gateway(url, admin_key, "POST", "/admin/upstreams", table)
    if as_json:
        _print(data)
        return
    console.print(f"added upstream {name}")


@upstreams_app.command("drain")
def drain(name: Name, url: Url = DEFAULT_URL, admin_key: Key = None, as_json: Json = False) -> None:
    """Send no new requests to NAME; what runs there ends normally."""
    if _act(url, admin_key, "POST", f"/admin/upstreams/{name}/drain", as_json):
        console.print(f"draining upstream {name}")


@upstreams_app.command("resume")
def resume(
    name: Name, url: Url = DEFAULT_URL, admin_key: Key = None, as_json: Json = False
) -> None:
    """Let a drained upstream take new requests again."""
    if _act(url, admin_key, "POST", f"/admin/upstreams/{name}/resume", as_json):
        console.print(f"upstream {name} takes requests again")


@upstreams_app.command("remove")
def remove(
    name: Name, url: Url = DEFAULT_URL, admin_key: Key = None, as_json: Json = False
) -> None:
    """Remove NAME (never the primary)."""
    if _act(url, admin_key, "DELETE", f"/admin/upstreams/{name}", as_json):
        console.print(f"removed upstream {name}")


@upstreams_app.command("wake")
def wake(name: Name, url: Url = DEFAULT_URL, admin_key: Key = None, as_json: Json = False) -> None:
    """Send NAME's Wake-on-LAN packet (its table's wake entry) and let the gateway watch it."""
    data = _act(url, admin_key, "POST", f"/admin/upstreams/{name}/wake", as_json)
    if not data:
        return
    wake = data.get("wakeStatus") or {}
    if data.get("started"):
        console.print(
            f"waking upstream {name}: packet for {wake.get('mac')} to {wake.get('target')}"
        )
    else:
        console.print(f"upstream {name} is already being woken ({data.get('power')})")
