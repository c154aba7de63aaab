"""Linux: a hardened systemd unit, system-wide under a dedicated user or in the user's manager.

The unit holds no setting itself: `EnvironmentFile=` (0600, read by systemd before privileges
are dropped) carries them, keys included. The sandbox leaves the gateway its data dir to write
and the network; `AF_NETLINK` stays allowed because listing this machine's addresses (the
exposure checks, `0.0.0.0` host names) asks the kernel through it.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

from lmgate.service.spec import Plan, ServiceFile, ServiceSpec

UNIT = "lmgate.service"
USER = "lmgate"
SYSTEM_DATA = PurePosixPath("/var/lib/lmgate")
SYSTEM_UNIT_DIR = PurePosixPath("/etc/systemd/system")
SYSTEM_ENV = PurePosixPath("/etc/lmgate/lmgate.env")
SYSUSERS = PurePosixPath("/etc/sysusers.d/lmgate.conf")
SYSTEM_TARGET = "multi-user.target"
USER_TARGET = "default.target"


def _arg(word: str) -> str:
    """A word of ExecStart=: quoted when it has a space, `%` and `$` escaped."""
    text = word.replace("%", "%%").replace("$", "$$")
    if any(c.isspace() or c in "\"'\\;" for c in text):
        text = '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return text


def _path(path: PurePosixPath | Path) -> str:
    text = str(path).replace("%", "%%")
    return f'"{text}"' if any(c.isspace() for c in text) else text


_TMP = (PurePosixPath("/tmp"), PurePosixPath("/var/tmp"))


def _uses_tmp(spec: ServiceSpec) -> bool:
    """Whether the data dir or a file the service reads (a certificate, the config) lies in
    /tmp or /var/tmp: a private /tmp would hide it, and the service would not start."""
    paths = [str(spec.data_dir), *(e.value for e in spec.env if e.value.startswith("/"))]
    return any(PurePosixPath(p).is_relative_to(tmp) for p in paths for tmp in _TMP)


def unit(spec: ServiceSpec, *, system: bool, env_file: PurePosixPath) -> str:
    data = PurePosixPath(spec.data_dir)
    lines = [
        "[Unit]",
        "Description=lmgate: a secure LAN gateway in front of LM Studio",
        "Wants=network-online.target",
        "After=network-online.target",
        "",
        "[Service]",
        "Type=exec",
        f"ExecStart={' '.join(_arg(w) for w in spec.argv)}",
        f"EnvironmentFile={_path(env_file)}",
        "Environment=PYTHONUNBUFFERED=1",
        "Restart=on-failure",
        "RestartSec=2",
        # answers in progress get LMGATE_SHUTDOWN_GRACE after SIGTERM; systemd waits longer
        f"TimeoutStopSec={int(spec.shutdown_grace) + 15}",
        "KillSignal=SIGTERM",
        f"WorkingDirectory={_path(data)}",
        "UMask=0077",
    ]
    if system:
        lines += [f"User={USER}", f"Group={USER}"]
        if data == SYSTEM_DATA:
            lines += ["StateDirectory=lmgate", "StateDirectoryMode=0700"]
        if spec.port < 1024:
            lines += [
                "AmbientCapabilities=CAP_NET_BIND_SERVICE",
                "CapabilityBoundingSet=CAP_NET_BIND_SERVICE",
            ]
        else:
            lines.append("CapabilityBoundingSet=")
        lines += [
            "PrivateDevices=yes",
            "ProtectKernelTunables=yes",
            "ProtectKernelModules=yes",
            "ProtectKernelLogs=yes",
            "ProtectControlGroups=yes",
            "ProtectClock=yes",
            "ProtectHostname=yes",
            "ProtectProc=invisible",
            "RestrictNamespaces=yes",
            "RestrictSUIDSGID=yes",
            "RemoveIPC=yes",
        ]
    lines += [
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=read-only",
        f"ReadWritePaths={_path(data)}",
        *(["PrivateTmp=yes"] if not _uses_tmp(spec) else []),
        "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX AF_NETLINK",
        "RestrictRealtime=yes",
        "LockPersonality=yes",
        "SystemCallArchitectures=native",
        "",
        "[Install]",
        f"WantedBy={SYSTEM_TARGET if system else USER_TARGET}",
        "",
    ]
    return "\n".join(lines)


def sysusers() -> str:
    """The dedicated user, for systemd-sysusers (how packages declare theirs)."""
    return (
        "# The user lmgate's system service runs as (systemd-sysusers).\n"
        f'u {USER} - "lmgate gateway" {SYSTEM_DATA} /usr/sbin/nologin\n'
    )


def plan(spec: ServiceSpec, *, system: bool, home: PurePosixPath) -> Plan:
    scope = "system" if system else "user"
    result = Plan("linux", scope)
    if system:
        unit_dir = SYSTEM_UNIT_DIR
        env_file = SYSTEM_ENV
        wants = unit_dir / f"{SYSTEM_TARGET}.wants" / UNIT
        ctl = ["systemctl"]
        journal = ["journalctl"]
    else:
        unit_dir = home / ".config/systemd/user"
        env_file = home / ".config/lmgate/lmgate.env"
        wants = unit_dir / f"{USER_TARGET}.wants" / UNIT
        ctl = ["systemctl", "--user"]
        journal = ["journalctl", "--user"]
    unit_path = unit_dir / UNIT
    env_text = spec.env_file()
    result.files.append(
        ServiceFile(unit_path, unit(spec, system=system, env_file=env_file).encode())
    )
    result.files.append(
        ServiceFile(
            env_file,
            env_text.encode(),
            0o600,
            secret=True,
            shown=spec.env_file(show_secrets=False),
        )
    )
    data = PurePosixPath(spec.data_dir)
    if system:
        result.files.append(ServiceFile(SYSUSERS, sysusers().encode()))
        result.commands.append(["systemd-sysusers", str(SYSUSERS)])
        if data != SYSTEM_DATA:  # StateDirectory= makes the default one, owned by the user
            result.dirs.append((data, 0o700))
            result.commands.append(["chown", "-R", f"{USER}:{USER}", str(data)])
    else:
        result.dirs.append((data, 0o700))
    result.links.append((wants, unit_path))  # what `systemctl enable` makes for WantedBy=
    result.commands += [[*ctl, "daemon-reload"], [*ctl, "enable", "--now", UNIT]]
    result.undo.append([*ctl, "disable", "--now", UNIT])
    result.after_undo.append([*ctl, "daemon-reload"])
    result.status = [*ctl, "status", "--no-pager", UNIT]
    result.logs = [*journal, "--unit", UNIT, "--no-pager"]
    if system:
        result.notes.append(
            f"the service runs as the user '{USER}'; manage its keys as that user: "
            f"sudo -u {USER} lmgate keys create --name NAME --data-dir {data}"
        )
    else:
        result.notes.append(
            "a user service runs while you are logged in; to start it at boot without a "
            "log-in, let your user manager outlive sessions: loginctl enable-linger $USER"
        )
    return result
