"""Settings from the parent to every worker, exactly as the parent resolved them.

uvicorn starts workers with `spawn`, so they cannot inherit objects: the parent serialises the
resolved `Settings` (demo-fallback upstream included) into one env var and each worker reads
it back with `model_validate`, which re-reads no source (no `.env`, TOML or env precedence
again). An env var rather than a command line because secrets are in it: a process's
environment is readable by its owner only, its arguments by everyone. The worker removes it
from its environment after reading, and nothing here ever prints it; a validation failure
names the fields, never their values.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from pydantic import BaseModel, SecretStr, ValidationError

from lmgate.settings import Settings

ENV = "_LMGATE_WORKER_HANDOFF"


def _reveal(value: Any) -> Any:
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, list):
        return [_reveal(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, BaseModel):  # an upstream's table
        return {name: _reveal(getattr(value, name)) for name in type(value).model_fields}
    return value


@dataclass(frozen=True, slots=True)
class Handoff:
    settings: Settings
    run_dir: Path

    def encode(self) -> str:
        s = self.settings
        values = {name: _reveal(getattr(s, name)) for name in type(s).model_fields}
        payload = {
            "settings": values,
            "fieldsSet": sorted(s.model_fields_set),
            "runDir": str(self.run_dir),
        }
        return orjson.dumps(payload).decode()

    @classmethod
    def decode(cls, text: str) -> Handoff:
        payload = orjson.loads(text)
        try:
            settings = Settings.model_validate(payload["settings"])
        except ValidationError as exc:  # the message would quote values, secrets among them
            fields = sorted({".".join(map(str, e["loc"])) for e in exc.errors()})
            raise RuntimeError(f"worker settings are invalid in: {', '.join(fields)}") from None
        object.__setattr__(settings, "__pydantic_fields_set__", set(payload["fieldsSet"]))
        return cls(settings, Path(payload["runDir"]))

    @classmethod
    def take(cls) -> Handoff:
        """Read the handoff from this process's environment and remove it from there."""
        text = os.environ.pop(ENV, None)
        if text is None:
            raise RuntimeError(f"{ENV} is not set: workers are started by `lmgate serve`")
        return cls.decode(text)
