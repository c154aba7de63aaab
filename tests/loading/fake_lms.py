"""A stand-in for LM Studio's `lms` CLI, for tests: answers `version`, `load`, `unload` and
`ps --json` like `lms` does, against the emulator named by `--host`/`--port`, and really
loads and unloads there (through the emulator's HTTP API), so the gateway sees the instance.

Every call appends `{"argv": [...], "pid": N}` to the file `$FAKE_LMS_LOG`. How it misbehaves
comes from the JSON file `$FAKE_LMS_CONTROL` (read at every call) or `$FAKE_LMS_FAIL`:
  "fail": "before"    exit non-zero before loading
          "midload"   load, then exit non-zero (a load that broke half way)
          "notfound"  exit non-zero saying no model matches
          "hang"      never finish
          "version"   `lms version` fails
  "exit": N           the exit status of a failure (default 1)
  "context_cap": N    load with at most N tokens of context (LM Studio lowering it)
  "secret": S         a secret the failure message quotes
Standard library only: it runs under any Python.
"""

from __future__ import annotations

import json
import os
import sys
import time
import urllib.error
import urllib.request
from typing import Any


def control() -> dict[str, Any]:
    path = os.environ.get("FAKE_LMS_CONTROL")
    found: dict[str, Any] = {}
    if path and os.path.exists(path):
        with open(path) as f:
            found = json.load(f)
    if os.environ.get("FAKE_LMS_FAIL") and "fail" not in found:
        found["fail"] = os.environ["FAKE_LMS_FAIL"]
    return found


def record(argv: list[str]) -> None:
    path = os.environ.get("FAKE_LMS_LOG")
    if path:
        with open(path, "a") as f:
            f.write(json.dumps({"argv": argv, "pid": os.getpid()}) + "\n")


def options(args: list[str]) -> tuple[list[str], dict[str, str | bool]]:
    positional: list[str] = []
    flags: dict[str, str | bool] = {}
    i = 0
    while i < len(args):
        arg = args[i]
        if arg in ("--yes", "-y", "--json", "--all", "-a", "--exact"):
            flags[arg.lstrip("-")] = True
        elif arg.startswith("-"):
            name = {"-c": "context-length"}.get(arg, arg.lstrip("-"))
            flags[name] = args[i + 1]
            i += 1
        else:
            positional.append(arg)
        i += 1
    return positional, flags


def call(base: str, method: str, path: str, body: Any = None) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(
        base + path, data=data, method=method, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read() or b"null")


def fail(ctl: dict[str, Any], message: str) -> int:
    secret = ctl.get("secret")
    if secret:
        message += f" (while using token={secret})"
    print(f"\x1b[31mError:\x1b[0m {message}", file=sys.stderr)
    return int(ctl.get("exit", 1))


def loaded(base: str) -> list[dict[str, Any]]:
    """Like `lms ps --json`: the SDK's instance info, plus status, queue and parallel."""
    out = []
    try:
        models = call(base, "GET", "/api/v1/models")["models"]
        rows = [(m, i) for m in models for i in m["loaded_instances"]]
    except (urllib.error.HTTPError, KeyError, TypeError):  # LM Studio 0.3: v0 only
        data = call(base, "GET", "/api/v0/models")["data"]
        rows = [
            ({"key": m["id"], "type": m["type"]}, {"id": m["id"], "config": {}})
            for m in data
            if m.get("state") == "loaded"
        ]
    for model, instance in rows:
        config = instance.get("config") or {}
        out.append(
            {
                "type": "embedding" if model["type"].startswith("embedding") else "llm",
                "modelKey": model["key"],
                "identifier": instance["id"],
                "displayName": model.get("display_name", model["key"]),
                "contextLength": config.get("context_length"),
                "status": "idle",
                "queued": 0,
                "parallel": config.get("parallel"),
            }
        )
    return out


def main(argv: list[str]) -> int:
    record(argv)
    ctl = control()
    positional, flags = options(argv)
    command = positional[0] if positional else ""
    base = f"http://{flags.get('host', '127.0.0.1')}:{flags.get('port', '1234')}"
    if command == "version":
        if ctl.get("fail") == "version":
            return fail(ctl, "cannot start")
        print("lms - LM Studio CLI (test stand-in)")
        return 0
    if command == "ps":
        print(json.dumps(loaded(base)))
        return 0
    if command == "unload":
        try:
            call(base, "POST", "/__emulator/unload", {"instance_id": positional[1]})
        except urllib.error.HTTPError:
            return fail(ctl, f"Cannot find a model with the identifier {positional[1]}")
        print(f"Model {positional[1]} unloaded.")
        return 0
    if command != "load" or len(positional) < 2:
        return fail(ctl, f"unknown command {argv!r}")
    mode = ctl.get("fail")
    if mode == "hang":
        print("Loading 10%", file=sys.stderr, flush=True)
        while True:
            time.sleep(1)
    if mode == "notfound":
        return fail(ctl, f'No model found that matches path "{positional[1]}".')
    if mode == "before":
        return fail(ctl, "Failed to load the model: insufficient memory")
    for step in (25, 50, 75):
        print(f"\rLoading {positional[1]} {step}%", end="", file=sys.stderr, flush=True)
    body: dict[str, Any] = {"model": positional[1]}
    if "context-length" in flags:
        context = int(str(flags["context-length"]))
        body["context_length"] = min(context, int(ctl.get("context_cap", context)))
    for flag, field in (("parallel", "parallel"), ("ttl", "ttl"), ("identifier", "identifier")):
        if flag in flags:
            value = flags[flag]
            body[field] = value if field == "identifier" else int(str(value))
    try:
        answer = call(base, "POST", "/__emulator/load", body)
    except urllib.error.HTTPError as exc:
        return fail(ctl, exc.read().decode(errors="replace"))
    if mode == "midload":
        return fail(ctl, "Failed to load model: the runtime crashed while loading")
    print(f'\nModel loaded successfully. Use the identifier "{answer["instance_id"]}".')
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
