"""The `lmgate` command line. Each command lives in its own module of this package.

Flags only override what env vars (`LMGATE_*`), `./.env` and the TOML config already say; the
Settings model does the merging, so every setting has one name in every source.
"""

from __future__ import annotations

import sqlite3

import typer

from lmgate.cli.blocks import blocks_app
from lmgate.cli.doctor import doctor
from lmgate.cli.keys import keys_app
from lmgate.cli.models import models_app, profile_app
from lmgate.cli.pair import pair
from lmgate.cli.profiles import policy
from lmgate.cli.reset import reset
from lmgate.cli.serve import serve
from lmgate.cli.service import service_app
from lmgate.cli.tls import tls_app
from lmgate.cli.upstreams import upstreams_app
from lmgate.cli.wake import wake
from lmgate.store.db import failed_path
from lmgate.store.integrity import StateError, open_failure

app = typer.Typer(
    help=(
        "lmgate: a secure, observable LAN gateway in front of LM Studio.\n\n"
        "Every setting can also come from an env var LMGATE_<NAME> (e.g. LMGATE_ADMIN_KEY, "
        "LMGATE_API_KEYS=k1,k2, LMGATE_ALLOW=10.0.0.0/8,fd00::/8, LMGATE_UPSTREAM_TOKEN, "
        "LMGATE_TRUSTED_PROXIES, LMGATE_REQUEST_TIMEOUT, LMGATE_STREAM_TIMEOUT, "
        "LMGATE_REQUIRE_AUTH_FOR_HEALTH, LMGATE_MAX_BODY_BYTES) or a TOML file (--config); "
        "precedence: flag > env > .env > TypeScript-edition env names > file > default."
    ),
    no_args_is_help=True,
    add_completion=False,
)


@app.callback()
def root() -> None:
    """lmgate: a secure, observable LAN gateway in front of LM Studio."""


app.command()(serve)
profile_app.command("policy")(policy)
app.add_typer(models_app, name="models")
app.add_typer(keys_app, name="keys")
app.add_typer(blocks_app, name="blocks")
app.add_typer(upstreams_app, name="upstreams")
app.add_typer(tls_app, name="tls")
app.add_typer(service_app, name="service")
app.command()(doctor)
app.command()(reset)
app.command()(wake)
app.command()(pair)


def main() -> None:
    """Lost, damaged or full storage ends in one line naming the file, never a traceback."""
    try:
        app()
    except StateError as exc:
        typer.echo(f"lmgate: {exc}", err=True)
        raise SystemExit(2) from None
    except sqlite3.Error as exc:
        path = failed_path(exc)
        typer.echo(f"lmgate: {open_failure(path, exc) if path else exc}", err=True)
        raise SystemExit(1) from None
