"""The scheduler on 30 s of mixed traffic against real servers: a gateway in front of the LM
Studio emulator (three models, 1 s loads, 2 slots each, room for one model at a time), three
keys sending a seeded random mix of streaming and non-streaming requests through the official
`openai` SDK's async client, many at once. The trace and its driver are `bench.scheduler_trace`,
so the benchmark reports exactly what this test asserts."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from bench import scheduler_trace as trace

from tests.servers import ServerProcess, start_emulator, start_gateway

REFUSALS = {409, 429, 503}


@pytest.fixture
def trace_servers(tmp_root: Path) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    models = trace.emulator_models(tmp_root / "trace-models.json")
    emu = start_emulator(tmp_root, *trace.emulator_args(models), name="trace-emu")
    try:
        gw = start_gateway(tmp_root, emu.url, env=trace.gateway_env())
    except BaseException:
        emu.stop()
        raise
    try:
        trace.wait_for_models(gw.url)
        yield emu, gw
    finally:
        gw.stop()
        emu.stop()


def _switch_metric(gw: ServerProcess) -> int:
    """The gateway's own count of loads it made (`lmgate_model_switches_total`)."""
    text = httpx.get(
        gw.url + "/metrics", headers={"Authorization": f"Bearer {trace.ADMIN}"}, timeout=10
    ).text
    return round(
        sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("lmgate_model_switches_total{")
        )
    )


@pytest.mark.timeout(240)
def test_thirty_seconds_of_mixed_traffic_cut_nothing_and_switch_less_than_fifo(
    trace_servers: tuple[ServerProcess, ServerProcess],
) -> None:
    emu, gw = trace_servers
    planned = trace.plan()
    assert len({p.model for p in planned}) == 3 and len({p.key for p in planned}) == 3
    assert 0 < sum(p.stream for p in planned) < len(planned)

    outcomes = asyncio.run(trace.drive(gw.url, planned))

    counts = trace.emulator_counts(emu.url)
    doc = trace.report(outcomes, int(counts["loads"]), counts)
    print()
    print(trace.table(doc))

    # Every request was answered in full, or refused with a clear OpenAI-style error.
    assert doc["broken"] == []
    for o in outcomes:
        if o.error is not None:
            assert o.status in REFUSALS, (o.status, o.error)
            assert {"message", "type", "code"} <= set(o.error) and o.error["message"]
        else:
            assert o.complete, (o.planned, o.status, o.finish, o.text)
    streams = [o for o in outcomes if o.planned.stream and o.error is None]
    assert streams and all(o.finish == "length" for o in streams)  # none cut short
    assert doc["complete"] >= 0.9 * len(outcomes)
    assert any(o.position >= 1 for o in outcomes)  # the queue was used

    # Never a model unloaded under an answer, never more answers than its slots.
    assert counts["busy_unloads"] == 0, counts["busy_unloaded"]
    assert counts["peak_generating"]
    assert all(n <= trace.SLOTS for n in counts["peak_generating"].values())

    # Switches happened (three models, room for one), the gateway counted the same loads the
    # upstream saw, and no more than plain FIFO needs on the same arrivals.
    switches = int(counts["loads"])
    assert switches >= 3 and counts["unloads"] <= switches
    assert _switch_metric(gw) == switches
    fifo = doc["fifo_replayed"]["switches"]
    print(f"switches: scheduler {switches}, FIFO on the same arrivals {fifo}")
    assert switches <= fifo

    # Nothing is left waiting or holding a slot.
    queue: dict[str, Any] = httpx.get(
        gw.url + "/debug/queue", headers={"Authorization": f"Bearer {trace.ADMIN}"}, timeout=10
    ).json()
    assert queue["waiting"] == []
    assert all(m["inFlight"] == 0 for m in queue["models"])
