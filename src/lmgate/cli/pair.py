"""`lmgate pair`: a one-time code for a new device, shown as a QR code in the terminal.

Works on the data dir like `lmgate keys`: a running gateway (any worker) redeems the code when
the phone opens the link. The link names this machine's LAN address unless `--url` says
otherwise; with the gateway's own LAN certificate it carries the CA fingerprint.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import orjson
import typer

from lmgate.cli.keys import Config, DataDir
from lmgate.cli.serve import check_state, load_settings
from lmgate.pairing.codes import PairingStore
from lmgate.pairing.links import base_url, lan_ca, pairing_link, qr_png, qr_terminal
from lmgate.pairing.routes import new_pairing
from lmgate.store.db import Database
from lmgate.store.keys import KeyProblem, KeyStore, load_secret


def pair(
    name: Annotated[str, typer.Option(help='The device, e.g. "Anna\'s phone".')],
    scope: Annotated[str, typer.Option(help="inference or metrics.")] = "inference",
    models: Annotated[
        str | None, typer.Option(help="Globs of the models the key may use, comma-separated.")
    ] = None,
    rpm: Annotated[int | None, typer.Option(help="Requests per minute.")] = None,
    tpm: Annotated[int | None, typer.Option(help="Tokens per minute.")] = None,
    expires: Annotated[str | None, typer.Option(help="The key's lifetime: 30d, 12h...")] = None,
    valid_for: Annotated[str, typer.Option(help="How long the code works.")] = "10m",
    url: Annotated[
        str | None, typer.Option(help="Base URL devices reach the gateway at [LAN address].")
    ] = None,
    png: Annotated[Path | None, typer.Option(help="Also write the QR code to this PNG.")] = None,
    json: Annotated[bool, typer.Option("--json", help="Print JSON instead.")] = False,
    data_dir: DataDir = None,
    config: Config = None,
) -> None:
    """Make a one-time pairing code and show its QR code."""
    settings = load_settings(data_dir=data_dir, config=config)
    check_state(settings)
    try:
        db = Database(settings.data_dir)
        store = PairingStore(db, KeyStore(db, load_secret(settings.data_dir)))
        spec = new_pairing(
            name,
            scope=scope,
            models=[m.strip() for m in models.split(",") if m.strip()] if models else None,
            rpm=rpm,
            tpm=tpm,
            expires=expires,
            valid_for=valid_for,
            created_by="cli",
        )
        pairing, code = store.create(spec)
    except KeyProblem as exc:
        typer.echo(f"lmgate: {exc}", err=True)
        raise typer.Exit(1) from exc
    ca = lan_ca(settings)
    link = pairing_link(url.rstrip("/") if url else base_url(settings), code, ca)
    if png is not None:
        png.write_bytes(qr_png(link))
    if json:
        typer.echo(
            orjson.dumps(
                {
                    **pairing.as_json(),
                    "code": code,
                    "url": link,
                    "caFingerprint": ca.fingerprint if ca else None,
                }
            ).decode()
        )
        return
    until = datetime.fromtimestamp(pairing.expires_at, UTC).strftime("%H:%M UTC")
    typer.echo(qr_terminal(link))
    typer.echo(f"\nScan with {pairing.device}, or open: {link}")
    typer.echo(f"It works once, until {until}. Cancel: DELETE /admin/pairing/{pairing.id}")
    if ca is not None:
        typer.echo(f"The page offers the LAN CA; its fingerprint: {ca.fingerprint}")
