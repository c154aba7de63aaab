"""Settings: one frozen value built from flags > env > .env > legacy env > TOML file > defaults.

`LMGATE_<NAME>` env vars map to the fields below. The TypeScript edition's env names are
honoured as aliases (see `LEGACY_ENV`) so its users can switch without touching their setup.
While settings are built under `recording()`, each value's origin (the flag, env var or TOML
key a person actually wrote) is noted, so that problems can be reported in those words (the
sources live in `settings_sources.py`, the parsing of typed values in `settings_values.py`).
"""

from __future__ import annotations

import ipaddress
import os
import re
import shlex
from pathlib import Path
from typing import Annotated, Any, Literal

import orjson
import platformdirs
from pydantic import Field, SecretStr, ValidationInfo, field_validator, model_validator
from pydantic_core import PydanticCustomError
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from lmgate.guard.cors import check_origins
from lmgate.redaction import redact_url
from lmgate.settings_sources import (
    EDITION_ADMIN_ALLOW,
    LEGACY_ENV,
    CamelTomlSource,
    LegacyEnvSource,
    Origin,
    Origins,
    OriginSource,
    recording,
)
from lmgate.settings_values import normalize_upstream, parse_duration
from lmgate.upstream import wake
from lmgate.upstreams.config import DEFAULT_NAME, UpstreamConfig, check_unique, parse_upstreams

__all__ = [
    "EDITION_ADMIN_ALLOW",
    "LEGACY_ENV",
    "Origin",
    "Origins",
    "Settings",
    "explicit_upstream",
    "is_loopback_host",
    "recording",
]

DEFAULT_UPSTREAM = "http://127.0.0.1:1234"
MAX_WORKERS = 64
FORWARDED_HEADERS = ("X-Forwarded-For", "Forwarded")

CommaList = Annotated[list[str], NoDecode]
# A name, `*.name`, `*`, an IPv4 address or an IPv6 one (bracketed or not); no port.
_HOST_NAME = re.compile(r"\*|(?:\*\.)?[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*\.?|\[?[0-9A-Fa-f:.]+\]?")

# Settings in seconds, which also take a duration with a unit (`10m`, `500ms`).
DURATIONS = (
    "connect_timeout",
    "request_timeout",
    "stream_timeout",
    "send_timeout",
    "shutdown_grace",
    "keepalive_seconds",
    "sync_interval",
    "load_timeout",
    "header_timeout",
    "body_timeout",
    "auth_block_seconds",
    "usage_flush_seconds",
    "lmstudio_log_poll_seconds",
    "wake_timeout",
    "idle_sleep_after",
    "download_poll_seconds",
)
NO_LIMIT_ZERO = frozenset(
    {"request_timeout", "stream_timeout", "send_timeout", "idle_sleep_after"}
)  # 0 (or empty) = no limit (for idle_sleep_after: off)
NO_LIMIT_WORDS = frozenset({"", "none", "off", "never"})
LEVEL_SYNONYMS = {"warn": "warning", "fatal": "critical", "trace": "debug"}


class Settings(BaseSettings):
    """Everything lmgate can be told. Frozen: runtime-editable state lives in SQLite."""

    model_config = SettingsConfigDict(
        env_prefix="LMGATE_", env_file=".env", extra="ignore", frozen=True
    )

    host: str = Field("127.0.0.1", description="Address to listen on.")
    port: int = Field(1235, ge=0, le=65535, description="Port to listen on.")
    upstream: str = Field(DEFAULT_UPSTREAM, description="Base URL of LM Studio (or any server).")
    config: Path | None = Field(None, description="TOML config file.")
    data_dir: Path = Field(
        default_factory=lambda: Path(platformdirs.user_data_dir("lmgate")),
        description="Where state (SQLite) is kept.",
    )
    admin_key: SecretStr | None = Field(None, description="Bootstrap key with admin scope.")
    metrics_key: SecretStr | None = Field(
        None, description="Bootstrap key with metrics scope: GET /metrics and nothing else."
    )
    api_keys: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list, description="Bootstrap keys with inference scope."
    )
    allow: CommaList = Field(
        default_factory=list, description="Client CIDRs allowed in; empty = everyone."
    )
    trusted_proxies: CommaList = Field(
        default_factory=list, description="Peers whose forwarding header is honoured."
    )
    forwarded_header: str = Field(
        "X-Forwarded-For",
        description="The one header read from trusted proxies: X-Forwarded-For or Forwarded "
        "(the other is ignored).",
    )
    upstream_token: SecretStr | None = Field(None, description="Bearer token sent upstream.")
    upstream_affinity_margin: int | None = Field(
        None,
        ge=0,
        description="With several upstreams: keep a key's requests for a model on the upstream "
        "it used last while that runs at most this many answers more than the others; "
        "unset = off.",
    )
    upstreams: Annotated[list[UpstreamConfig], NoDecode] = Field(
        default_factory=list,
        description="Several upstreams: `name=url,name2=url2`, or `[[upstreams]]` tables in the "
        "file; the first is the primary. Unset: `upstream` alone.",
    )
    connect_timeout: float = Field(5.0, gt=0, description="Upstream connect timeout (s).")
    request_timeout: float | None = Field(
        600.0, description="Upstream timeout for a non-streaming answer (s); none = no limit."
    )
    stream_timeout: float | None = Field(
        300.0, description="Longest silence allowed inside a stream (s); none = no limit."
    )
    send_timeout: float | None = Field(
        60.0, description="Time the upstream has to take a request body (s); none = no limit."
    )
    shutdown_grace: float = Field(
        30.0,
        ge=0,
        description="On SIGTERM/SIGINT, how long answers in progress may still run (s) before "
        "they are ended with an error.",
    )
    max_body_bytes: int = Field(32 * 1024 * 1024, gt=0, description="Largest request body.")
    require_auth_for_health: bool = Field(False, description="Protect /health with a key too.")
    insecure_no_auth: bool = Field(False, description="Allow a non-loopback host with no key.")
    log_level: str = Field(
        "info", description="error, warn (warning), info or debug; critical too."
    )
    workers: int = Field(
        1, description="Processes serving the port; state is shared through SQLite (1-64)."
    )
    keepalive_seconds: float = Field(30.0, gt=0, description="Debug-stream heartbeat interval.")
    # model management
    sync_interval: float = Field(5.0, gt=0, description="Seconds between model-list polls.")
    load_timeout: float = Field(600.0, gt=0, description="Longest wait for a model load (s).")
    lms_path: str | None = Field(
        None,
        description="LM Studio's `lms` CLI, used to load what REST cannot; default: PATH, then "
        "LM Studio's install folders; 'off' = never.",
    )
    on_demand_load: bool = Field(
        False, description="Load a requested, unloaded model with its profile before forwarding."
    )
    max_loaded_models: int | None = Field(
        None, ge=1, description="With on-demand loading, unload least recently used beyond this."
    )
    auto_reload: bool = Field(
        False, description="Reload the active model with its profile when it disappears upstream."
    )
    # the scheduler
    model_slots: int | None = Field(
        None,
        ge=1,
        description="Answers at once per model when the upstream reports no "
        "`parallel`; unset = 4 (1 for LM Studio 0.3).",
    )
    queue_max: int = Field(
        256, ge=0, description="Most requests waiting for a slot or a load (all workers together)."
    )
    queue_timeout: float = Field(300.0, gt=0, description="Longest wait in the queue (s).")
    queue_sse_comments: bool = Field(
        True,
        description="A streaming request that waits over a second gets its answer started "
        "and `: queued position=N eta_ms=M` comment lines until it is admitted.",
    )
    switch_max_wait: float = Field(
        60.0, gt=0, description="Longest a request waits while others keep its model away (s)."
    )
    model_memory_budget: int | None = Field(
        None, ge=1, description="Bytes of models loaded at once (`20GiB`, `512MB`); unset = none."
    )
    model_ttl: float = Field(
        0.0, ge=0, description="Unload a model lmgate loaded after this many idle s; 0 = never."
    )
    manage_all_models: bool = Field(
        False, description="Idle TTL and eviction also for models someone else loaded."
    )
    keep_active_loaded: bool = Field(
        False, description="Load the active model again after an idle unload."
    )
    key_loads_default: Literal["allow", "deny"] = Field(
        "allow",
        description="Whether inference keys that never chose (`keys create --loads`) may make "
        "lmgate load a model; admin keys may unless told otherwise.",
    )
    preload: CommaList = Field(
        default_factory=list,
        description="Model keys loaded at start through the scheduler (primary worker only).",
    )

    # security hardening
    admin_allow: CommaList = Field(
        default_factory=lambda: ["127.0.0.0/8", "::1/128"],
        description="Client CIDRs that may reach admin routes; default loopback; * = everyone.",
    )
    metrics_allow: CommaList | None = Field(
        None,
        description="Client CIDRs that may scrape /metrics with a metrics key; default (or "
        "empty) = the same as --allow; * = everyone.",
    )
    cors_origins: CommaList = Field(
        default_factory=list, description="Browser origins allowed (CORS); empty = off; * = any."
    )
    allowed_hosts: CommaList = Field(
        default_factory=list,
        description="Host names answered without keys besides loopback names and the listen "
        "address (DNS rebinding protection); *.domain = its subdomains; * = any.",
    )
    tls_cert: Path | None = Field(None, description="TLS certificate (PEM) to serve HTTPS.")
    tls_key: Path | None = Field(None, description="Private key (PEM) of the TLS certificate.")
    max_header_bytes: int = Field(
        64 * 1024, ge=1024, description="Largest request head (request line and headers)."
    )
    header_timeout: float = Field(
        10.0, gt=0, description="Seconds a client has to send a request's head."
    )
    body_timeout: float = Field(
        60.0, gt=0, description="Seconds a client has to send a whole request body."
    )
    max_json_depth: int = Field(
        64, ge=2, description="Deepest nesting accepted in a JSON request body."
    )
    max_connections_per_client: int | None = Field(
        None,
        ge=0,
        description="Connections one client address (IPv6: its /64) may hold open at once; "
        "unset = 64, loopback not capped; set = that cap for loopback too; 0 = no cap.",
    )
    max_body_memory_bytes: int | None = Field(
        None,
        ge=1,
        description="Bytes of request bodies held in memory at once, all requests together; "
        "unset = 8 x max_body_bytes; below max_body_bytes, it caps each body too.",
    )
    auth_fail_limit: int = Field(
        20, ge=0, description="Bad keys from one address within a minute before a block; 0 = off."
    )
    auth_block_seconds: float = Field(
        60.0, gt=0, description="First block after too many bad keys; doubles on repeats."
    )
    auth_fail_exempt: CommaList = Field(
        default_factory=lambda: ["127.0.0.1/32", "::1/128"],
        description="Client CIDRs whose bad keys are never damped (never blocked); default "
        "this machine's loopback address, so a local script cannot lock the operator out; "
        "empty = none.",
    )

    # waking and sleeping the upstream machine (`lmgate.upstream.wake`)
    wake_mac: str | None = Field(
        None, description="MAC address of the upstream machine: wake it when it does not answer."
    )
    wake_broadcast: str = Field(
        "255.255.255.255:9", description="Where the magic packet goes: address[:port]."
    )
    wake_timeout: float = Field(
        120.0, gt=0, description="Longest wait for a woken upstream to answer (s)."
    )
    idle_sleep_after: float | None = Field(
        None, description="Put the upstream to sleep after this long without requests; unset = off."
    )
    idle_sleep_command: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Command (argv, no shell) that puts the upstream to sleep.",
    )
    idle_sleep_url: str | None = Field(
        None, description="URL POSTed to put the upstream to sleep (instead of a command)."
    )

    # observability
    debug_history: int = Field(
        1000, ge=0, description="Recent events kept so /debug/stream can resume (Last-Event-ID)."
    )
    debug_queue_size: int = Field(
        1000, ge=1, description="Events queued per /debug/stream subscriber before it loses some."
    )
    debug_stream_batch_ms: float = Field(
        50.0,
        ge=0,
        le=60_000,
        description="How long /debug/stream gathers events into one write (0: each at once).",
    )
    debug_completed_requests: int = Field(
        100, ge=0, description="Finished requests listed by /debug/requests."
    )
    usage_accounting: bool = Field(
        True,
        description="Read token usage from answers (asking streams for it) and record it per "
        "key and model in SQLite; off = answers are never parsed.",
    )
    usage_flush_seconds: float = Field(
        1.0, gt=0, description="How often recorded usage is written to SQLite, in one batch."
    )
    lmstudio_log_dir: Path | None = Field(
        None,
        validate_default=True,
        description="LM Studio's server-logs folder to follow; default ~/.lmstudio/server-logs "
        "when it exists; empty or 'off' = none.",
    )
    lmstudio_log_poll_seconds: float = Field(
        0.5, gt=0, description="How often the LM Studio log is checked for new lines."
    )
    lms_telemetry: bool = Field(
        True,
        description="Follow LM Studio through `lms log stream --json` when `lms` is found "
        "(the log folder is then the fallback).",
    )
    download_poll_seconds: float = Field(
        1.0, gt=0, description="How often a model download's progress is asked for."
    )
    log_file: Path | None = Field(None, description="Also write the JSON log lines here.")
    log_file_max_bytes: int = Field(
        10 * 1024 * 1024, ge=1024, description="Size at which the log file is rotated."
    )
    log_file_backups: int = Field(5, ge=0, description="Rotated log files kept.")
    log_prompts: bool = Field(
        False, description="Log prompts and answers (redacted, truncated). Off by default."
    )
    log_prompt_chars: int = Field(
        500, ge=1, description="Longest prompt or answer text a log line or event carries."
    )
    max_tracked_models: int = Field(
        100,
        ge=0,
        le=100_000,
        description="Model names the upstream does not offer that statistics, Prometheus and "
        "usage keep by name; further ones are counted as 'other'.",
    )

    @field_validator("lms_path", mode="before")
    @classmethod
    def _lms_path(cls, value: Any) -> Any:
        if value is not None and str(value).strip().lower() in ("", "off", "none", "false"):
            return "off"
        return value

    @field_validator("lmstudio_log_dir", mode="before")
    @classmethod
    def _lmstudio_log_dir(cls, value: Any) -> Any:
        if value is None:  # not configured: LM Studio's own folder, if this machine has one
            found = Path.home() / ".lmstudio" / "server-logs"
            return found if found.is_dir() else None
        if str(value).strip().lower() in ("", "off", "none", "false"):
            return None
        return value

    @field_validator("wake_mac")
    @classmethod
    def _wake_mac(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        return wake.format_mac(wake.parse_mac(value))

    @field_validator("wake_broadcast")
    @classmethod
    def _wake_broadcast(cls, value: str) -> str:
        return wake.format_target(*wake.parse_target(value))

    @field_validator("idle_sleep_command", mode="before")
    @classmethod
    def _argv(cls, value: Any) -> Any:
        """A JSON list, or one string split as a POSIX shell would (but never run by one)."""
        if isinstance(value, str):
            text = value.strip()
            return orjson.loads(text) if text.startswith("[") else shlex.split(text)
        return value

    @field_validator("idle_sleep_url")
    @classmethod
    def _sleep_url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        if not value.strip().lower().startswith(("http://", "https://")):
            raise ValueError("the idle sleep URL must start with http:// or https://")
        return value.strip()

    @model_validator(mode="after")
    def _one_sleep(self) -> Settings:
        if self.idle_sleep_command and self.idle_sleep_url:
            raise ValueError(
                "idle sleep takes a command or a URL, not both "
                "(LMGATE_IDLE_SLEEP_COMMAND, LMGATE_IDLE_SLEEP_URL)"
            )
        return self

    @field_validator("admin_allow", mode="before")
    @classmethod
    def _admin_cidrs(cls, value: Any) -> Any:
        return _cidrs_or_star(value)

    @field_validator("auth_fail_exempt", mode="before")
    @classmethod
    def _exempt_cidrs(cls, value: Any) -> Any:
        return _cidrs_or_star(value)

    @field_validator("metrics_allow", mode="before")
    @classmethod
    def _metrics_cidrs(cls, value: Any) -> Any:
        return _cidrs_or_star(value) or None  # empty: follow --allow

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: Any) -> Any:
        items = _split_list(value)
        return check_origins(items) if isinstance(items, list) else items

    @field_validator("allowed_hosts", mode="before")
    @classmethod
    def _host_names(cls, value: Any) -> Any:
        items = _split_list(value)
        if isinstance(items, list):
            for item in items:
                if not _HOST_NAME.fullmatch(str(item).strip()):
                    raise ValueError(f"allowed host '{item}' must be a host name or address")
        return items

    @model_validator(mode="after")
    def _tls_pair(self) -> Settings:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("TLS needs both a certificate and its key (--tls-cert, --tls-key)")
        return self

    @field_validator("allow", "trusted_proxies", mode="before")
    @classmethod
    def _split_cidrs(cls, value: Any) -> Any:
        items = _split_list(value)
        if isinstance(items, list):
            for item in items:
                _check_network(item)
        return items

    @field_validator("forwarded_header")
    @classmethod
    def _forwarded_header(cls, value: str) -> str:
        for name in FORWARDED_HEADERS:
            if value.strip().lower() == name.lower():
                return name
        raise ValueError(f"forwarded header must be one of {', '.join(FORWARDED_HEADERS)}")

    @field_validator("key_loads_default", mode="before")
    @classmethod
    def _loads_default(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("preload", mode="before")
    @classmethod
    def _preload(cls, value: Any) -> Any:
        items = _split_list(value)
        if isinstance(items, list):
            items = [str(item).strip() for item in items]
            for item in items:
                if not item or len(item) > 256 or not item.isprintable():
                    raise ValueError(f"preload entry {item!r} must be a model key")
            items = list(dict.fromkeys(items))  # each model once, in the order given
        return items

    @field_validator("api_keys", mode="before")
    @classmethod
    def _split_keys(cls, value: Any) -> Any:
        return _split_list(value)

    @field_validator(*DURATIONS, mode="before")
    @classmethod
    def _duration(cls, value: Any, info: ValidationInfo) -> Any:
        """Seconds as a number, or with a unit (`10m`); `0` means no limit where allowed."""
        if isinstance(value, str):
            if value.strip().lower() in NO_LIMIT_WORDS and info.field_name in NO_LIMIT_ZERO:
                return None
            seconds = parse_duration(value)
            if seconds is None:
                raise PydanticCustomError(
                    "lmgate", "{problem}", {"problem": "not a duration", "value": value}
                )
            value = seconds
        if info.field_name in NO_LIMIT_ZERO and value == 0:
            return None
        return value

    @field_validator("debug_stream_batch_ms", mode="before")
    @classmethod
    def _milliseconds(cls, value: Any) -> Any:
        if isinstance(value, str):
            seconds = parse_duration(value, unit=0.001)
            if seconds is None:
                raise PydanticCustomError(
                    "lmgate", "{problem}", {"problem": "not a duration", "value": value}
                )
            return seconds * 1000.0
        return value

    @field_validator("upstream", mode="before")
    @classmethod
    def _upstream(cls, value: Any) -> Any:
        """Corrected as `normalize_upstream` says; `lmgate serve` prints what it corrected."""
        if not isinstance(value, str):
            return value
        try:
            return normalize_upstream(value)[0]
        except ValueError as exc:
            raise PydanticCustomError(
                "lmgate", "{problem}", {"problem": str(exc), "value": value}
            ) from None

    @field_validator("upstreams", mode="before")
    @classmethod
    def _upstreams(cls, value: Any) -> Any:
        return parse_upstreams(value)

    @model_validator(mode="after")
    def _primary(self) -> Settings:
        """With several upstreams, `upstream` and `upstream_token` are the first one's: what
        speaks to "the upstream" (start-up checks, model management) speaks to the primary,
        with its own token and never another's."""
        if self.upstreams:
            check_unique(self.upstreams)
            first = self.upstreams[0]
            self.__dict__["upstream"] = first.url
            self.__dict__["upstream_token"] = first.token
        return self

    def upstream_configs(self) -> list[UpstreamConfig]:
        """Every configured upstream, the primary first; zero-config: the one `upstream`."""
        if self.upstreams:
            return list(self.upstreams)
        return [
            UpstreamConfig(
                name=DEFAULT_NAME,
                url=self.upstream_url,
                token=self.upstream_token,
                max_loaded_models=self.max_loaded_models,
                memory_budget=self.model_memory_budget,
                slots=self.model_slots,
                wake=self.wake_mac,
            )
        ]

    @field_validator("workers")
    @classmethod
    def _workers(cls, value: int) -> int:
        if not 1 <= value <= MAX_WORKERS:
            raise ValueError(f"workers must be between 1 and {MAX_WORKERS}, not {value}")
        return value

    @field_validator("model_memory_budget", mode="before")
    @classmethod
    def _byte_size(cls, value: Any) -> Any:
        return parse_bytes(value) if isinstance(value, str) else value

    @field_validator("log_level")
    @classmethod
    def _level(cls, value: str) -> str:
        """The TypeScript edition's names (error, warn, info, debug) and Python's."""
        level = value.strip().lower()
        level = LEVEL_SYNONYMS.get(level, level)
        if level not in {"debug", "info", "warning", "error", "critical"}:
            raise PydanticCustomError(
                "lmgate", "{problem}", {"problem": "not a log level", "value": value}
            )
        return level

    @property
    def body_memory_limit(self) -> int:
        """The body memory budget in bytes: as configured, or 8 bodies of the largest size."""
        budget = self.max_body_memory_bytes
        return 8 * self.max_body_bytes if budget is None else budget

    @property
    def upstream_url(self) -> str:
        return self.upstream.rstrip("/")

    @property
    def upstream_shown(self) -> str:
        """The upstream URL as it may be displayed: credentials in it are masked."""
        return redact_url(self.upstream_url)

    @property
    def auth_enabled(self) -> bool:
        """Any settings key turns auth on, a metrics key too: it must not leave inference open."""
        return self.admin_key is not None or self.metrics_key is not None or bool(self.api_keys)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        init_kwargs: dict[str, Any] = getattr(init_settings, "init_kwargs", {})
        config_path = init_kwargs.get("config") or os.environ.get("LMGATE_CONFIG")
        legacy = LegacyEnvSource(settings_cls, Path(".env"))
        sources: list[PydanticBaseSettingsSource] = [
            init_settings,
            env_settings,
            dotenv_settings,
            legacy,
        ]
        toml = None
        if config_path:
            path = Path(config_path)
            if not path.is_file():
                raise ValueError(f"config file not found: {path}")
            toml = CamelTomlSource(settings_cls, toml_file=path)
            sources.append(toml)
        sources.append(OriginSource(settings_cls, legacy, toml))
        return tuple(sources)


def _check_network(item: Any) -> None:
    """An address or CIDR network; otherwise an error naming the one bad item."""
    try:
        ipaddress.ip_network(str(item).strip(), strict=False)
    except ValueError:
        raise PydanticCustomError(
            "lmgate", "{problem}", {"problem": "not an IP address or network", "value": item}
        ) from None


def _cidrs_or_star(value: Any) -> Any:
    """A CIDR list where `*` means everyone; a bad CIDR raises an error naming it."""
    items = _split_list(value)
    if isinstance(items, list):
        if "*" in items:
            return ["0.0.0.0/0", "::/0"]
        for item in items:
            _check_network(item)
    return items


def _split_list(value: Any) -> Any:
    """Comma-separated strings or JSON lists, as env vars carry them."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            return orjson.loads(text)
        return [item.strip() for item in text.split(",") if item.strip()]
    return value


_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "m": 1000**2, "mb": 1000**2, "g": 1000**3}
_UNITS |= {"gb": 1000**3, "t": 1000**4, "tb": 1000**4, "kib": 1024, "mib": 1024**2}
_UNITS |= {"gib": 1024**3, "tib": 1024**4}


def parse_bytes(text: str) -> int | None:
    """`20GiB`, `512 MB`, `1.5g` or a plain number of bytes; empty = None."""
    cleaned = text.strip().lower().replace(" ", "").replace("_", "")
    if not cleaned:
        return None
    number = cleaned.rstrip("abcdefghijklmnopqrstuvwxyz")
    unit = cleaned[len(number) :]
    if unit not in _UNITS:
        raise ValueError(f"unknown size unit {unit!r}: use B, KB, MB, GB, TB, KiB, MiB, GiB, TiB")
    try:
        amount = float(number)
    except ValueError:
        raise ValueError(f"not a size: {text!r}") from None
    return int(amount * _UNITS[unit])


def is_loopback_host(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def explicit_upstream(settings: Settings) -> bool:
    """True when someone chose the upstream (flag, env, file), rather than the default."""
    return "upstream" in settings.model_fields_set or bool(settings.upstreams)
