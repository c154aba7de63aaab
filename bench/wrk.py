"""wrk as the multi-client load generator: a C client that cannot be the bottleneck.

An aiohttp client on one core tops out near the rate a Python gateway reaches, so a
throughput figure taken with it partly measures the client. wrk (one thread, pinned to the
load core) drives many times that. A small Lua script sends the bench's POST body with the
API key and, when done, prints its counts and its whole latency histogram (every distinct
microsecond value and how often it occurred), so rounds merge into exact percentiles.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from pathlib import Path

from bench.load import CHAT, Samples

_SCRIPT = """\
wrk.method = "POST"
wrk.body = [==[{body}]==]
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer {key}"
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("WRK-SUMMARY %d %d %d %d %d %d %d\\n", summary.requests,
    summary.duration, e.connect, e.read, e.write, e.status, e.timeout))
  local parts = {{}}
  for i = 1, #latency do
    local value, count = latency(i)
    parts[#parts + 1] = string.format("%d:%d", value, count)
  end
  io.write("WRK-LATENCY " .. table.concat(parts, ",") .. "\\n")
end
"""


def find() -> str | None:
    return shutil.which("wrk")


def version(binary: str) -> str:
    """wrk prints its version in the first line of `-v` (and exits 1)."""
    try:
        out = subprocess.run([binary, "-v"], capture_output=True, text=True, timeout=5).stdout
    except (OSError, subprocess.SubprocessError):
        return "wrk"
    words = out.split()
    return f"wrk {words[1]}" if len(words) > 1 else "wrk"


def write_script(workdir: Path, body: bytes, key: str) -> Path:
    path = workdir / "wrk-post.lua"
    path.write_text(_SCRIPT.format(body=body.decode(), key=key))
    return path


def parse(output: str, out: Samples) -> None:
    """Add one wrk run's figures to `out`: latencies (s), errors, elapsed time."""
    summary = latency = None
    for line in output.splitlines():
        if line.startswith("WRK-SUMMARY "):
            summary = [int(x) for x in line.split()[1:]]
        elif line.startswith("WRK-LATENCY "):
            latency = line.split(" ", 1)[1] if " " in line else ""
    if summary is None or latency is None:
        raise RuntimeError(f"wrk printed no summary:\n{output[-2000:]}")
    requests, duration_us, *errors = summary
    out.elapsed += duration_us / 1e6
    out.errors += sum(errors)
    for pair in filter(None, latency.split(",")):
        value, count = (int(x) for x in pair.split(":"))
        out.latencies.extend([value / 1e6] * count)
    # the histogram also holds requests finished after the deadline; the rate counts these
    out.completed += requests - sum(errors)


async def run(
    binary: str, script: Path, url: str, connections: int, seconds: float, out: Samples
) -> None:
    """One wrk run of whole seconds (its smallest unit) against `url`'s chat endpoint."""
    argv = [f"-c{connections}", f"-d{max(1, round(seconds))}s", "--timeout", "10s"]
    argv += ["-t1", "-s", str(script), url + CHAT]
    proc = await asyncio.create_subprocess_exec(
        binary, *argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        stdout, stderr = await asyncio.wait_for(proc.communicate(), seconds + 30)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    if proc.returncode != 0:
        raise RuntimeError(f"wrk failed ({proc.returncode}):\n{stderr.decode()[-2000:]}")
    parse(stdout.decode(), out)
