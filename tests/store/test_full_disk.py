"""A full disk, for real: the data dir on a tiny tmpfs, filled to the last byte while the
gateway runs. Admin writes answer 507 in OpenAI's error shape and change nothing, inference is
served meanwhile, `/admin/usage` says how much usage waits unwritten, and once space is back
everything is written and writes work again."""

from __future__ import annotations

import errno
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from tests.servers import ADMIN_KEY, ServerProcess, admin_headers, start_gateway

CHAT = {"model": "qwen/qwen3-4b", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB filesystem of its own (tmpfs); skipped where mounting is not allowed."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    made = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m,mode=0700", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
    )
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {made.stderr.strip()}")
    try:
        yield mount
    finally:
        if subprocess.run(["umount", str(mount)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def fill(disk: Path) -> Path:
    """Write until the filesystem refuses another byte."""
    filler = disk / "filler"
    with filler.open("wb", buffering=0) as out:
        try:
            while True:
                out.write(b"\0" * 65536)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    for size in (4096, 512, 1):  # the last partial blocks too
        try:
            with filler.open("ab", buffering=0) as out:
                while True:
                    out.write(b"\0" * size)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    return filler


def assert_storage_full(resp: httpx.Response, data: Path) -> None:
    assert resp.status_code == 507, resp.text
    assert resp.headers["content-type"] == "application/json"
    error = resp.json()["error"]
    assert error["type"] == "server_error" and error["code"] == "storage_full"
    assert str(data) in error["message"] and "full" in error["message"]


def test_admin_writes_on_a_full_disk_answer_507_and_the_gateway_keeps_serving(
    tmp_path: Path, small_disk: Path, emulator: ServerProcess
) -> None:
    data = small_disk / "data"
    gateway = start_gateway(
        tmp_path,
        emulator.url,
        env={"LMGATE_ADMIN_KEY": ADMIN_KEY, "LMGATE_USAGE_FLUSH_SECONDS": "0.2"},
        data_dir=data,
    )
    assert gateway.proc is not None
    admin = httpx.Client(base_url=gateway.url, headers=admin_headers(), timeout=30)
    alice = httpx.Client(base_url=gateway.url, timeout=30)
    try:
        made = admin.post("/admin/keys", json={"name": "alice"})
        assert made.status_code == 201, made.text
        alice.headers["Authorization"] = f"Bearer {made.json()['key']}"
        before = admin.get("/admin/state").json()
        filler = fill(small_disk)
        rss_before = psutil.Process(gateway.proc.pid).memory_info().rss

        started = time.monotonic()
        assert_storage_full(admin.post("/admin/keys", json={"name": "bob"}), data)
        assert_storage_full(admin.post("/admin/keys/alice/rotate"), data)
        assert_storage_full(admin.delete("/admin/keys/alice"), data)
        assert_storage_full(
            admin.post("/admin/models/activate", json={"modelKey": "qwen/qwen3-4b"}), data
        )
        assert_storage_full(
            admin.put(
                "/admin/models/qwen%2Fqwen3-4b/profile",
                json={"defaultInference": {"temperature": 0.1}},
            ),
            data,
        )
        assert time.monotonic() - started < 30  # answered, not hung
        assert admin.get("/admin/state").json() == before  # nothing half-applied
        assert [k["name"] for k in admin.get("/admin/keys").json()["keys"]] == ["alice"]

        # Meanwhile clients are served, alice's key (not revoked after all) included.
        served = [alice.post("/v1/chat/completions", json=CHAT).status_code for _ in range(150)]
        assert served == [200] * 150
        time.sleep(0.6)  # a few flushes of the usage writer fail
        usage = admin.get("/admin/usage").json()
        assert usage["pendingRows"] >= 150 and usage["droppedRows"] == 0
        assert "full" in usage["lastWriteError"]["message"]
        assert usage["totals"]["requests"] == 0
        grown = psutil.Process(gateway.proc.pid).memory_info().rss - rss_before
        assert grown < 64 * 2**20, grown

        filler.unlink()  # space again: the backlog is written, writes work
        assert admin.post("/admin/keys", json={"name": "bob"}).status_code == 201
        usage = admin.get("/admin/usage").json()
        assert usage["pendingRows"] == 0 and usage["totals"]["requests"] >= 150
        assert gateway.proc.poll() is None
    finally:
        admin.close()
        alice.close()
        gateway.stop()
    assert "Traceback" not in gateway.logs()
