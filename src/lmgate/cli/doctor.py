"""`lmgate doctor`: check a setup before (or while) it runs; non-zero exit on any problem.

It reads the same configuration `lmgate serve` would (flags, env, .env, config file), then
checks: the configuration itself, exposure (listen address, auth, TLS, an upstream that can be
walked around), the state (lost or damaged: what `serve` would refuse), the data dir's
permissions (state and key hashes readable only by the owner), the TLS files, and whether the
upstream answers and what it offers.
"""

from __future__ import annotations

import asyncio
import stat
import time
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import orjson
import typer

from lmgate.cli import startup
from lmgate.cli.serve import keys_required, resolve_settings
from lmgate.guard.exposure import Finding, lan_addresses, listener_findings, upstream_findings
from lmgate.loading.choose import Chooser, surfaces_for
from lmgate.settings import Origins, Settings, is_loopback_host
from lmgate.store.db import DB_NAME
from lmgate.store.integrity import StateError, verify
from lmgate.upstream.capabilities import Capabilities, detect
from lmgate.upstream.client import UpstreamClient

_MARK = {"ok": "[ ok ]", "warn": "[WARN]", "fail": "[FAIL]"}


def _private(path: Path, what: str, *, serve_fixes: bool = True) -> Finding:
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        private = 0o700 if path.is_dir() else 0o600
        also = " (lmgate serve does this when it starts)" if serve_fixes else ""
        return Finding(
            "fail",
            "permissions",
            f"{what} {path} is open to others ({mode:o}): chmod {private:o} {path}{also}",
        )
    return Finding("ok", "permissions", f"{what} {path} is private ({mode:o})")


def data_dir_findings(settings: Settings) -> list[Finding]:
    data = settings.data_dir
    if not data.exists():
        return [Finding("ok", "data-dir", f"{data} does not exist yet; serve will create it")]
    return [_private(path, what) for path, what in startup.private_paths(data)]


def setting_findings(settings: Settings, origins: Origins) -> list[Finding]:
    """What `serve` would correct, warn about or refuse in these settings."""
    found = [Finding("warn", "config", note) for note in startup.setting_notes(settings, origins)]
    if admin_open := startup.edition_admin_warning(settings, origins):
        found.append(Finding("warn", "admin-allow", admin_open))
    found += [Finding("fail", "weak-key", weak) for weak in startup.weak_keys(settings, origins)]
    return found


def state_findings(settings: Settings) -> list[Finding]:
    try:
        notes = verify(settings.data_dir)
    except StateError as exc:
        return [Finding("fail", "state", str(exc))]
    path = settings.data_dir / DB_NAME
    found = [Finding("ok", "state", f"{path} is sound")] if path.exists() else []
    return found + [Finding("ok", "state", note) for note in notes]


def tls_findings(settings: Settings, origins: Origins | None = None) -> list[Finding]:
    from cryptography import x509

    if settings.tls_cert is None or settings.tls_key is None:
        return []
    problem = startup.tls_problem(settings, origins)
    if problem:
        return [Finding("fail", "tls", problem)]
    try:
        certs = x509.load_pem_x509_certificates(settings.tls_cert.read_bytes())
    except (OSError, ValueError) as exc:
        return [Finding("fail", "tls", f"cannot read {settings.tls_cert}: {exc}")]
    found = [_private(settings.tls_key, "TLS key", serve_fixes=False)]
    days = (certs[0].not_valid_after_utc.timestamp() - time.time()) / 86400
    if days < 0:
        found.append(Finding("fail", "tls", f"{settings.tls_cert} has expired"))
    elif days < 30:
        found.append(Finding("warn", "tls", f"{settings.tls_cert} expires in {days:.0f} days"))
    else:
        found.append(Finding("ok", "tls", f"{settings.tls_cert} is valid for {days:.0f} days"))
    return found


async def upstream_health(settings: Settings) -> list[Finding]:
    client = UpstreamClient(settings)
    await client.start()
    try:
        caps = await detect(client, limit_s=min(settings.connect_timeout, 5.0))
        url = settings.upstream_shown
        if not caps.reachable:
            return [Finding("fail", "upstream", f"{url} does not answer: {caps.last_error}")]
        if caps.auth_required and settings.upstream_token is None:
            return [Finding("fail", "upstream", f"{url} wants a token: set LMGATE_UPSTREAM_TOKEN")]
        management = await _model_management(settings, client, caps)
    finally:
        await client.close()
    return [Finding("ok", "upstream", f"{url} answers: {caps.kind}, {management}")]


async def _model_management(settings: Settings, client: UpstreamClient, caps: Capabilities) -> str:
    """Whether lmgate can load models there, and through which surfaces (and why not the
    others): the same check `serve` makes before each load."""

    async def known() -> Capabilities:
        return caps

    chooser = Chooser(surfaces_for(settings, client, known))
    works = bool(await chooser.available())
    head = "model management available" if works else "no model management"
    return f"{head}: {await chooser.summary()}"


def run_checks(settings: Settings, origins: Origins | None = None) -> list[Finding]:
    state = state_findings(settings)
    broken = any(f.level == "fail" for f in state)  # then its keys are unknown: assume some
    required = broken or keys_required(settings)
    found = [Finding("ok", "config", "the configuration is valid")]
    found += setting_findings(settings, origins or {})
    if broken:
        pass  # the state finding says why serve would refuse to start
    elif required:
        found.append(Finding("ok", "auth", "keys are required"))
    elif is_loopback_host(settings.host):
        found.append(Finding("ok", "auth", "no keys exist: auth is off, on loopback only"))
    found += listener_findings(settings, keys_required=required, addresses=lan_addresses())
    found += state
    found += data_dir_findings(settings)
    found += tls_findings(settings, origins)

    async def network() -> list[Finding]:
        health, exposure = await asyncio.gather(
            upstream_health(settings), upstream_findings(settings)
        )
        return health + [f for f in exposure if f.topic != "upstream"]

    return found + asyncio.run(network())


def doctor(
    host: Annotated[str | None, typer.Option(help="Address serve would listen on.")] = None,
    port: Annotated[str | None, typer.Option(help="Port serve would listen on.")] = None,
    upstream: Annotated[str | None, typer.Option(help="LM Studio base URL.")] = None,
    config: Annotated[Path | None, typer.Option(help="TOML config file.")] = None,
    data_dir: Annotated[Path | None, typer.Option(help="State directory.")] = None,
    tls_cert: Annotated[Path | None, typer.Option(help="TLS certificate (PEM).")] = None,
    tls_key: Annotated[Path | None, typer.Option(help="TLS private key (PEM).")] = None,
    json: Annotated[bool, typer.Option("--json", help="Findings as JSON.")] = False,
) -> None:
    """Check configuration, exposure, permissions, TLS and the upstream; exit 1 on problems."""
    settings, origins = resolve_settings(
        host=host,
        port=port,
        upstream=upstream,
        config=config,
        data_dir=data_dir,
        tls_cert=tls_cert,
        tls_key=tls_key,
    )
    findings = run_checks(settings, origins)
    if json:
        typer.echo(orjson.dumps([asdict(f) for f in findings], option=orjson.OPT_INDENT_2))
    else:
        for f in findings:
            typer.echo(f"{_MARK[f.level]} {f.topic}: {f.message}")
    problems = sum(f.level != "ok" for f in findings)
    if problems:
        typer.echo(f"lmgate doctor: {problems} problem(s) found", err=True)
        raise typer.Exit(1)
