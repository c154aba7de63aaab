"""A stand-in `lms` on disk, an emulator, and gateways that load through them."""

from __future__ import annotations

import json
import stat
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.server_fixtures import emulator_fixture
from tests.servers import ADMIN_KEY, ServerProcess, admin_headers, start_gateway

FAKE = Path(__file__).with_name("fake_lms.py")


@dataclass
class FakeLms:
    """The stand-in's executable, the file its calls are recorded in, and its control file."""

    path: Path
    log: Path
    control: Path

    def env(self) -> dict[str, str]:
        return {"FAKE_LMS_LOG": str(self.log), "FAKE_LMS_CONTROL": str(self.control)}

    def set(self, **behaviour: Any) -> None:
        self.control.write_text(json.dumps(behaviour))

    def calls(self) -> list[list[str]]:
        if not self.log.exists():
            return []
        return [json.loads(line)["argv"] for line in self.log.read_text().splitlines()]

    def pids(self) -> list[int]:
        if not self.log.exists():
            return []
        return [json.loads(line)["pid"] for line in self.log.read_text().splitlines()]

    def reset(self) -> None:
        self.log.unlink(missing_ok=True)
        self.set()


def make_fake_lms(folder: Path) -> FakeLms:
    folder.mkdir(parents=True, exist_ok=True)
    wrapper = folder / "lms"
    wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{FAKE}" "$@"\n')
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    fake = FakeLms(wrapper, folder / "calls.jsonl", folder / "control.json")
    fake.set()
    return fake


@pytest.fixture(scope="module")
def lms(tmp_path_factory: pytest.TempPathFactory) -> FakeLms:
    return make_fake_lms(tmp_path_factory.mktemp("lms"))


emu = emulator_fixture("--load-delay", "0.1", "--no-preload", "--no-sdk", name="emu-loading")


def gateway_env(fake: FakeLms | None, **extra: str) -> dict[str, str]:
    env = {"LMGATE_ADMIN_KEY": ADMIN_KEY, "LMGATE_SYNC_INTERVAL": "0.5", **extra}
    if fake is not None:
        env.update(fake.env(), LMGATE_LMS_PATH=str(fake.path))
    return env


@pytest.fixture(scope="module")
def gw(tmp_root: Path, emu: ServerProcess, lms: FakeLms) -> Iterator[ServerProcess]:
    server = start_gateway(tmp_root, emu.url, env=gateway_env(lms))
    yield server
    server.stop()


@pytest.fixture
def up(emu: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=emu.url, timeout=30) as client:
        client.post("/__emulator/reset")
        yield client


@pytest.fixture
def adm(gw: ServerProcess, up: httpx.Client, lms: FakeLms) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gw.url, headers=admin_headers(), timeout=60) as client:
        client.post("/admin/models/unload", json={"all": True})
        up.post("/__emulator/reset")
        lms.reset()
        yield client


def instances(up: httpx.Client) -> dict[str, dict[str, Any]]:
    """Every instance the emulator has loaded: id -> its listed config."""
    return {
        i["id"]: i["config"]
        for m in up.get("/api/v1/models").json()["models"]
        for i in m["loaded_instances"]
    }
