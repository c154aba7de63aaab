"""Fixtures that run one emulator or one gateway for a test module, declared in a line.

`emu = emulator_fixture("--no-sdk", name="emu-x")` in a test module is the fixture `emu`;
`gw = gateway_fixture("emu", env=ENV)` is a gateway in front of the fixture named `emu`.
Module-scoped servers live under the session's `tmp_root`, function-scoped ones under the
test's `tmp_path`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Literal

import pytest

from tests.servers import ServerProcess, start_emulator, start_gateway

Scope = Literal["function", "module", "session"]


def _tmp(request: pytest.FixtureRequest, scope: Scope) -> Path:
    folder: Path = request.getfixturevalue("tmp_path" if scope == "function" else "tmp_root")
    return folder


def emulator_fixture(*args: str, name: str = "emulator", scope: Scope = "module") -> Any:
    """A fixture running `python -m lmgate.emulator ARGS`, stopped after its scope."""

    @pytest.fixture(scope=scope)
    def emulator(request: pytest.FixtureRequest) -> Iterator[ServerProcess]:
        server = start_emulator(_tmp(request, scope), *args, name=name)
        yield server
        server.stop()

    return emulator


def gateway_fixture(
    upstream: str, *args: str, env: Mapping[str, str], scope: Scope = "module"
) -> Any:
    """A fixture running `lmgate serve ARGS` with `env` in front of the server fixture
    named `upstream`, stopped after its scope."""

    @pytest.fixture(scope=scope)
    def gateway(request: pytest.FixtureRequest) -> Iterator[ServerProcess]:
        behind: ServerProcess = request.getfixturevalue(upstream)
        server = start_gateway(_tmp(request, scope), behind.url, *args, env=env)
        yield server
        server.stop()

    return gateway
