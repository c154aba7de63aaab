"""What `lmgate serve` checks and says before it serves, each in one line a person can act on.

The socket is bound here, before anything is announced, so "listening" is printed only when
it is true, and a port in use is named with the way out. The other checks are shared with
`lmgate doctor`, so that the two never disagree about the same setup.
"""

from __future__ import annotations

import asyncio
import errno
import socket
import ssl
import stat
import textwrap
from pathlib import Path

import psutil

from lmgate.guard.key_strength import weakness
from lmgate.settings import EDITION_ADMIN_ALLOW, Origins, Settings, is_loopback_host
from lmgate.settings_values import normalize_upstream
from lmgate.store.db import DB_NAME
from lmgate.store.keys import SECRET_FILE
from lmgate.upstream.client import UpstreamClient

BACKLOG = 2048  # uvicorn's default
BANNER = "=" * 72
# The TypeScript edition listened here when GATEWAY_HOST and GATEWAY_PORT were not set.
EDITION_DEFAULT = "0.0.0.0:8001"
# Edition names other programs use too: alone, they do not show a configuration written for it.
GENERIC_NAMES = frozenset({"LOG_LEVEL", "REQUIRE_AUTH_FOR_HEALTH"})


class StartupError(Exception):
    """A problem that stops `serve`, with the one line that says so and the exit status."""

    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.status = status


def display_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _holder(port: int) -> str | None:
    """The process listening on `port`, when this user may see it."""
    try:
        for conn in psutil.net_connections(kind="tcp"):
            if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port:
                if conn.pid:
                    return f"{psutil.Process(conn.pid).name()} (pid {conn.pid})"
    except (psutil.Error, OSError):
        return None
    return None


def _bind_problem(host: str, port: int, exc: OSError) -> str:
    where = f"{display_host(host)}:{port}"
    if exc.errno == errno.EADDRINUSE:
        holder = _holder(port)
        by = f" by {holder}" if holder else ""
        return (
            f"cannot listen on {where}: port {port} is already in use{by}. Choose another "
            f"port with --port (or LMGATE_PORT), or see what holds it: "
            f"ss -ltnp 'sport = :{port}' or lsof -i :{port}"
        )
    if exc.errno == errno.EACCES:
        return (
            f"cannot listen on {where}: permission denied (ports below 1024 need root or "
            "CAP_NET_BIND_SERVICE). Choose a port above 1023 with --port"
        )
    if exc.errno == errno.EADDRNOTAVAIL:
        return (
            f"cannot listen on {where}: {host} is not an address of this machine. Use one of "
            "its addresses with --host, 0.0.0.0 for every interface, or 127.0.0.1"
        )
    if isinstance(exc, socket.gaierror):
        return f"cannot listen on {where}: the host name {host!r} does not resolve (--host)"
    return f"cannot listen on {where}: {exc.strerror or exc}"


def bind(settings: Settings) -> socket.socket:
    """The listening socket, bound (not yet listening); StartupError naming the way out."""
    host = settings.host.strip("[]")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, settings.port))
    except OSError as exc:
        sock.close()
        raise StartupError(_bind_problem(host, settings.port, exc)) from None
    sock.set_inheritable(True)  # `--workers` hands it to the worker processes
    return sock


def listening_line(settings: Settings, sock: socket.socket, *, keys_required: bool) -> str:
    """What is true of the gateway now serving on `sock` (port 0 shows the port it got)."""
    port = sock.getsockname()[1]
    scheme = "https" if settings.tls_cert else "http"
    if keys_required:
        auth = "auth on"
    elif is_loopback_host(settings.host):
        auth = "auth off (loopback only)"
    else:
        auth = f"AUTH OFF: anyone who reaches port {port} can use the models (--insecure-no-auth)"
    many = f", {settings.workers} workers" if settings.workers > 1 else ""
    return (
        f"lmgate listening on {scheme}://{display_host(settings.host)}:{port} -> "
        f"{settings.upstream_shown} ({auth}, data {settings.data_dir}{many})"
    )


def tls_problem(settings: Settings, origins: Origins | None = None) -> str | None:
    """Whether the TLS certificate and key can serve: one line naming the file otherwise."""
    if settings.tls_cert is None or settings.tls_key is None:
        return None
    names = origins or {}
    for field, path, what in (
        ("tls_cert", settings.tls_cert, "certificate"),
        ("tls_key", settings.tls_key, "private key"),
    ):
        origin = names.get(field)
        given = origin.label if origin else "--" + field.replace("_", "-")
        if not path.exists():
            return f"the TLS {what} file {path} ({given}) does not exist"
        try:
            with path.open("rb"):
                pass
        except OSError as exc:
            return f"cannot read the TLS {what} file {path} ({given}): {exc.strerror}"
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(settings.tls_cert, settings.tls_key)
    except (ssl.SSLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or str(exc)
        return (
            f"cannot serve TLS with certificate {settings.tls_cert} and key {settings.tls_key}: "
            f"{reason} (both must be PEM files, the key matching the certificate)"
        )
    return None


SECRETS = {DB_NAME: "state database", SECRET_FILE: "key secret"}


def private_paths(data: Path) -> list[tuple[Path, str]]:
    """(path, what it is) of the data dir and the files in it only the owner may read."""
    if not data.is_dir():
        return []
    found = [(data, "data dir")]
    for name, what in SECRETS.items():
        for suffix in ("", "-wal", "-shm"):
            if (data / f"{name}{suffix}").exists():
                found.append((data / f"{name}{suffix}", what))
    return found


def open_to_others(data: Path) -> list[tuple[Path, int, int]]:
    """(path, mode, owner-only mode) of the data dir and its secrets that others may read."""
    found: list[tuple[Path, int, int]] = []
    for path, _ in private_paths(data):
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            found.append((path, mode, 0o700 if path.is_dir() else 0o600))
    return found


def secure_data_dir(data: Path) -> list[str]:
    """Make the data dir and its secrets owner-only, as `doctor` requires; say what changed."""
    said: list[str] = []
    for path, mode, private in open_to_others(data):
        try:
            path.chmod(private)
        except OSError as exc:
            said.append(
                f"WARNING: {path} is open to others ({mode:o}) and cannot be changed "
                f"({exc.strerror}): chmod {private:o} {path}"
            )
        else:
            said.append(f"{path} was open to others ({mode:o}): made it {private:o}")
    return said


def weak_keys(settings: Settings, origins: Origins | None = None) -> list[str]:
    """Settings keys that are easy to guess, when lmgate listens beyond loopback."""
    if is_loopback_host(settings.host):
        return []
    names = origins or {}
    found: list[str] = []
    singles = (("admin_key", settings.admin_key), ("metrics_key", settings.metrics_key))
    for field, secret in singles:
        reason = weakness(secret.get_secret_value()) if secret is not None else None
        if reason:
            origin = names.get(field)
            found.append(f"{origin.label if origin else 'LMGATE_' + field.upper()}: {reason}")
    for index, secret in enumerate(settings.api_keys, start=1):
        reason = weakness(secret.get_secret_value())
        if reason:
            origin = names.get("api_keys")
            label = origin.label if origin else "LMGATE_API_KEYS"
            found.append(f"{label} (key {index}): {reason}")
    return [
        f"weak key in {what}, on a network listener ({settings.host}): anyone who reaches "
        "it may guess the key. Use a long random one: "
        "python3 -c 'import secrets; print(secrets.token_urlsafe(32))'"
        for what in found
    ]


def setting_notes(settings: Settings, origins: Origins) -> list[str]:
    """What lmgate corrected or chose differently from what was written, and why."""
    notes: list[str] = []
    upstream = origins.get("upstream")
    if upstream is not None and isinstance(upstream.raw, str):
        try:
            notes += normalize_upstream(upstream.raw)[1]
        except ValueError:  # pragma: no cover - validation already refused it
            pass
    edition = {o.label.split(" ")[0] for o in origins.values() if o.kind == "edition"}
    if edition - GENERIC_NAMES and "host" not in origins and "port" not in origins:
        notes.append(
            f"the TypeScript edition listened on {EDITION_DEFAULT} when GATEWAY_HOST and "
            f"GATEWAY_PORT were unset; lmgate listens on "
            f"{display_host(settings.host)}:{settings.port}. Set GATEWAY_HOST=0.0.0.0 "
            "GATEWAY_PORT=8001 to keep the old address"
        )
    return notes


def edition_admin_warning(settings: Settings, origins: Origins) -> str | None:
    """Admin routes open to the general allowlist, as the TypeScript edition had them."""
    admin = origins.get("admin_allow")
    if admin is None or admin.kind != "derived":
        return None
    everyone = "0.0.0.0/0" in settings.admin_allow
    who = "every address" if everyone else ", ".join(settings.admin_allow)
    return (
        f"admin routes (/admin/*, /debug/*) answer {who}, as in the TypeScript edition, "
        f"because this configuration uses its {EDITION_ADMIN_ALLOW} and sets no "
        "LMGATE_ADMIN_ALLOW. lmgate's own default is loopback only: set "
        "LMGATE_ADMIN_ALLOW=127.0.0.1 (or the operator's address) to keep them off the "
        "network, or LMGATE_ADMIN_ALLOW=* to keep this and silence the warning."
    )


def banner(title: str, text: str) -> str:
    """A block that stands out among log lines, wrapped for a terminal."""
    body = textwrap.fill(
        f"{title}: {text}", width=len(BANNER), break_long_words=False, break_on_hyphens=False
    )
    return f"{BANNER}\n{body}\n{BANNER}"


async def _probe(settings: Settings) -> tuple[int, str | None]:
    client = UpstreamClient(settings)
    await client.start()
    try:
        probe = await client.probe("/v1/models", limit_s=min(settings.connect_timeout, 2.0))
    finally:
        await client.close()
    return probe.status, probe.error


def upstream_banner(settings: Settings) -> str | None:
    """A banner when the upstream does not answer (or wants a token lmgate lacks)."""
    status, error = asyncio.run(_probe(settings))
    url = settings.upstream_shown
    if status in (401, 403) and settings.upstream_token is None:
        problem = (
            f"UPSTREAM WANTS A TOKEN: {url} refused lmgate ({status}).\n"
            "Create an API token in LM Studio and give it to lmgate as LMGATE_UPSTREAM_TOKEN."
        )
    elif status == 0:
        reason = (error or "no answer").split(": ", 1)[-1][:200]
        problem = (
            f"UPSTREAM NOT ANSWERING: nothing answers at {url}\n({reason}).\n"
            "lmgate starts anyway; requests get 503 until it answers. Start LM Studio's server\n"
            "(Developer tab > Start Server, or `lms server start`), or point lmgate at it with\n"
            "--upstream URL (LMGATE_UPSTREAM)."
        )
    else:
        return None
    return f"{BANNER}\n{problem}\n{BANNER}"
