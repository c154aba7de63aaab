"""Traces replayed through the core and through a plain FIFO loader: the core never evicts a
busy model, never exceeds slots, answers or refuses every request, switches models no more
often than FIFO (far less under contention), and keeps a lone key's wait within a service time
while another key floods."""

from __future__ import annotations

import pytest

from lmgate.schedule import SchedulerConfig, UpstreamSpec
from lmgate.schedule.simulate import Arrival, SimResult, random_trace, replay

ONE_MODEL_AT_A_TIME = UpstreamSpec("lms", max_loaded_models=1)


@pytest.mark.parametrize("seed", range(6))
def test_three_keys_three_models_switch_less_than_fifo_and_never_cut(seed: int) -> None:
    trace = random_trace(
        seed, keys=["a", "b", "c"], models=["m1", "m2", "m3"], duration=30.0, rate=1.5
    )
    config = SchedulerConfig(default_slots=2, switch_max_wait=10.0, queue_timeout=600.0)
    runs = {
        policy: replay(
            trace,
            upstream=ONE_MODEL_AT_A_TIME,
            load_time=1.0,
            slots=2,
            policy=policy,
            config=config,
        )
        for policy in ("fair", "fifo")
    }
    for run in runs.values():
        assert run.busy_evictions == 0 and run.over_slots == 0 and run.unanswered == 0
        assert sum(len(w) for w in run.waits.values()) == len(trace)
    fair, fifo = runs["fair"], runs["fifo"]
    assert fair.switches <= fifo.switches
    assert fair.switches <= 0.6 * fifo.switches, (fair.summary(), fifo.summary())
    assert fair.jain() > 0.8


def test_a_lone_key_waits_at_most_one_service_time_while_another_floods() -> None:
    service = 2.0
    flood = [Arrival(0.0, "A", "m", service) for _ in range(50)]
    lone = [Arrival(0.5 + i, "B", "m", service) for i in range(20)]
    result = replay(
        flood + lone,
        upstream=UpstreamSpec("lms"),
        load_time=1.0,
        slots=4,
        preloaded=["m"],
        config=SchedulerConfig(default_slots=4, queue_max=100),
    )
    assert result.unanswered == 0 and not result.rejected
    assert max(result.waits["B"]) <= service + 1e-9
    assert result.mean_wait("A") > 5 * result.mean_wait("B")
    fifo = replay(
        flood + lone,
        upstream=UpstreamSpec("lms"),
        load_time=1.0,
        slots=4,
        preloaded=["m"],
        policy="fifo",
    )
    assert max(fifo.waits["B"]) > 5 * service  # what the fair order saves B from


def test_jain_index_and_percentiles() -> None:
    equal = SimResult(waits={"a": [1.0, 3.0], "b": [2.0, 2.0]})
    assert equal.jain() == pytest.approx(1.0)
    skewed = SimResult(waits={"a": [0.0], "b": [0.0], "c": [9.0]})
    assert skewed.jain() == pytest.approx(1 / 3)
    assert SimResult(waits={"a": [0.0]}).jain() == 1.0
    waits = SimResult(waits={"a": [float(i) for i in range(1, 101)]})
    assert waits.p99_wait("a") == 99.0 and waits.mean_wait("a") == 50.5
