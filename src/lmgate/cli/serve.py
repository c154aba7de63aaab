"""`lmgate serve`: build Settings from flags and every other source, check exposure, run."""

from __future__ import annotations

import signal
import socket
from pathlib import Path
from typing import Annotated, Any

import typer
import uvicorn
from pydantic import ValidationError

from lmgate.cli import startup
from lmgate.cli.problems import describe
from lmgate.heap import settle_allocator
from lmgate.serving import server_options, settle_collector
from lmgate.settings import Origins, Settings, is_loopback_host, recording


def resolve_settings(**flags: Any) -> tuple[Settings, Origins]:
    """Settings from flags given on the command line (None = not given) and every other source,
    with where each value came from; exit 2 with one line per problem when they are invalid."""
    given = {k: v for k, v in flags.items() if v is not None and v != [] and v is not False}
    with recording() as origins:
        try:
            return Settings(**given), origins
        except (ValidationError, ValueError) as exc:
            for line in describe(exc, origins):
                typer.echo(line, err=True)
            raise typer.Exit(2) from None


def upstream_flags(given: list[str]) -> dict[str, Any]:
    """One bare `--upstream URL` is the one upstream, as always; repeated, or `name=URL`, they
    are the `upstreams`."""
    from lmgate.upstreams.config import split_named

    if not given:
        return {}
    if len(given) == 1 and split_named(given[0])[0] is None:
        return {"upstream": given[0]}
    return {"upstreams": given}


def load_settings(**flags: Any) -> Settings:
    """Settings from flags given on the command line (None = not given) and every other source."""
    return resolve_settings(**flags)[0]


def _say(lines: list[str], prefix: str = "lmgate: ") -> None:
    for line in lines:
        typer.echo(f"{prefix}{line}", err=True)


def keys_required(settings: Settings) -> bool:
    """Keys from settings, or managed keys in the data dir (`lmgate keys create`)."""
    from lmgate.store.keys import any_keys

    return settings.auth_enabled or any_keys(settings.data_dir)


def check_state(settings: Settings) -> list[str]:
    """Lost or damaged state refuses to start (exit 2), before the exposure check could take a
    database it cannot read for "no keys"; returns notes worth showing at start."""
    from lmgate.store.integrity import StateError, verify

    try:
        return verify(settings.data_dir)
    except StateError as exc:
        typer.echo(f"lmgate: {exc}", err=True)
        raise typer.Exit(2) from exc


def open_state(settings: Settings) -> None:
    """Bring the database up to date once, here: before any worker starts, and a failed
    migration ends in one message like the checks above."""
    from lmgate.store.db import Database
    from lmgate.store.integrity import StateError

    try:
        Database(settings.data_dir).close()
    except StateError as exc:
        typer.echo(f"lmgate: {exc}", err=True)
        raise typer.Exit(2) from exc


def check_exposure(settings: Settings) -> str | None:
    """Secure by default: no open gateway on a network without keys, unless asked for."""
    if is_loopback_host(settings.host) or settings.insecure_no_auth or keys_required(settings):
        return None
    return (
        f"refusing to listen on {settings.host} with no API key configured: anyone on the "
        "network could use the model. Set LMGATE_ADMIN_KEY and/or LMGATE_API_KEYS, listen on "
        "127.0.0.1, or pass --insecure-no-auth if you really want an open gateway."
    )


def serve(
    host: Annotated[str | None, typer.Option(help="Address to listen on [127.0.0.1].")] = None,
    # Numbers are taken as text and checked by the settings, whose report names the flag.
    port: Annotated[str | None, typer.Option(help="Port to listen on [1235].")] = None,
    upstream: Annotated[
        list[str] | None,
        typer.Option(
            help="LM Studio base URL [http://127.0.0.1:1234]; repeat it (`name=URL`) for "
            "several upstreams."
        ),
    ] = None,
    config: Annotated[Path | None, typer.Option(help="TOML config file (LMGATE_CONFIG).")] = None,
    data_dir: Annotated[
        Path | None, typer.Option(help="State directory [per-user data dir].")
    ] = None,
    allow: Annotated[
        list[str] | None,
        typer.Option(help="Allowed client CIDR or address; repeatable [everyone]."),
    ] = None,
    log_level: Annotated[
        str | None, typer.Option(help="error, warn, info or debug [info].")
    ] = None,
    insecure_no_auth: Annotated[
        bool, typer.Option(help="Allow a non-loopback --host with no API key (unsafe).")
    ] = False,
    tls_cert: Annotated[
        Path | None, typer.Option(help="TLS certificate (PEM); serve HTTPS with --tls-key.")
    ] = None,
    tls_key: Annotated[Path | None, typer.Option(help="Private key (PEM) of --tls-cert.")] = None,
    demo_fallback: Annotated[
        bool,
        typer.Option(
            help="When no upstream is configured and none answers on LM Studio's default "
            "address, serve the built-in LM Studio emulator as the upstream (demo mode)."
        ),
    ] = False,
    workers: Annotated[
        str | None,
        typer.Option(help="Processes serving the port, 1-64 (LMGATE_WORKERS) [1]."),
    ] = None,
) -> None:
    """Run the gateway."""
    settings, origins = resolve_settings(
        host=host,
        port=port,
        **upstream_flags(upstream or []),
        config=config,
        data_dir=data_dir,
        allow=allow,
        log_level=log_level,
        insecure_no_auth=insecure_no_auth,
        tls_cert=tls_cert,
        tls_key=tls_key,
        workers=workers,
    )
    notes = check_state(settings)  # with --workers N too: checked once, here, before any start
    problem = check_exposure(settings) or startup.tls_problem(settings, origins)
    if problem:
        typer.echo(f"lmgate: {problem}", err=True)
        raise typer.Exit(2)
    open_state(settings)
    try:
        sock = startup.bind(settings)
    except startup.StartupError as exc:
        typer.echo(f"lmgate: {exc}", err=True)
        raise typer.Exit(exc.status) from None
    with sock:
        _serve(settings, origins, sock, notes, demo_fallback=demo_fallback)


def _serve(
    settings: Settings,
    origins: Origins,
    sock: socket.socket,
    notes: list[str],
    *,
    demo_fallback: bool,
) -> None:
    from lmgate.app import create_app
    from lmgate.demo import demo_upstream
    from lmgate.guard.exposure import startup_warnings
    from lmgate.observe.requestlog import configure_logging
    from lmgate.shutdown import draining_protocol
    from lmgate.store.integrity import forget_reset

    configure_logging(
        settings.log_level,
        file=settings.log_file,
        file_max_bytes=settings.log_file_max_bytes,
        file_backups=settings.log_file_backups,
    )
    # uvicorn re-raises SIGTERM after its graceful shutdown; turn it into SystemExit so that
    # context managers (the demo emulator) clean up instead of the process dying on the spot.
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    _say(startup.secure_data_dir(settings.data_dir))
    _say(startup.setting_notes(settings, origins), "lmgate: NOTE: ")
    with demo_upstream(settings, enabled=demo_fallback) as settings:
        required = keys_required(settings)
        warnings = startup.weak_keys(settings, origins)
        warnings += startup_warnings(settings, keys_required=required)
        _say(warnings, "lmgate: WARNING: ")
        _say(notes, "lmgate: NOTE: ")
        if notes:
            forget_reset(settings.data_dir)  # said once, at the first start after it
        if admin_open := startup.edition_admin_warning(settings, origins):
            typer.echo(startup.banner("WARNING", admin_open), err=True)
        banner = startup.upstream_banner(settings)
        if banner:
            typer.echo(banner, err=True)
        sock.listen(startup.BACKLOG)
        typer.echo(startup.listening_line(settings, sock, keys_required=required), err=True)
        if settings.workers > 1:
            from lmgate.workers.supervisor import serve_workers

            serve_workers(settings, sock)  # the demo emulator, started above, serves them all
            return
        app = create_app(settings)
        settle_collector()
        settle_allocator()
        uvicorn.Server(
            uvicorn.Config(
                app,
                http=draining_protocol(settings),
                **server_options(settings),
            )
        ).run(sockets=[sock])


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(0)
