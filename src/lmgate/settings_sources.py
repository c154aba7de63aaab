"""Where settings come from: the TypeScript edition's env names, a camelCase TOML file, and a
last source that notes each value's origin in the words a person wrote (`--port`,
`LMGATE_PORT`, `GATEWAY_PORT`, `port in lmgate.toml`), so problems can be told in them.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dotenv import dotenv_values
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, TomlConfigSettingsSource

from lmgate.settings_values import parse_duration


def _ms_to_seconds(value: str) -> Any:
    """The edition's timeouts are milliseconds (0 = none); units are understood too. A value
    that is no duration passes through unchanged, for validation to report in its own name."""
    seconds = parse_duration(value, unit=0.001)
    if seconds is None:
        return value
    return None if seconds == 0 else seconds


def _allowlist(value: str) -> list[str]:
    items = [item.strip() for item in value.split(",") if item.strip()]
    return ["0.0.0.0/0", "::/0"] if "*" in items else items


# TypeScript edition name -> (our field, converter)
LEGACY_ENV: dict[str, tuple[str, Any]] = {
    "LMSTUDIO_BASE_URL": ("upstream", str),
    "GATEWAY_HOST": ("host", str),
    "GATEWAY_PORT": ("port", str),
    "GATEWAY_API_KEY": ("admin_key", str),
    "IP_ALLOWLIST": ("allow", _allowlist),
    "REQUIRE_AUTH_FOR_HEALTH": ("require_auth_for_health", str),
    "LOG_LEVEL": ("log_level", str),
    "PROXY_TIMEOUT": ("request_timeout", _ms_to_seconds),
    "PROXY_STREAM_TIMEOUT": ("stream_timeout", _ms_to_seconds),
}


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


class LegacyEnvSource(PydanticBaseSettingsSource):
    """Reads the TypeScript edition's env names, from the environment and from `./.env`."""

    def __init__(self, settings_cls: type[BaseSettings], dotenv_path: Path) -> None:
        super().__init__(settings_cls)
        self._dotenv_path = dotenv_path
        self.labels: dict[str, str] = {}  # field -> the edition's name it was read from

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # pragma: no cover - __call__ does the work

    def __call__(self) -> dict[str, Any]:
        values: dict[str, str | None] = {}
        if self._dotenv_path.is_file():
            values.update(dotenv_values(self._dotenv_path))
        in_env = {k: v for k, v in os.environ.items() if k in LEGACY_ENV}
        values.update(in_env)
        out: dict[str, Any] = {}
        for name, (field, convert) in LEGACY_ENV.items():
            raw = values.get(name)
            if raw is not None and raw.strip() != "":
                out[field] = convert(raw.strip())
                self.labels[field] = name if name in in_env else f"{name} (in .env)"
        return out


# TOML tables whose keys are settings named `<table>_<key>` (`[wake] mac` = `wake_mac`).
TABLES = frozenset({"wake"})


class CamelTomlSource(TomlConfigSettingsSource):
    """A TOML config file whose keys may be camelCase (`requireAuthForHealth`) or snake_case;
    the tables in `TABLES` hold settings named after them."""

    def __init__(self, settings_cls: type[BaseSettings], toml_file: Path) -> None:
        super().__init__(settings_cls, toml_file=toml_file)
        self.path = toml_file
        self.keys: dict[str, str] = {}  # field -> the key as written in the file

    def __call__(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in super().__call__().items():
            if _snake(key) in TABLES and isinstance(value, dict):
                for inner, item in value.items():
                    field = f"{_snake(key)}_{_snake(inner)}"
                    out[field] = item
                    self.keys[field] = f"{key}.{inner}"
                continue
            out[_snake(key)] = value
            self.keys[_snake(key)] = key
        return out


@dataclass(frozen=True, slots=True)
class Origin:
    """Where a setting's value came from, in the words the person used, and the raw value."""

    label: str  # `--port`, `LMGATE_PORT`, `LMGATE_PORT (in .env)`, `GATEWAY_PORT`, `port in x.toml`
    raw: Any
    kind: str  # flag, env, dotenv, edition, file, derived


Origins = dict[str, Origin]
_recording: ContextVar[Origins | None] = ContextVar("lmgate_settings_origins", default=None)


@contextmanager
def recording() -> Iterator[Origins]:
    """Settings built inside the block note where each value came from in the yielded dict
    (filled while the sources are read, so it is complete even when validation fails)."""
    found: Origins = {}
    token = _recording.set(found)
    try:
        yield found
    finally:
        _recording.reset(token)


# The TypeScript edition served /admin/* and /debug/* to every address its allowlist let in.
EDITION_ADMIN_ALLOW = "GATEWAY_API_KEY"


class OriginSource(PydanticBaseSettingsSource):
    """The last source: sees what the others read, notes where each value came from, and keeps
    the TypeScript edition's admin access for a configuration written for it (its
    `GATEWAY_API_KEY`, and no `LMGATE_ADMIN_ALLOW` anywhere): admin routes then follow the
    general allowlist, as they did there, and `lmgate serve` says so loudly."""

    def __init__(
        self,
        settings_cls: type[BaseSettings],
        legacy: LegacyEnvSource,
        toml: CamelTomlSource | None,
    ) -> None:
        super().__init__(settings_cls)
        self._legacy = legacy
        self._toml = toml

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # pragma: no cover - __call__ does the work

    def _labels(self, source: str, field: str) -> tuple[str, str]:
        env = f"LMGATE_{field.upper()}"
        if source == "InitSettingsSource":
            return "--" + field.replace("_", "-"), "flag"
        if source == "EnvSettingsSource":
            return env, "env"
        if source == "DotEnvSettingsSource":
            return f"{env} (in .env)", "dotenv"
        if source == "LegacyEnvSource":
            return self._legacy.labels.get(field, field), "edition"
        if self._toml is not None:
            return f"{self._toml.keys.get(field, field)} in {self._toml.path}", "file"
        return field, "file"  # pragma: no cover - no other source exists

    def __call__(self) -> dict[str, Any]:
        states = self.settings_sources_data
        state = self.current_state
        out: dict[str, Any] = {}
        if "admin_key" in states.get("LegacyEnvSource", {}) and "admin_allow" not in state:
            out["admin_allow"] = state.get("allow") or ["*"]
        found = _recording.get()
        if found is not None:
            for source, values in states.items():
                for field, raw in values.items():
                    if field not in found:
                        label, kind = self._labels(source, field)
                        found[field] = Origin(label, raw, kind)
            if out:
                found["admin_allow"] = Origin(EDITION_ADMIN_ALLOW, out["admin_allow"], "derived")
        return out
