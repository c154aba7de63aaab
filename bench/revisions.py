"""What a change costs on the hot path: lmgate at a base revision against the working tree,
counted in instructions per request under callgrind (needs valgrind).

    python -m bench.revisions                 # base: HEAD~1
    python -m bench.revisions --base v0.1.0   # any revision git knows

Both gateways run with every feature on as `python -m bench` runs them (an admin and an
inference key, an active model with defaults, usage accounting), side by side against one fake
upstream, and get the same requests: plain calls and whole streams. The base revision's `src`
is exported with `git archive` into a temp dir and put first on its gateway's PYTHONPATH; the
working tree's gateway imports this checkout. callgrind counts the gateway process's own
instructions, which other load on the machine does not move, so a difference of a fraction of
a per cent is real on a busy host too. Kernel time (the socket I/O both share) is not counted,
so the ratio overstates a change's cost on the wall clock.
"""

from __future__ import annotations

import argparse
import secrets
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.instructions import (
    BATCH_MS,
    SCENARIOS,
    count_each,
    gateway_under_callgrind,
    missing_tools,
)
from bench.observability import REPO, start_upstream, write_results
from bench.processes import Children


def _export(revision: str, into: Path) -> Path:
    """`src/` of `revision`, written under `into`; the folder to put on PYTHONPATH."""
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", "--format=tar", revision, "src"],
        check=True,
        capture_output=True,
        timeout=120,
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True, timeout=120)
    return into / "src"


def _describe(revision: str) -> str:
    done = subprocess.run(
        ["git", "-C", str(REPO), "log", "-1", "--format=%h %s", revision],
        capture_output=True,
        text=True,
        timeout=30,
    )
    return done.stdout.strip() or revision


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.revisions", description=__doc__)
    p.add_argument("--base", default="HEAD~1", help="the revision to compare against")
    p.add_argument("--requests", type=int, default=2000, help="per scenario")
    p.add_argument("--warmup-requests", type=int, default=200)
    p.add_argument("--chunks", type=int, default=20, help="SSE events per stream")
    p.add_argument("--chunk-delay-ms", type=float, default=0.0)
    p.add_argument("--json", dest="json_path", type=Path)
    return p.parse_args(argv)


def run(args: argparse.Namespace) -> dict[str, Any]:
    gone = missing_tools()
    if gone:
        raise RuntimeError(f"needs {' and '.join(gone)} (Debian: valgrind)")
    keys = (secrets.token_urlsafe(24), secrets.token_urlsafe(24))
    settle = BATCH_MS / 1000.0 + 5.0
    with (
        tempfile.TemporaryDirectory(prefix="lmgate-revisions-") as tmp,
        Children(Path(tmp)) as kids,
    ):
        base_src = _export(args.base, Path(tmp))
        paths = {
            "base": f"{base_src}:{REPO}",
            "working tree": f"{REPO / 'src'}:{REPO}",
        }
        upstream = start_upstream(kids, args, None)
        gateways = {
            name: gateway_under_callgrind(
                kids, Path(tmp), f"gw-{i + 1}", upstream, keys, {"PYTHONPATH": path}
            )
            for i, (name, path) in enumerate(paths.items())
        }
        started = time.monotonic()

        counted = count_each(gateways, keys[1], args, settle)
    base, now = counted["base"], counted["working tree"]
    return {
        "started": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "kind": "revisions",
        "base": _describe(args.base),
        "head": _describe("HEAD"),
        "options": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "instructions_per_request": counted,
        "ratio": {s: round(now[s] / base[s], 4) for s in SCENARIOS},
        "seconds": round(time.monotonic() - started, 1),
    }


def table(doc: dict[str, Any]) -> str:
    counted, ratio = doc["instructions_per_request"], doc["ratio"]
    rows = [f"base: {doc['base']}", f"working tree on: {doc['head']}"]
    rows.append(f"{'instructions per request':26}{'base':>12}{'working tree':>15}{'ratio':>9}")
    for scenario in SCENARIOS:
        before, after = counted["base"][scenario], counted["working tree"][scenario]
        rows.append(
            f"{scenario:26}{before / 1000:>11.1f}k{after / 1000:>14.1f}k{ratio[scenario]:>9.4f}"
        )
    opts = doc["options"]
    rows.append(
        f"callgrind, {opts['requests']} requests per scenario after {opts['warmup_requests']} "
        "of warm-up, every feature on; kernel time is not counted"
    )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    try:
        doc = run(args)
    except (RuntimeError, OSError, subprocess.CalledProcessError) as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 1
    print(table(doc))
    write_results(doc, "revisions", args.json_path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
