"""One upstream as configured: where it is, how to reach it, what it may serve, its limits.

Three spellings reach the same list: `--upstream` repeated (`URL` or `name=URL`),
`LMGATE_UPSTREAMS=name=url,name2=url2`, and `[[upstreams]]` tables in the TOML file (keys in
snake_case or camelCase). With none of them, the one upstream is `LMGATE_UPSTREAM` under the
name `upstream`, exactly as before several were possible.
"""

from __future__ import annotations

import fnmatch
import re
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from lmgate.settings_values import normalize_upstream, parse_duration
from lmgate.upstream import wake

MAX_UPSTREAMS = 32  # configured and added together: each holds a pool, a watcher, a queue
MAX_ITEMS = 64  # tags, model patterns, aliases: per upstream
MAX_TEXT = 256  # each tag, pattern, alias and key
DEFAULT_NAME = "upstream"  # the zero-config upstream's name (the scheduler's since day one)
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")
_CAMEL = re.compile(r"(?<!^)(?=[A-Z])")
Text = Annotated[str, Field(min_length=1, max_length=MAX_TEXT)]


class UpstreamConfig(BaseModel):
    """An upstream's settings; its token is sent to it alone and never shown."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    url: str = Field(max_length=2048)
    token: SecretStr | None = Field(None, max_length=4096)
    weight: float = Field(1.0, gt=0, le=1000)
    tags: list[Text] = Field(default_factory=list, max_length=MAX_ITEMS)
    # fnmatch patterns over model keys; `!pattern` denies. No allow pattern: everything.
    models: list[Text] = Field(default_factory=list, max_length=MAX_ITEMS)
    # Wake-on-LAN: the machine's MAC address, where the packet goes (None: the gateway's
    # LMGATE_WAKE_BROADCAST) and how long a woken machine is waited for (None: LMGATE_WAKE_TIMEOUT)
    wake: str | None = None
    wake_broadcast: str | None = None
    wake_timeout: float | None = Field(None, gt=0)
    max_loaded_models: int | None = Field(None, ge=1)
    memory_budget: int | None = Field(None, ge=1)
    slots: int | None = Field(None, ge=1)
    # gateway-level name -> this upstream's key for it (`qwen-small` = `qwen/qwen3-4b`)
    aliases: dict[Text, Text] = Field(default_factory=dict, max_length=MAX_ITEMS)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not NAME.fullmatch(value):
            raise ValueError(
                f"upstream name {value!r} must be letters, digits, '.', '_' or '-' (at most 63)"
            )
        return value

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return normalize_upstream(value)[0].rstrip("/")

    @model_validator(mode="before")
    @classmethod
    def _wake_table(cls, data: Any) -> Any:
        """`wake = {mac = ..., broadcast = ..., timeout = ...}`, the `[wake]` table's shape,
        is the same as `wake`, `wake_broadcast` and `wake_timeout` side by side."""
        if not isinstance(data, dict) or not isinstance(data.get("wake"), dict):
            return data
        table = {_CAMEL.sub("_", str(k)).lower(): v for k, v in data["wake"].items()}
        unknown = sorted(table.keys() - {"mac", "broadcast", "timeout"})
        if unknown:
            raise ValueError(f"wake takes mac, broadcast and timeout, not {', '.join(unknown)}")
        out = {**data, "wake": table.get("mac")}
        for key in ("broadcast", "timeout"):
            if key in table:
                out[f"wake_{key}"] = table[key]
        return out

    @field_validator("wake")
    @classmethod
    def _wake(cls, value: str | None) -> str | None:
        return None if value is None else wake.format_mac(wake.parse_mac(value))

    @field_validator("wake_broadcast")
    @classmethod
    def _wake_broadcast(cls, value: str | None) -> str | None:
        return None if value is None else wake.format_target(*wake.parse_target(value))

    @field_validator("wake_timeout", mode="before")
    @classmethod
    def _wake_timeout(cls, value: Any) -> Any:
        if isinstance(value, str):
            seconds = parse_duration(value)
            if seconds is None:
                raise ValueError(f"wake timeout {value.strip()!r} is not a duration such as 90s")
            return seconds
        return value

    @field_validator("memory_budget", mode="before")
    @classmethod
    def _bytes(cls, value: Any) -> Any:
        if isinstance(value, str):
            from lmgate.settings import parse_bytes  # settings imports this module

            return parse_bytes(value)
        return value

    @field_validator("tags", "models", mode="before")
    @classmethod
    def _words(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value

    def key_of(self, name: str) -> str:
        """The key this upstream knows a gateway-level name by (an alias, or the name)."""
        return self.aliases.get(name, name)

    def allows(self, model: str) -> bool:
        """Whether this upstream may serve `model` (its `models` patterns)."""
        allow = [p for p in self.models if not p.startswith("!")]
        if allow and not any(fnmatch.fnmatchcase(model, p) for p in allow):
            return False
        return not any(fnmatch.fnmatchcase(model, p[1:]) for p in self.models if p[:1] == "!")

    def public(self) -> dict[str, Any]:
        """What may be shown about it: everything but the token (only whether there is one)."""
        from lmgate.redaction import redact_url

        return {
            "name": self.name,
            "url": redact_url(self.url),
            "hasToken": self.token is not None,
            "weight": self.weight,
            "tags": list(self.tags),
            "models": list(self.models),
            "wake": self.wake,
            "wakeBroadcast": self.wake_broadcast,
            "wakeTimeout": self.wake_timeout,
            "maxLoadedModels": self.max_loaded_models,
            "memoryBudget": self.memory_budget,
            "slots": self.slots,
            "aliases": dict(self.aliases),
        }


def split_named(item: str) -> tuple[str | None, str]:
    """`name=URL` -> (name, URL); a bare URL -> (None, URL). A `=` inside a URL's query or
    after its scheme is not a name."""
    head, sep, tail = item.partition("=")
    if sep and NAME.fullmatch(head.strip()):
        return head.strip(), tail.strip()
    return None, item.strip()


def parse_upstreams(value: Any) -> Any:
    """`name=url,name2=url2` (env), a list of such items or bare URLs (flags), or a list of
    tables (TOML) -> a list of dicts for validation. Unnamed ones are `upstream`,
    `upstream-2`..."""
    if isinstance(value, str):
        value = [part for part in value.split(",") if part.strip()]
    if not isinstance(value, list):
        return value
    out: list[Any] = []
    for index, item in enumerate(value, start=1):
        if isinstance(item, str):
            name, url = split_named(item)
            item = {"name": name, "url": url}
        if isinstance(item, dict):
            item = {_CAMEL.sub("_", str(k)).lower(): v for k, v in item.items()}
            if not item.get("name"):
                item["name"] = DEFAULT_NAME if index == 1 else f"{DEFAULT_NAME}-{index}"
        out.append(item)
    return out


def check_unique(configs: list[UpstreamConfig]) -> None:
    if len(configs) > MAX_UPSTREAMS:
        raise ValueError(f"at most {MAX_UPSTREAMS} upstreams, not {len(configs)}")
    seen: set[str] = set()
    for config in configs:
        if config.name in seen:
            raise ValueError(f"upstream name {config.name!r} is used twice")
        seen.add(config.name)
