"""`lmgate serve`: build Settings from flags and every other source, check exposure, run."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Annotated, Any

import typer
import uvicorn
from pydantic import ValidationError

from lmgate.heap import settle_allocator
from lmgate.serving import server_options, settle_collector
from lmgate.settings import Settings, is_loopback_host


def load_settings(**flags: Any) -> Settings:
    """Settings from flags given on the command line (None = not given) and every other source."""
    given = {k: v for k, v in flags.items() if v is not None and v != [] and v is not False}
    try:
        return Settings(**given)
    except (ValidationError, ValueError) as exc:
        typer.echo(f"lmgate: invalid configuration:\n{exc}", err=True)
        raise typer.Exit(2) from exc


def keys_required(settings: Settings) -> bool:
    """Keys from settings, or managed keys in the data dir (`lmgate keys create`)."""
    from lmgate.store.keys import any_keys

    return settings.auth_enabled or any_keys(settings.data_dir)


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
    port: Annotated[int | None, typer.Option(help="Port to listen on [1235].")] = None,
    upstream: Annotated[
        str | None, typer.Option(help="LM Studio base URL [http://127.0.0.1:1234].")
    ] = None,
    config: Annotated[Path | None, typer.Option(help="TOML config file (LMGATE_CONFIG).")] = None,
    data_dir: Annotated[
        Path | None, typer.Option(help="State directory [per-user data dir].")
    ] = None,
    allow: Annotated[
        list[str] | None,
        typer.Option(help="Allowed client CIDR or address; repeatable [everyone]."),
    ] = None,
    log_level: Annotated[str | None, typer.Option(help="debug, info, warning, error.")] = None,
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
        int | None,
        typer.Option(help="Processes serving the port, 1-64 (LMGATE_WORKERS) [1]."),
    ] = None,
) -> None:
    """Run the gateway."""
    from lmgate.app import create_app
    from lmgate.demo import demo_upstream
    from lmgate.guard.exposure import startup_warnings
    from lmgate.observe.requestlog import configure_logging
    from lmgate.shutdown import draining_protocol

    settings = load_settings(
        host=host,
        port=port,
        upstream=upstream,
        config=config,
        data_dir=data_dir,
        allow=allow,
        log_level=log_level,
        insecure_no_auth=insecure_no_auth,
        tls_cert=tls_cert,
        tls_key=tls_key,
        workers=workers,
    )
    problem = check_exposure(settings)
    if problem:
        typer.echo(f"lmgate: {problem}", err=True)
        raise typer.Exit(2)
    configure_logging(
        settings.log_level,
        file=settings.log_file,
        file_max_bytes=settings.log_file_max_bytes,
        file_backups=settings.log_file_backups,
    )
    # uvicorn re-raises SIGTERM after its graceful shutdown; turn it into SystemExit so that
    # context managers (the demo emulator) clean up instead of the process dying on the spot.
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    with demo_upstream(settings, enabled=demo_fallback) as settings:
        required = keys_required(settings)
        for warning in startup_warnings(settings, keys_required=required):
            typer.echo(f"lmgate: WARNING: {warning}", err=True)
        auth = "on" if required else "off (loopback only)"
        scheme = "https" if settings.tls_cert else "http"
        many = f", {settings.workers} workers" if settings.workers > 1 else ""
        typer.echo(
            f"lmgate listening on {scheme}://{settings.host}:{settings.port} -> "
            f"{settings.upstream_url} (auth {auth}, data {settings.data_dir}{many})",
            err=True,
        )
        if settings.workers > 1:
            from lmgate.workers.supervisor import serve_workers

            serve_workers(settings)  # the demo emulator, started above, serves them all
            return
        app = create_app(settings)
        settle_collector()
        settle_allocator()
        uvicorn.Server(
            uvicorn.Config(
                app,
                http=draining_protocol(
                    max_head_bytes=settings.max_header_bytes, head_timeout=settings.header_timeout
                ),
                **server_options(settings),
            )
        ).run()


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(0)
