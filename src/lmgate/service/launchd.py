"""macOS: a launchd job, a LaunchAgent (the user's, while logged in) or a LaunchDaemon (at
boot, as the user given). launchd has no env file, so the settings go into a `.env` (0600) in
the job's working directory, which lmgate reads at start; output goes to log files under the
data dir, since launchd keeps none itself."""

from __future__ import annotations

import plistlib
from pathlib import PurePosixPath

from lmgate.service.spec import Plan, ServiceFile, ServiceSpec

LABEL = "lmgate"
SYSTEM_BASE = PurePosixPath("/Library/Application Support/lmgate")
SYSTEM_DATA = SYSTEM_BASE / "data"


def plist(
    spec: ServiceSpec, *, workdir: PurePosixPath, logs: PurePosixPath, user: str | None
) -> bytes:
    job: dict[str, object] = {
        "Label": LABEL,
        "ProgramArguments": list(spec.argv),
        "WorkingDirectory": str(workdir),
        "RunAtLoad": True,
        "KeepAlive": {"SuccessfulExit": False},  # again after a crash, not after a clean stop
        "ThrottleInterval": 5,
        "ExitTimeOut": int(spec.shutdown_grace) + 15,
        "ProcessType": "Standard",
        "EnvironmentVariables": {"PYTHONUNBUFFERED": "1"},
        "StandardOutPath": str(logs / "lmgate.out.log"),
        "StandardErrorPath": str(logs / "lmgate.err.log"),
        "Umask": 0o077,
    }
    if user is not None:
        job["UserName"] = user
    return plistlib.dumps(job, sort_keys=False)


def plan(spec: ServiceSpec, *, system: bool, home: PurePosixPath, uid: int, user: str) -> Plan:
    result = Plan("macos", "system" if system else "user")
    if system:
        path = PurePosixPath("/Library/LaunchDaemons") / f"{LABEL}.plist"
        workdir = SYSTEM_BASE / "service"
        domain = "system"
    else:
        path = home / "Library/LaunchAgents" / f"{LABEL}.plist"
        workdir = home / "Library/Application Support/lmgate/service"
        domain = f"gui/{uid}"
    data = PurePosixPath(spec.data_dir)
    logs = data / "logs"
    content = plist(spec, workdir=workdir, logs=logs, user=user if system else None)
    result.files.append(ServiceFile(path, content))
    result.files.append(
        ServiceFile(
            workdir / ".env",
            spec.env_file().encode(),
            0o600,
            secret=True,
            shown=spec.env_file(show_secrets=False),
        )
    )
    result.dirs += [(workdir, 0o700), (data, 0o700), (logs, 0o700)]
    if system:
        result.commands.append(["chown", "-R", user, str(workdir), str(data)])
    result.commands.append(["launchctl", "bootstrap", domain, str(path)])
    result.undo.append(["launchctl", "bootout", f"{domain}/{LABEL}"])
    result.status = ["launchctl", "print", f"{domain}/{LABEL}"]
    result.log_files = [logs / "lmgate.err.log", logs / "lmgate.out.log"]
    if not system:
        result.notes.append(
            "a LaunchAgent runs while you are logged in; for a gateway at boot, install "
            "with --system (a LaunchDaemon, as --run-as USER)"
        )
    return result
