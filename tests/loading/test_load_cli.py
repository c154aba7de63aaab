"""`lmgate models load` passes every load setting to the gateway."""

from __future__ import annotations

import os
import subprocess
import sys

import httpx
import orjson

from tests.loading.conftest import FakeLms, instances
from tests.servers import ADMIN_KEY, ServerProcess

GEMMA = "google/gemma-3-1b"


def _cli(gw: ServerProcess, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LMGATE_")}
    env.update({"LMGATE_URL": gw.url, "LMGATE_ADMIN_KEY": ADMIN_KEY, "COLUMNS": "200"})
    return subprocess.run(
        [sys.executable, "-m", "lmgate", "models", "load", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_every_setting_from_the_command_line(
    gw: ServerProcess, adm: httpx.Client, up: httpx.Client, lms: FakeLms
) -> None:
    ran = _cli(
        gw, GEMMA, "--gpu", "0.75", "--context-length", "4096", "--parallel", "2",
        "--ttl", "900", "--identifier", "cli-gemma", "--cpu-threads", "6",
        "--rope-base", "10000", "--rope-scale", "0.5", "--kv-cache-quant", "q8_0",
        "--flash-attention", "--eval-batch-size", "256", "--keep-in-memory", "--no-mmap",
        "--seed", "7", "--no-activate", "--json",
    )  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    body = orjson.loads(ran.stdout)
    assert body["surface"] == "lms" and body["instanceId"] == "cli-gemma"
    assert body["applied"] == {
        "contextLength": 4096,
        "gpu.ratio": 0.75,
        "parallel": 2,
        "ttl": 900,
        "identifier": "cli-gemma",
        "cpuThreads": 6,
    }
    assert set(body["notApplied"]) == {
        "ropeFrequencyBase",
        "ropeFrequencyScale",
        "kvCacheQuantK",
        "kvCacheQuantV",
        "flashAttention",
        "evalBatchSize",
        "keepModelInMemory",
        "tryMmap",
        "seed",
    }
    assert "cli-gemma" in instances(up)
    load = next(argv for argv in lms.calls() if argv[:1] == ["load"])
    assert load[load.index("--gpu") + 1] == "0.75"
    assert load[load.index("--identifier") + 1] == "cli-gemma"
    # the table view names what applied and what did not
    plain = _cli(gw, GEMMA, "--context-length", "2048", "--surface", "rest", "--gpu", "max")
    assert plain.returncode == 0, plain.stderr
    assert "applied contextLength = 2048" in plain.stdout
    assert "not applied gpu.ratio" in plain.stdout
    bad = _cli(gw, GEMMA, "--gpu", "lots")
    assert bad.returncode == 2
