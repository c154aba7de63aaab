"""The run from start to end: upstream, nginx, lmgate and a debug subscriber up, load, figures.

lmgate runs as a real deployment would: auth on (an admin and an inference key), an active
model with default parameters (so every body is parsed and rewritten), usage accounting
(streams carry a usage chunk), one `/debug/stream` subscriber connected (so every request
publishes events), its own data dir, and no settings leaking in from the caller's environment
or `.env`. nginx, when installed, proxies the same upstream from the same core(s).
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

import orjson

from bench import aio, goals, nginx, report, scenarios, stats, wrk
from bench.load import Target, open_session, request_body
from bench.options import Options, parse
from bench.processes import (
    Child,
    Children,
    family_memory_kib,
    free_port,
    plan_cpus,
    raise_nofile,
    wait_http,
)
from lmgate.settings import LEGACY_ENV

REPO = Path(__file__).resolve().parent.parent
# the fake upstreams list one name and serve any: the activation is forced
MODEL = {"modelKey": "qwen/qwen3-4b", "defaultInference": {"temperature": 0.2}, "force": True}


def _clean_env(**extra: str) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("LMGATE_") and k not in LEGACY_ENV
    }
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return {**env, **extra}


def _start_upstream(kids: Children, opts: Options, cpus: frozenset[int] | None) -> tuple[str, str]:
    """The direct target: its base URL and a description for the report."""
    if opts.upstream not in ("fake", "emulator"):
        try:  # fail loudly now rather than as a wall of request errors later
            with urllib.request.urlopen(opts.upstream + "/v1/models", timeout=5):
                pass
        except OSError as exc:
            raise RuntimeError(f"upstream {opts.upstream} does not answer: {exc}") from exc
        return opts.upstream, f"{opts.upstream} (already running, not pinned)"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    delay = opts.chunk_delay_ms
    if opts.upstream == "fake":
        argv = ["-m", "bench.usage_upstream", "--port", str(port), "--chunks", str(opts.chunks)]
        argv += ["--chunk-delay-ms", str(delay)]
        ready = "/v1/models"
        about = f"fake ({opts.chunks} chunks + a usage chunk, {delay:g} ms apart)"
    else:
        argv = ["-m", "lmgate.emulator", "--host", "127.0.0.1", "--port", str(port)]
        argv += ["--token-delay", str(delay / 1000)]
        ready, about = (
            "/lmstudio-greeting",
            f"lmgate.emulator (token delay {delay:g} ms, max_tokens {opts.chunks})",
        )
    child = kids.start("upstream", [sys.executable, *argv], env=_clean_env(), cpus=cpus)
    wait_http(child, url + ready)
    return url, about


def _post_json(url: str, key: str, body: dict[str, Any]) -> None:
    request = urllib.request.Request(
        url,
        data=orjson.dumps(body),
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as resp:
        if resp.status != 200:
            raise RuntimeError(f"{url} answered {resp.status}")


def _start_gateway(
    kids: Children,
    workdir: Path,
    upstream: str,
    keys: tuple[str, str],
    cpus: frozenset[int] | None,
    model: dict[str, Any] = MODEL,
    workers: int = 1,
) -> tuple[Child, str]:
    """lmgate serving `upstream` with auth on and an active model; its child and base URL."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    argv = [sys.executable, "-m", "lmgate", "serve", "--host", "127.0.0.1", "--port", str(port)]
    argv += ["--upstream", upstream, "--data-dir", str(workdir / "data")]
    if workers > 1:  # with 1 nothing is passed, so the bench runs on a gateway without the flag
        argv += ["--workers", str(workers)]
    env = _clean_env(LMGATE_ADMIN_KEY=keys[0], LMGATE_API_KEYS=keys[1])
    # cwd: a `.env` in the caller's directory must not change what is measured
    gate = kids.start("lmgate", argv, env=env, cwd=workdir, cpus=cpus)
    wait_http(gate, url + "/health")
    _post_json(url + "/admin/models/activate", keys[0], model)
    return gate, url


def _start_subscriber(
    kids: Children, gate_url: str, admin: str, cpus: frozenset[int] | None
) -> Child:
    argv = [sys.executable, "-m", "bench.subscriber", gate_url + "/debug/stream", admin]
    sub = kids.start("subscriber", argv, env=_clean_env(), cpus=cpus, pipe_stdout=True)
    said = sub.read_line(15)
    if said != "ready":
        raise RuntimeError(
            f"the /debug/stream subscriber did not connect ({said}):\n{sub.log_tail()}"
        )
    return sub


def _finish_subscriber(sub: Child) -> dict[str, Any]:
    """Stop it and read what it saw; its last line is a JSON object of counts."""
    sub.stop()
    assert sub.proc.stdout is not None
    lines = sub.proc.stdout.read().decode().splitlines()
    seen: dict[str, Any] = orjson.loads(lines[-1]) if lines and lines[-1][:1] == "{" else {}
    said = [line for line in lines if line and line != "ready" and line[:1] != "{"]
    if said or sub.proc.returncode not in (0, -15):  # it stopped early, or said why it failed
        seen["said"], seen["exit"] = said, sub.proc.returncode
    return seen


async def _drive(
    opts: Options, urls: dict[str, str], key: str, tools: dict[str, Any], pids: dict[str, int]
) -> dict[str, Any]:
    main_task = asyncio.current_task()
    assert main_task is not None
    # inside the loop SIGTERM cancels the run (Ctrl-C already does): sessions close cleanly
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main_task.cancel)
    pool = max(opts.concurrency, opts.wide_concurrency, opts.stream_concurrency, opts.wide_streams)
    targets = [Target(name, url, open_session(key, pool)) for name, url in urls.items()]
    plan = scenarios.Plan(opts, targets, key, pids=pids)
    plan.wrk, plan.wrk_script = tools.get("wrk"), tools.get("wrk_script")
    try:
        return stats.summarise(await scenarios.run(plan))
    finally:
        for target in targets:
            await target.session.close()


def _mb(kib: int | None) -> float | None:
    return round(kib / 1024, 1) if kib else None


def _tools(opts: Options, workdir: Path, key: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """nginx and wrk when installed and wanted: what to run, and what the report says."""
    tools: dict[str, Any] = {}
    about: dict[str, Any] = {"nginx": None, "wrk": None}
    found = nginx.find() if opts.nginx else None
    if found:
        tools["nginx"], about["nginx"] = found, nginx.version(found)
    else:
        about["nginx_missing"] = "not installed" if opts.nginx else "off (--no-nginx)"
    found = wrk.find() if opts.wrk else None
    if found:
        body = request_body(stream=False, max_tokens=opts.chunks)
        tools["wrk"], tools["wrk_script"] = found, wrk.write_script(workdir, body, key)
        about["wrk"] = wrk.version(found)
    else:
        about["wrk_missing"] = "not installed" if opts.wrk else "off (--no-wrk)"
    multi = about["wrk"] or f"aiohttp on {aio.loop_name()}"
    about["generator"] = {"multi_client": multi, "other": f"aiohttp on {aio.loop_name()}"}
    return tools, about


def run(opts: Options) -> dict[str, Any]:
    started, clock = datetime.now(UTC), time.monotonic()
    nofile = raise_nofile()
    cpus = plan_cpus(opts.pin, opts.workers)
    environment = {
        "machine": report.machine(),  # before the bench pins itself to fewer cores
        "versions": report.versions(REPO),
        "cpus": {k: sorted(v) if v else None for k, v in cpus.items()},
        "loop": aio.loop_name(),
        "nofile": nofile,
        "workers": opts.workers,
    }
    admin, api = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
    with tempfile.TemporaryDirectory(prefix="lmgate-bench-") as tmp, Children(Path(tmp)) as kids:
        tools, about_tools = _tools(opts, Path(tmp), api)
        environment["tools"] = about_tools
        direct, about = _start_upstream(kids, opts, cpus["upstream"])
        urls = {stats.DIRECT: direct}
        pids: dict[str, int] = {}
        if "nginx" in tools:
            proxy, urls[stats.NGINX] = nginx.start(
                kids, tools["nginx"], Path(tmp), direct, cpus["lmgate"], workers=opts.workers
            )
            pids[stats.NGINX] = proxy.pid
        gate, urls[stats.GATE] = _start_gateway(
            kids, Path(tmp), direct, (admin, api), cpus["lmgate"], workers=opts.workers
        )
        pids[stats.GATE] = gate.pid
        sub = _start_subscriber(kids, urls[stats.GATE], admin, cpus["upstream"])
        start_rss = family_memory_kib(gate.pid).get("VmRSS")
        if cpus["load"]:
            os.sched_setaffinity(0, cpus["load"])
        results = aio.run(_drive(opts, urls, api, tools, pids))
        if gate.proc.poll() is not None:
            raise RuntimeError("lmgate exited during the run:\n" + gate.log_tail())
        peak_rss = family_memory_kib(gate.pid).get("VmHWM")
        seen = _finish_subscriber(sub)
    doc = {
        "started": started.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "seconds": round(time.monotonic() - clock, 1),
        "options": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(opts).items()},
        "environment": environment,
        "upstream": about,
        "lmgate": {"start_rss_mb": _mb(start_rss), "peak_rss_mb": _mb(peak_rss)},
        "subscriber": seen,
        "results": results,
    }
    doc["goals"] = goals.check(doc)
    return doc


def _interrupted(signum: int, _: FrameType | None) -> None:
    """Outside the event loop SIGTERM unwinds like Ctrl-C, so every `with` stops its children."""
    raise KeyboardInterrupt


def reported(
    name: str,
    measure: Callable[[], dict[str, Any]],
    table: Callable[[dict[str, Any]], str],
    json_path: Path | None,
    prefix: str = "",
) -> dict[str, Any] | int:
    """Run a measurement so that SIGTERM and Ctrl-C stop its children, print its table and
    save its results; the results, or the exit code when it did not finish (said why)."""
    signal.signal(signal.SIGTERM, _interrupted)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started with it ignored
    try:
        doc = measure()
    except (KeyboardInterrupt, asyncio.CancelledError):
        print(f"{name}: interrupted; child processes stopped", file=sys.stderr)
        return 130
    except (RuntimeError, OSError) as exc:
        print(f"{name}: {exc}", file=sys.stderr)
        return 1
    print(table(doc))
    stamp = prefix + doc["started"].replace("-", "").replace(":", "")
    for path in report.save(doc, stamp, json_path):
        print(f"results written to {path}")
    return doc


def main(argv: list[str] | None = None) -> int:
    opts = parse(argv)
    if opts.real_model:  # imported here: bench.real_model builds on this module
        from bench import real_model

        measure, table = real_model.run, real_model.table
    else:
        measure, table = run, report.table
    done = reported("bench", lambda: measure(opts), table, opts.json_path)
    return done if isinstance(done, int) else 0
