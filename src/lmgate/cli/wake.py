"""`lmgate wake`: send one Wake-on-LAN magic packet to the upstream machine by hand.

The MAC address and where to send it come from the same settings `serve` uses (`[wake]` in the
config file, `LMGATE_WAKE_MAC`, `LMGATE_WAKE_BROADCAST`), or from `--mac` / `--broadcast`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from lmgate.cli.serve import resolve_settings
from lmgate.upstream.wake import (
    format_mac,
    format_target,
    parse_mac,
    parse_target,
    send_magic_packet,
)


def wake(
    mac: Annotated[
        str | None, typer.Option(help="MAC address of the machine to wake [LMGATE_WAKE_MAC].")
    ] = None,
    broadcast: Annotated[
        str | None,
        typer.Option(
            help="Where to send it: address[:port] [255.255.255.255:9].", show_default=False
        ),
    ] = None,
    config: Annotated[Path | None, typer.Option(help="TOML config file (LMGATE_CONFIG).")] = None,
) -> None:
    """Send one Wake-on-LAN magic packet (UDP) to the upstream machine."""
    settings, _ = resolve_settings(config=config, wake_mac=mac, wake_broadcast=broadcast)
    if settings.wake_mac is None:
        typer.echo(
            "lmgate: no MAC address to wake: give --mac or set LMGATE_WAKE_MAC "
            "(or mac in the [wake] table of the config file)",
            err=True,
        )
        raise typer.Exit(2)
    host, port = parse_target(settings.wake_broadcast)
    address = parse_mac(settings.wake_mac)
    try:
        sent = send_magic_packet(address, host, port)
    except OSError as exc:
        typer.echo(f"lmgate: cannot send to {format_target(host, port)}: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(
        f"sent a magic packet ({sent} bytes) for {format_mac(address)} to "
        f"{format_target(host, port)} over UDP"
    )
