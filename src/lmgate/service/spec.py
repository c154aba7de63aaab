"""What a service runs, whatever the platform: the command, the data dir and the environment.

Every setting that was given (flag, env, `.env`, config file) is written out as its
`LMGATE_<NAME>` into one env file, so the service runs with exactly the settings that were
checked at install, and needs neither the config file nor the installer's environment later.
The file holds the keys: it is written owner-only, and shown masked unless asked.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import PurePath, PureWindowsPath
from typing import Any

import orjson
from pydantic import SecretStr

from lmgate.redaction import redact_url
from lmgate.settings import NO_LIMIT_ZERO, Settings

NAME = "lmgate"
# Always written: where it listens, what it fronts and where its state lives.
ALWAYS = ("host", "port", "upstream", "data_dir")
NOT_WRITTEN = frozenset({"config"})  # its values are written instead, one by one
ARGV = frozenset({"idle_sleep_command"})  # an argv: always a JSON list
OFF_WORDS = {"lmstudio_log_dir": "off"}  # None written as the word that means it
_SAFE = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.,/:@+=[]*%~")
MASK = "********"


class EnvValueError(ValueError):
    """A value that cannot be written into an env file safely."""


@dataclass(frozen=True, slots=True)
class EnvEntry:
    name: str
    value: str
    secret: bool


@dataclass(frozen=True, slots=True)
class ServiceSpec:
    """What the service runs: `argv` in `workdir` with the settings in `env`."""

    argv: tuple[str, ...]
    data_dir: PurePath
    env: tuple[EnvEntry, ...]
    port: int
    shutdown_grace: float
    name: str = NAME

    def env_file(self, *, show_secrets: bool = True) -> str:
        """The env file: `KEY=value` lines that systemd's EnvironmentFile= and python-dotenv
        (`.env`) read alike: plain words bare, anything else in single quotes (literal for
        both: no escapes, no `$` expansion)."""
        lines = [
            "# lmgate service settings, written by `lmgate service install`.",
            "# Keys are in here: keep this file readable by its owner only (0600).",
        ]
        for entry in self.env:
            shown = entry.value if show_secrets or not entry.secret else MASK
            lines.append(f"{entry.name}={quote(shown)}")
        return "\n".join(lines) + "\n"


def quote(value: str) -> str:
    if value and all(c in _SAFE for c in value):
        return value
    if "'" in value or "\n" in value or "\r" in value or "\\" in value:
        raise EnvValueError(
            "a value with a quote, backslash or line break cannot go into an env file"
        )
    return f"'{value}'"


def _secret(value: Any) -> bool:
    if isinstance(value, SecretStr):
        return True
    if isinstance(value, list) and any(isinstance(v, SecretStr) for v in value):
        return True
    return isinstance(value, str) and "://" in value and redact_url(value) != value


def env_text(field: str, value: Any) -> str | None:
    """A settings value as its env var would spell it; None when it is best left unset."""
    if value is None:
        if field in NO_LIMIT_ZERO:
            return "0"
        return OFF_WORDS.get(field)
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, PureWindowsPath):
        return value.as_posix()  # Windows takes `/` too; a `\\` would be an escape in `.env`
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, list):
        items = [v.get_secret_value() if isinstance(v, SecretStr) else str(v) for v in value]
        if field not in ARGV and all("," not in item for item in items):
            return ",".join(items)
        return orjson.dumps(items).decode()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def program() -> tuple[str, ...]:
    """This interpreter running lmgate: the install that was checked is the one that runs."""
    return (sys.executable, "-m", "lmgate", "serve")


def build_spec(
    settings: Settings, given: set[str], *, data_dir: PurePath, argv: tuple[str, ...] | None = None
) -> ServiceSpec:
    """The service for `settings`; `given`: the fields someone set (the settings origins)."""
    fields = (set(given) | set(ALWAYS)) - NOT_WRITTEN
    values = settings.model_copy(update={"data_dir": data_dir})
    entries: list[EnvEntry] = []
    for name in sorted(fields):
        if name not in Settings.model_fields:
            continue
        value = getattr(values, name)
        text = env_text(name, value)
        if text is not None:
            entries.append(EnvEntry(f"LMGATE_{name.upper()}", text, _secret(value)))
    return ServiceSpec(
        argv=argv or program(),
        data_dir=data_dir,
        env=tuple(entries),
        port=settings.port,
        shutdown_grace=settings.shutdown_grace,
    )


@dataclass(frozen=True, slots=True)
class ServiceFile:
    """A file the install writes. `path` is where it lives on the target system."""

    path: PurePath
    content: bytes
    mode: int = 0o644
    secret: bool = False  # holds keys: shown masked unless asked
    shown: str = ""  # what a dry run prints when the file is secret


@dataclass(slots=True)
class Plan:
    """Everything an install does on one platform, and how it is undone."""

    platform: str
    scope: str  # "system" or "user"
    files: list[ServiceFile] = field(default_factory=list)
    links: list[tuple[PurePath, PurePath]] = field(default_factory=list)  # (link, target)
    dirs: list[tuple[PurePath, int]] = field(default_factory=list)  # made for the service
    commands: list[list[str]] = field(default_factory=list)  # to start it
    undo: list[list[str]] = field(default_factory=list)  # to stop it, before files go
    after_undo: list[list[str]] = field(default_factory=list)  # once the files are gone
    status: list[str] = field(default_factory=list)
    logs: list[str] = field(default_factory=list)
    log_files: list[PurePath] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
