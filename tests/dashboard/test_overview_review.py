"""Overview: the error-rate tile counts the same requests as its own sub-line, the upstream's
auth is said in words, and the charts are per-10 s buckets where an empty bucket is a gap in
the latency line, not a drop to zero, and a filling bucket does not spike the rate."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
from playwright.sync_api import expect

from tests.dashboard.helpers import shot, sign_in, view
from tests.servers import ServerProcess

CHAT = {"model": "qwen/qwen3-4b", "messages": [{"role": "user", "content": "Tiles"}]}


def test_error_tile_and_upstream_auth(
    page: Any, dash_gateway: ServerProcess, dash_user: httpx.Client, artifacts: Path
) -> None:
    sign_in(page, dash_gateway.url)
    view(page, "overview")
    for _ in range(3):
        assert dash_user.post("/v1/chat/completions", json=CHAT).is_success
    bad = dash_user.post("/v1/chat/completions", json={"model": "qwen/qwen3-4b"})
    assert bad.status_code >= 400

    sub = page.locator("#tile-errors .tile-sub")
    expect(sub).to_contain_text(re.compile(r"^[1-9]\d* of \d+ in the last minute$"))
    value, line = page.evaluate(
        "['value', 'sub'].map((c) => document.querySelector(`#tile-errors .tile-${c}`).textContent)"
    )
    errors, total = (int(n) for n in re.findall(r"\d+", line))
    assert 1 <= errors < total, line
    assert abs(float(value.rstrip(" %")) - 100 * errors / total) <= 0.051, (value, line)
    expect(page.locator("#tile-uptime .tile-sub")).to_contain_text("since start")

    expect(page.locator("#upstream-auth")).to_have_text("none needed")  # the emulator asks none
    expect(page.locator(".upstream .chip", has_text="upstream token")).to_have_count(0)
    expect(page.locator(".upstream .chip.on", has_text="load/unload")).to_be_visible()
    shot(page, artifacts, "13-overview-tiles")


def test_charts_bucket_per_10_s_with_gaps(page: Any, dash_gateway: ServerProcess) -> None:
    sign_in(page, dash_gateway.url)
    result = page.evaluate(
        """async () => {
          const { Timeline, BUCKET_S } = await import('./timeline.js');
          const { lineChart } = await import('./charts.js');
          const t = new Timeline();
          const now = Date.now() / 1000;
          const bucket = (ago) => Math.floor((now - ago) / BUCKET_S) * BUCKET_S + 1;
          // Two requests 40 s ago, none 30 s ago, one 20 s ago, one just now.
          t.add({ requestId: 'a', timestamp: bucket(40), latencyMs: 100, status: 200 });
          t.add({ requestId: 'b', timestamp: bucket(40), latencyMs: 300, status: 500 });
          t.add({ requestId: 'c', timestamp: bucket(20), latencyMs: 200, status: 200 });
          t.add({ requestId: 'd', timestamp: now, latencyMs: 50, status: 200 });
          const points = t.points();
          const at = (ago) => points.find((p) => p.t === bucket(ago) - 1 + BUCKET_S / 2);
          const box = document.createElement('div');
          box.style.width = '400px';
          document.body.append(box);
          lineChart(box, {
            title: 'test', from: now - 60, to: now, format: String,
            series: [{ cls: 'line-a', points: [
              [now - 50, 10], [now - 40, 20], [now - 30, null], [now - 20, 5], [now - 10, null]
            ] }],
          });
          const paths = [...box.querySelectorAll('path')].map((p) => p.getAttribute('d'));
          const dots = box.querySelectorAll('circle').length;
          box.remove();
          return {
            bucket: BUCKET_S,
            step: points[1].t - points[0].t,
            forty: at(40), thirty: at(30), twenty: at(20), last: at(0),
            paths, dots,
          };
        }"""
    )
    assert result["bucket"] == 10 and result["step"] == 10
    assert result["forty"]["rps"] == 0.2 and result["forty"]["errorRate"] == 0.5
    assert result["forty"]["p50"] == 200
    # The empty bucket: no requests, and no latency (a gap), not a latency of zero.
    assert result["thirty"]["rps"] == 0
    assert result["thirty"]["p50"] is None and result["thirty"]["errorRate"] is None
    assert result["twenty"]["p50"] == 200
    # The bucket still filling: one request is 0.1/s, however early in the bucket it is.
    assert result["last"]["rps"] == 0.1
    # Two joined points make one line; the lone point after the gap is a dot, not a line.
    assert len(result["paths"]) == 1 and result["paths"][0].count("L") == 1
    pieces = result["paths"][0].split("M")[1:]
    assert len(pieces) == 2 and "L" in pieces[0] and "L" not in pieces[1], pieces
    assert result["dots"] == 1
