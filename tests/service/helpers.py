"""Running `lmgate service` as a user would, in a clean environment with its own home."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.servers import clean_env

# Keys a doctor accepts on a network listener (long, random-looking).
ADMIN = "Zq8vN3kLp0Xw7RtY2mBf5HcJ9sDg4AeU"
API = "Hn4Qw9Ez2Rt7Yu1Io6Pa3Sd8Fg5Jk0Lx"


def service(
    tmp: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """`lmgate service ARGS` with HOME at `tmp/home` and only the LMGATE_* values given."""
    home = tmp / "home"
    home.mkdir(exist_ok=True)
    work = tmp / "cwd"
    work.mkdir(exist_ok=True)
    return subprocess.run(
        [sys.executable, "-m", "lmgate", "service", *args],
        env=clean_env(HOME=str(home), **(env or {})),
        cwd=work,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
