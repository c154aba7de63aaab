"""`lmgate service install | uninstall | status | logs`: run the gateway at boot.

`install` takes the settings `serve` would run with (the same flags, env, `.env` and config
file), refuses what `lmgate doctor` fails, writes the platform's service definition with those
settings (keys in an owner-only env file), enables and starts it where it can, and says what it
did and how to undo it. `--dry-run` prints the files instead, keys masked unless
`--show-secrets`; `--root DIR` writes under DIR (packaging, tests) and starts nothing.
"""

from __future__ import annotations

import getpass
import os
import subprocess
from collections import deque
from dataclasses import dataclass
from pathlib import Path, PurePath, PurePosixPath, PureWindowsPath
from typing import Annotated

import typer

from lmgate.cli.option_group import option_group
from lmgate.cli.serve import resolve_settings
from lmgate.service import launchd, systemd, windows
from lmgate.service.installer import (
    PLATFORMS,
    install,
    installed,
    manager_running,
    this_platform,
    tool,
    under,
    uninstall,
)
from lmgate.service.spec import EnvValueError, Plan, ServiceSpec, build_spec
from lmgate.settings import Origins, Settings

service_app = typer.Typer(
    help="Run the gateway at boot: systemd (Linux), launchd (macOS), Task Scheduler (Windows).",
    no_args_is_help=True,
)

Platform = Annotated[
    str | None, typer.Option(help="linux, macos or windows [this machine's].", show_default=False)
]
Scope = Annotated[
    bool | None,
    typer.Option(
        "--system/--user",
        help="System-wide, at boot, as a dedicated user (default for root) or the user's own.",
        show_default=False,
    ),
]
Root = Annotated[
    Path | None,
    typer.Option(help="Write under this directory instead of / and start nothing (packaging)."),
]
RunAs = Annotated[
    str | None,
    typer.Option(help="macOS --system: the user the LaunchDaemon runs as [$SUDO_USER]."),
]
DataDir = Annotated[Path | None, typer.Option(help="State directory [per platform and scope].")]
Config = Annotated[Path | None, typer.Option(help="TOML config file (LMGATE_CONFIG).")]


@dataclass(frozen=True)
class Target:
    """Which installed service `uninstall`, `status` and `logs` are about."""

    platform: Platform = None
    system: Scope = None
    root: Root = None
    run_as: RunAs = None
    config: Config = None
    data_dir: DataDir = None


_TARGET = Target()  # the commands' default; `option_group` fills it from the flags


def _platform(given: str | None) -> str:
    platform = (given or this_platform()).lower()
    if platform == "darwin":
        platform = "macos"
    if platform not in PLATFORMS:
        typer.echo(f"lmgate: unknown platform {platform!r}: use {', '.join(PLATFORMS)}", err=True)
        raise typer.Exit(2)
    return platform


def _system(given: bool | None) -> bool:
    if given is not None:
        return given
    return hasattr(os, "geteuid") and os.geteuid() == 0


def _user_name(run_as: str | None) -> str:
    return run_as or os.environ.get("SUDO_USER") or getpass.getuser()


def _default_data(platform: str, system: bool, settings: Settings) -> PurePath:
    home = PurePosixPath(Path.home())
    if system:
        if platform == "linux":
            return systemd.SYSTEM_DATA
        if platform == "macos":
            return launchd.SYSTEM_DATA
        return _windows_dirs()[0] / "lmgate" / "data"
    if platform == this_platform():
        return settings.data_dir.absolute()
    if platform == "linux":
        return home / ".local/share/lmgate"
    if platform == "macos":
        return home / "Library/Application Support/lmgate"
    return _windows_dirs()[1] / "lmgate" / "data"


def _windows_dirs() -> tuple[PureWindowsPath, PureWindowsPath]:
    program_data = PureWindowsPath(os.environ.get("PROGRAMDATA", r"C:\ProgramData"))
    local = os.environ.get("LOCALAPPDATA", rf"C:\Users\{getpass.getuser()}\AppData\Local")
    return program_data, PureWindowsPath(local)


def _plan(platform: str, system: bool, spec: ServiceSpec, run_as: str | None) -> Plan:
    home = PurePosixPath(Path.home())
    if platform == "linux":
        return systemd.plan(spec, system=system, home=home)
    if platform == "macos":
        uid = os.getuid() if hasattr(os, "getuid") else 501
        return launchd.plan(spec, system=system, home=home, uid=uid, user=_user_name(run_as))
    program_data, local = _windows_dirs()
    return windows.plan(
        spec,
        system=system,
        program_data=program_data,
        local_app_data=local,
        user=None if system else _user_name(run_as),
    )


def _spec(
    platform: str, system: bool, settings: Settings, origins: Origins
) -> tuple[ServiceSpec, Settings]:
    """The service's spec, and the settings it will run with (its data dir)."""
    data: PurePath
    if "data_dir" in origins:
        data = settings.data_dir.absolute()
    else:
        data = _default_data(platform, system, settings)
    runs = settings.model_copy(update={"data_dir": Path(data)})
    try:
        spec = build_spec(settings, set(origins), data_dir=data)
    except EnvValueError as exc:
        typer.echo(f"lmgate: cannot write the service's settings: {exc}", err=True)
        raise typer.Exit(2) from None
    return spec, runs


def _live(platform: str, root: Path | None) -> tuple[bool, str | None]:
    """Whether the service can be enabled and started now; if not, why."""
    if root is not None:
        return False, f"installed under {root}: nothing was started"
    if platform != this_platform():
        return False, f"this machine is not {platform}: nothing was started"
    if not manager_running(platform):
        pid1 = Path("/proc/1/comm")
        what = pid1.read_text().strip() if pid1.exists() else "not systemd"
        return False, (
            f"systemd is not running here (PID 1 is {what}), so the unit cannot be enabled "
            "or started now; it is installed and enabled (the link below) and starts at the "
            "next boot of a systemd machine"
        )
    return True, None


def _root_flag(root: Path | None) -> str:
    return f" --root {root}" if root is not None else ""


def _check(settings: Settings, origins: Origins, *, force: bool) -> None:
    """`lmgate doctor`'s checks: a failure refuses the install (unless forced)."""
    from lmgate.cli.doctor import run_checks

    findings = run_checks(settings, origins)
    failed = [f for f in findings if f.level == "fail"]
    if settings.wake_mac is not None:  # an upstream asleep now is what wake is for
        failed = [f for f in failed if f.topic != "upstream"]
    for f in findings:
        if f.level == "warn":
            typer.echo(f"lmgate: WARNING: {f.topic}: {f.message}", err=True)
    if not failed:
        return
    for f in failed:
        typer.echo(f"lmgate: doctor: {f.topic}: {f.message}", err=True)
    if force:
        typer.echo("lmgate: installing anyway (--force)", err=True)
        return
    typer.echo(
        "lmgate: refusing to install a configuration `lmgate doctor` fails: fix the above "
        "(or pass --force)",
        err=True,
    )
    raise typer.Exit(1)


def _show(plan: Plan, *, show_secrets: bool) -> None:
    for item in plan.files:
        if item.secret and not show_secrets:
            text = item.shown
            note = ", keys hidden: --show-secrets prints them"
        else:
            raw = item.content
            text = raw.decode("utf-16") if raw.startswith(b"\xff\xfe") else raw.decode()
            note = ""
        typer.echo(f"==> {item.path} (mode {item.mode:o}{note})")
        typer.echo(text.replace("\r\n", "\n").rstrip("\n"))
        typer.echo("")
    for link, target in plan.links:
        typer.echo(f"==> link {link} -> {target}")
    for directory, mode in plan.dirs:
        typer.echo(f"==> directory {directory} (mode {mode:o})")
    for command in plan.commands:
        typer.echo(f"==> run: {' '.join(command)}")


@service_app.command("install")
def install_command(
    host: Annotated[str | None, typer.Option(help="Address to listen on [127.0.0.1].")] = None,
    port: Annotated[str | None, typer.Option(help="Port to listen on [1235].")] = None,
    upstream: Annotated[str | None, typer.Option(help="LM Studio base URL.")] = None,
    config: Config = None,
    data_dir: DataDir = None,
    allow: Annotated[
        list[str] | None, typer.Option(help="Allowed client CIDR or address; repeatable.")
    ] = None,
    log_level: Annotated[str | None, typer.Option(help="error, warn, info or debug.")] = None,
    tls_cert: Annotated[Path | None, typer.Option(help="TLS certificate (PEM).")] = None,
    tls_key: Annotated[Path | None, typer.Option(help="Private key (PEM) of --tls-cert.")] = None,
    workers: Annotated[str | None, typer.Option(help="Processes serving the port, 1-64.")] = None,
    insecure_no_auth: Annotated[
        bool, typer.Option(help="Allow a non-loopback --host with no API key (unsafe).")
    ] = False,
    platform: Platform = None,
    system: Scope = None,
    root: Root = None,
    run_as: RunAs = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the files; write nothing.")
    ] = False,
    show_secrets: Annotated[
        bool, typer.Option("--show-secrets", help="With --dry-run: print the keys too.")
    ] = False,
    force: Annotated[
        bool, typer.Option("--force", help="Install even when `lmgate doctor` fails.")
    ] = False,
) -> None:
    """Install the gateway as a service that starts at boot (or log-in), with these settings."""
    settings, origins = resolve_settings(
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
    name = _platform(platform)
    scope = _system(system)
    spec, runs = _spec(name, scope, settings, origins)
    if name == this_platform():
        _check(runs, origins, force=force)
    plan = _plan(name, scope, spec, run_as)
    if dry_run:
        _show(plan, show_secrets=show_secrets)
        return
    live, why = _live(name, root)
    flags = f"{' --system' if scope else ' --user'}{_root_flag(root)}"
    if name != this_platform() and root is None:
        typer.echo(f"lmgate: this machine is not {name}: use --dry-run or --root DIR", err=True)
        raise typer.Exit(2)
    try:
        outcome = install(plan, root, live=live)
    except PermissionError as exc:
        typer.echo(
            f"lmgate: cannot write {exc.filename}: permission denied "
            "(a system-wide service needs root: sudo, or --user)",
            err=True,
        )
        raise typer.Exit(1) from None
    where = f" under {root}" if root is not None else ""
    typer.echo(f"lmgate service installed ({name}, {plan.scope}){where}:")
    for line in outcome.done:
        typer.echo(f"  {line}")
    if why:
        typer.echo(f"lmgate: {why}")
    if outcome.skipped:
        typer.echo("  not run (run them to start it now):")
        for line in outcome.skipped:
            typer.echo(f"    {line}")
    for line in outcome.failed:
        typer.echo(f"lmgate: failed: {line}", err=True)
    for note in plan.notes:
        typer.echo(f"note: {note}")
    typer.echo(f"to undo: lmgate service uninstall{flags} (the data dir {spec.data_dir} stays)")
    if outcome.failed:
        raise typer.Exit(1)


@service_app.command("uninstall")
@option_group("target", Target)
def uninstall_command(
    target: Target = _TARGET,
) -> None:
    """Stop the service and remove what `install` wrote (the data dir and keys stay)."""
    name, scope, plan, spec = _resolve(target)
    live, _ = _live(name, target.root)
    outcome = uninstall(plan, target.root, live=live)
    if not outcome.done:
        typer.echo(f"lmgate: no {plan.scope} service of lmgate is installed here")
        return
    typer.echo(f"lmgate service removed ({name}, {plan.scope}):")
    for line in outcome.done:
        typer.echo(f"  {line}")
    for line in outcome.skipped:
        typer.echo(f"  not run: {line}")
    typer.echo(f"kept: the data dir {spec.data_dir} (state and keys)")
    if scope and name == "linux":
        typer.echo(f"kept: the user '{systemd.USER}' (userdel {systemd.USER} removes it)")


def _resolve(target: Target) -> tuple[str, bool, Plan, ServiceSpec]:
    settings, origins = resolve_settings(config=target.config, data_dir=target.data_dir)
    name = _platform(target.platform)
    scope = _system(target.system)
    spec, _ = _spec(name, scope, settings, origins)
    return name, scope, _plan(name, scope, spec, target.run_as), spec


@service_app.command("status")
@option_group("target", Target)
def status_command(
    target: Target = _TARGET,
) -> None:
    """What is installed, and what the service manager says of the service."""
    name, _, plan, _ = _resolve(target)
    found = installed(plan, target.root)
    for what, present in found:
        typer.echo(f"{'installed' if present else 'missing  '}  {what}")
    if not any(present for _, present in found):
        typer.echo(f"lmgate: no {plan.scope} service of lmgate is installed")
        raise typer.Exit(3)
    live, why = _live(name, target.root)
    if not live or not tool(plan.status):
        typer.echo(f"lmgate: {why or 'the service manager is not available here'}")
        return
    raise typer.Exit(subprocess.run(plan.status, check=False).returncode)


@service_app.command("logs")
@option_group("target", Target)
def logs_command(
    lines: Annotated[int, typer.Option("--lines", "-n", help="How many recent lines.")] = 50,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing.")] = False,
    target: Target = _TARGET,
) -> None:
    """The service's recent log lines (journalctl on Linux, its log files elsewhere)."""
    name, _, plan, _ = _resolve(target)
    if plan.logs:
        live, why = _live(name, target.root)
        if not live or not tool(plan.logs):
            typer.echo(f"lmgate: {why or 'journalctl is not available here'}", err=True)
            raise typer.Exit(1)
        command = [*plan.logs, "--lines", str(lines), *(["--follow"] if follow else [])]
        raise typer.Exit(subprocess.run(command, check=False).returncode)
    shown = False
    for log in plan.log_files:
        path = under(target.root, log)
        if not path.exists():
            continue
        shown = True
        typer.echo(f"==> {log}")
        with path.open(errors="replace") as handle:
            for line in deque(handle, maxlen=lines):
                typer.echo(line.rstrip("\n"))
    if not shown:
        typer.echo("lmgate: no log file yet: " + ", ".join(str(p) for p in plan.log_files))
        raise typer.Exit(1)
    if follow:
        _follow([under(target.root, log) for log in plan.log_files])


def _follow(paths: list[Path]) -> None:
    """New lines of the log files as they come, until interrupted."""
    import time

    handles = []
    for path in paths:
        if path.exists():
            handle = path.open(errors="replace")
            handle.seek(0, os.SEEK_END)
            handles.append(handle)
    try:
        while True:
            quiet = True
            for handle in handles:
                for line in handle:
                    quiet = False
                    typer.echo(line.rstrip("\n"))
            if quiet:
                time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        for handle in handles:
            handle.close()
