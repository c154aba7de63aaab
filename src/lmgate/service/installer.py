"""Carrying out a `Plan`: files written (under `/`, or a packaging root), the links a platform's
enable would make, the platform's commands run when this is that platform, live; and undone.

Under `--root`, or where the service manager is not running (systemd not PID 1: a container,
a chroot), nothing is started: the files and links are exactly what a real install leaves, so
the system starts the service at its next boot, and the commands are listed for the user.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path, PurePath

from lmgate.service.spec import Plan

PLATFORMS = ("linux", "macos", "windows")


def this_platform() -> str:
    if sys.platform.startswith("linux"):
        return "linux"
    if sys.platform == "darwin":
        return "macos"
    if sys.platform in ("win32", "cygwin"):
        return "windows"
    return sys.platform


def under(root: Path | None, path: PurePath) -> Path:
    """`path` of the target system, as found under `root` (None: the real system)."""
    if root is None:
        return Path(path)
    rest = path.parts[1:] if path.anchor else path.parts
    drive = path.drive.rstrip(":")
    return root.joinpath(*([drive] if drive else []), *rest)


def manager_running(platform: str) -> bool:
    """Whether this machine's service manager can take the service now."""
    if platform == "linux":
        return Path("/run/systemd/system").is_dir()  # sd_booted(): systemd is PID 1
    return platform == this_platform()


def _run(command: list[str]) -> tuple[bool, str]:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, str(exc)
    text = (done.stderr or done.stdout).strip().splitlines()
    return done.returncode == 0, text[-1] if text else f"exit status {done.returncode}"


@dataclass(slots=True)
class Outcome:
    """What an install or uninstall did, in lines for the user."""

    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    live: bool = False


def _write(path: Path, content: bytes, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, content)
    finally:
        os.close(fd)
    os.chmod(tmp, mode)  # whatever the umask said
    os.replace(tmp, path)


def install(plan: Plan, root: Path | None, *, live: bool) -> Outcome:
    out = Outcome(live=live)
    for item in plan.files:
        target = under(root, item.path)
        _write(target, item.content, item.mode)
        out.done.append(f"wrote {item.path} ({item.mode:o})")
    for directory, mode in plan.dirs:
        target = under(root, directory)
        if not target.exists():
            target.mkdir(parents=True, mode=mode)
            out.done.append(f"made {directory} ({mode:o})")
    for link, points_to in plan.links:
        target = under(root, link)
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.is_symlink() or target.exists():
            target.unlink()
        target.symlink_to(points_to)
        out.done.append(f"linked {link} -> {points_to}")
    for command in plan.commands:
        shown = " ".join(command)
        if not live:
            out.skipped.append(shown)
            continue
        ok, said = _run(command)
        (out.done if ok else out.failed).append(shown if ok else f"{shown}: {said}")
        if not ok:
            break
    return out


def uninstall(plan: Plan, root: Path | None, *, live: bool) -> Outcome:
    """Stop the service, then remove every file and link the install made. The data dir, and
    the system user, stay: they hold the gateway's state and keys."""
    out = Outcome(live=live)
    for command in plan.undo:
        shown = " ".join(command)
        if not live:
            out.skipped.append(shown)
            continue
        ok, said = _run(command)
        (out.done if ok else out.skipped).append(shown if ok else f"{shown}: {said}")
    for link, _ in plan.links:
        target = under(root, link)
        if target.is_symlink() or target.exists():
            target.unlink()
            out.done.append(f"removed {link}")
    for item in plan.files:
        target = under(root, item.path)
        if target.exists() or target.is_symlink():
            target.unlink()
            out.done.append(f"removed {item.path}")
            _prune(target.parent, root)
    for command in plan.after_undo:
        if live:
            ok, said = _run(command)
            if ok:
                out.done.append(" ".join(command))
    return out


def _prune(directory: Path, root: Path | None) -> None:
    """Empty folders the install made for its files (`/etc/lmgate`, `service/`) go too."""
    keep = {"etc", "sysusers.d", "system", "user", "systemd", ".config", "LaunchAgents"}
    keep |= {"LaunchDaemons", "Library", "Application Support"}
    for _ in range(2):
        if directory == root or directory.name in keep or directory == directory.parent:
            return
        try:
            directory.rmdir()
        except OSError:
            return
        directory = directory.parent


def installed(plan: Plan, root: Path | None) -> list[tuple[str, bool]]:
    """(what, present) for each file and link of the plan."""
    found = [(str(item.path), under(root, item.path).exists()) for item in plan.files]
    found += [
        (f"{link} -> {points_to}", under(root, link).is_symlink()) for link, points_to in plan.links
    ]
    return found


def tool(command: list[str]) -> bool:
    return bool(command) and shutil.which(command[0]) is not None
