"""Loading through LM Studio's `lms` CLI, when it is installed on the gateway's machine.

`lms load` takes what REST cannot: the GPU offload ratio, an instance identifier, an idle TTL
and parallel predictions (reference §9.1). What was applied is read back with `lms ps --json`:
a field `ps` shows with another value is reported as not applied; one it does not show (the
GPU ratio) counts as applied because `lms` took it and loaded. `lms` is pointed at the
configured upstream with `--port` (and `--host` when that is not this machine).

The binary: `LMGATE_LMS_PATH`, else `lms` on PATH, else LM Studio's install locations.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson

from lmgate.errors import NotFound
from lmgate.loading.errors import LoadFailed, LoadTimedOut
from lmgate.loading.fields import LMS, asked_of, fields_of, needs
from lmgate.loading.process import Ran, TimedOut, run
from lmgate.loading.secrets import summarize
from lmgate.loading.surface import LoadSpec, Progress, SurfaceLoad

CHECK_LIMIT_S = 15.0  # `lms version`, `lms ps`
UNLOAD_LIMIT_S = 60.0
RECHECK_S = 60.0  # how long a found (or missing) `lms` is believed
_PERCENT = re.compile(r"(\d{1,3}(?:\.\d+)?)\s*%")
_LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})
# What `lms ps --json` shows, in the gateway's names.
_PS_FIELDS = {"contextLength": "contextLength", "parallel": "parallel", "identifier": "identifier"}


def install_locations() -> list[Path]:
    """Where LM Studio puts `lms` (it adds that folder to PATH only for new shells)."""
    home = Path.home()
    if sys.platform == "win32":
        profile = Path(os.environ.get("USERPROFILE") or home)
        return [profile / ".lmstudio" / "bin" / "lms.exe", profile / ".cache/lm-studio/bin/lms.exe"]
    found = [home / ".lmstudio" / "bin" / "lms", home / ".cache" / "lm-studio" / "bin" / "lms"]
    if sys.platform == "darwin":
        found.append(Path("/Applications/LM Studio.app/Contents/Resources/app/.webpack/lms"))
    return found


def locate(configured: str | None) -> Path | None:
    """The `lms` to run: the configured one (even if absent: then none), else PATH, else the
    install locations. `off` (or `none`, `false`, `no`) never runs one."""
    if configured is not None and configured.strip().lower() in ("off", "none", "false", "no"):
        return None
    if configured is not None:
        path = Path(configured).expanduser()
        return path if path.is_file() and os.access(path, os.X_OK) else None
    on_path = shutil.which("lms")
    if on_path:
        return Path(on_path)
    for path in install_locations():
        if path.is_file() and os.access(path, os.X_OK):
            return path
    return None


def target_args(upstream: str) -> list[str] | None:
    """`--host`/`--port` naming the upstream for `lms`, or None when `lms` cannot reach it
    (it speaks plain websockets and takes no IPv6 address literal)."""
    parts = urlsplit(upstream)
    host = parts.hostname or "127.0.0.1"
    if parts.scheme != "http":
        return None
    port = str(parts.port or 80)
    if host in _LOOPBACK:
        return ["--port", port]
    if ":" in host:
        return None
    return ["--host", host, "--port", port]


def _gpu_arg(ratio: Any) -> str:
    if ratio in ("max", "off"):
        return str(ratio)
    if isinstance(ratio, int | float) and ratio >= 1:
        return "max"
    if isinstance(ratio, int | float) and ratio <= 0:
        return "off"
    return f"{float(ratio):g}"


def _ps_entries(ran: Ran) -> list[dict[str, Any]]:
    """`lms ps --json`: a JSON list of loaded instances (maybe after log lines)."""
    text = ran.stdout.strip()
    start = text.find("[")
    try:
        data = orjson.loads(text[start:]) if start >= 0 else None
    except orjson.JSONDecodeError:
        data = None
    if not isinstance(data, list):
        raise LoadFailed("lms ps --json did not print a list of loaded models")
    return [e for e in data if isinstance(e, dict) and isinstance(e.get("identifier"), str)]


class LmsSurface:
    name = LMS

    def __init__(
        self,
        configured: str | None,
        upstream: str,
        is_lmstudio: Callable[[], Awaitable[bool]],
        *,
        load_timeout: float,
        secrets: tuple[str, ...] = (),
    ) -> None:
        self.configured = configured
        self.target = target_args(upstream)
        self._is_lmstudio = is_lmstudio
        self.load_timeout = load_timeout
        self.secrets = secrets
        self.binary: Path | None = None
        self.why_not: str | None = None
        self._checked_at = -RECHECK_S
        self._lock = asyncio.Lock()

    def fields(self) -> frozenset[str]:
        return fields_of(LMS)

    async def available(self) -> bool:
        """The upstream is LM Studio, `lms` is found and `lms version` answers (that part
        believed for `RECHECK_S`)."""
        if not await self._is_lmstudio():
            self.why_not = "the upstream is not LM Studio (no /lmstudio-greeting)"
            return False
        async with self._lock:  # one check at a time: another caller waits for its answer
            return await self._check()

    async def _check(self) -> bool:
        if time.monotonic() - self._checked_at < RECHECK_S:
            return self.binary is not None
        self._checked_at = time.monotonic()
        self.binary, self.why_not = None, None
        if self.target is None:
            self.why_not = "lms cannot reach this upstream (only plain http, no IPv6 literal)"
            return False
        if self.configured == "off":
            self.why_not = "turned off (LMGATE_LMS_PATH=off)"
            return False
        found = locate(self.configured)
        if found is None:
            where = self.configured or "PATH or LM Studio's install folders"
            self.why_not = f"no lms executable in {where}"
            return False
        try:
            ran = await run([str(found), "version"], limit_s=CHECK_LIMIT_S)
        except (OSError, TimedOut) as exc:
            self.why_not = f"lms version failed: {summarize(str(exc), self.secrets)}"
            return False
        if ran.code != 0:
            self.why_not = f"lms version exited with status {ran.code}"
            return False
        self.binary = found
        return True

    def _argv(self, *args: str) -> list[str]:
        if self.binary is None:
            raise LoadFailed("lms is not available: " + (self.why_not or "not checked"))
        return [str(self.binary), *args, *(self.target or [])]

    async def _run(self, *args: str, limit_s: float, progress: Progress | None = None) -> Ran:
        def seen(text: str) -> None:
            if progress is not None:
                for match in _PERCENT.finditer(text):
                    progress(min(float(match.group(1)), 100.0) / 100.0)

        try:
            return await run(self._argv(*args), limit_s=limit_s, on_text=seen)
        except TimedOut as exc:
            raise LoadTimedOut(f"lms {args[0]} {exc.args[0].split(' ', 1)[1]}") from None
        except OSError as exc:
            self._checked_at = -RECHECK_S  # look for it again next time
            raise LoadFailed(f"lms could not be run: {exc.strerror or exc}") from None

    def _failed(self, what: str, ran: Ran) -> LoadFailed:
        said = summarize(ran.stderr or ran.stdout, self.secrets) or "no message"
        if "not found" in said.lower() or "no model found" in said.lower():
            return _NotFound(f"{what} exited with status {ran.code}: {said}")
        return LoadFailed(f"{what} exited with status {ran.code}: {said}")

    async def loaded(self) -> list[dict[str, Any]]:
        """What `lms ps --json` lists now."""
        ran = await self._run("ps", "--json", limit_s=CHECK_LIMIT_S)
        if ran.code != 0:
            raise self._failed("lms ps", ran)
        return _ps_entries(ran)

    async def load(self, spec: LoadSpec, progress: Progress) -> SurfaceLoad:
        asked = asked_of(spec)
        args = ["load", spec.model]
        flags = {
            "gpu.ratio": "--gpu",
            "contextLength": "--context-length",
            "parallel": "--parallel",
            "ttl": "--ttl",
            "identifier": "--identifier",
        }
        not_applied: dict[str, str] = {}
        for name, value in asked.items():
            flag = flags.get(name)
            if flag is None:
                not_applied[name] = f"{needs(name)}: lms load has no such option"
            else:
                args += [flag, _gpu_arg(value) if name == "gpu.ratio" else str(value)]
        args.append("--yes")
        before = {e["identifier"] for e in await self.loaded()}
        started = time.monotonic()
        ran = await self._run(*args, limit_s=self.load_timeout, progress=progress)
        seconds = time.monotonic() - started
        if ran.code != 0:
            await self._clean_up(spec.model, before)
            raise self._failed("lms load", ran)
        entry = self._new_entry(await self.loaded(), spec, before)
        if entry is None:
            raise LoadFailed(f"lms load said it loaded {spec.model}, but lms ps does not list it")
        progress(1.0)
        effective = {name: entry[key] for name, key in _PS_FIELDS.items() if key in entry}
        if isinstance(entry.get("ttlMs"), int | float):
            effective["ttl"] = entry["ttlMs"] / 1000
        applied: dict[str, Any] = {}
        for name, value in asked.items():
            if name in not_applied:
                continue
            shown = effective.get(name)
            if shown is None or shown == value:
                applied[name] = value
            else:
                not_applied[name] = f"LM Studio loaded it with {shown!r}"
        return SurfaceLoad(
            surface=LMS,
            instance_id=str(entry["identifier"]),
            seconds=seconds,
            applied=applied,
            not_applied=not_applied,
            effective=effective,
        )

    @staticmethod
    def _new_entry(
        entries: list[dict[str, Any]], spec: LoadSpec, before: set[str]
    ) -> dict[str, Any] | None:
        if spec.identifier is not None:
            return next((e for e in entries if e["identifier"] == spec.identifier), None)
        new = [e for e in entries if e["identifier"] not in before]
        own = [e for e in new if e.get("modelKey") in (spec.model, None)]
        picked = own or new
        return picked[0] if picked else None

    async def _clean_up(self, model: str, before: set[str]) -> None:
        """A load that failed part way may have left an instance: unload what it made."""
        try:
            for entry in await self.loaded():
                if entry["identifier"] not in before and entry.get("modelKey") in (model, None):
                    await self.unload(entry["identifier"])
        except (LoadFailed, LoadTimedOut):
            pass  # the failure itself is what the caller reports

    async def unload(self, instance_id: str) -> None:
        ran = await self._run("unload", instance_id, limit_s=UNLOAD_LIMIT_S)
        if ran.code != 0:
            raise self._failed("lms unload", ran)


class _NotFound(LoadFailed):
    status = NotFound.status
    type = NotFound.type
    code = "model_not_found"
