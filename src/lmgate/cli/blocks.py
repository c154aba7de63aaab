"""`lmgate blocks list|clear [ADDRESS]`: addresses shut out for bad keys, on a running gateway."""

from __future__ import annotations

from typing import Annotated, Any

import orjson
import typer
from rich.console import Console

from lmgate.cli.models import Key, Url, call_gateway
from lmgate.cli.tables import print_table, text

blocks_app = typer.Typer(
    help="List and lift blocks of addresses that sent too many bad keys (admin key needed)."
)
console = Console()

Json = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def _show(data: dict[str, Any], as_json: bool) -> None:
    if as_json:
        typer.echo(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode())
        return
    blocks = data.get("blocks") or []
    if not blocks:
        console.print("no address is blocked")
        return
    rows = [[text(b["address"]), text(b["retryAfter"]), text(b["offences"])] for b in blocks]
    columns = ("address", "retry after (s)", "offences")
    print_table("blocked addresses", columns, rows, keep=("address",))


@blocks_app.command("list")
def list_blocks(
    url: Url = "http://127.0.0.1:1235", admin_key: Key = None, as_json: Json = False
) -> None:
    """Every address refused now for too many bad keys."""
    _show(call_gateway(url, admin_key, "GET", "/admin/blocks"), as_json)


@blocks_app.command("clear")
def clear(
    address: Annotated[str | None, typer.Argument(help="One address; default: all.")] = None,
    url: Url = "http://127.0.0.1:1235",
    admin_key: Key = None,
    as_json: Json = False,
) -> None:
    """Lift the block on ADDRESS, or on every address."""
    path = "/admin/blocks" + (f"/{address}" if address else "")
    data = call_gateway(url, admin_key, "DELETE", path)
    if as_json:
        _show(data, True)
        return
    lifted = data.get("lifted") or []
    console.print(f"lifted: {', '.join(lifted)}" if lifted else "no address was blocked")
