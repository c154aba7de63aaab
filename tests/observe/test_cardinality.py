"""Model names kept by name, in-process: the cap, `other`, known models first, and the three
consumers (windows, Prometheus, usage rows) agreeing on one name per request."""

from __future__ import annotations

import re
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from lmgate.exchange import Exchange
from lmgate.observe.cardinality import OTHER, ModelNames
from lmgate.observe.prometheus import PrometheusMetrics
from lmgate.observe.usage_recorder import UsageRecorder
from lmgate.observe.windows import Metrics
from lmgate.store.db import Database


def test_the_first_names_are_kept_and_the_rest_are_other() -> None:
    names = ModelNames(3)
    assert [names(f"m{i}") for i in range(5)] == ["m0", "m1", "m2", OTHER, OTHER]
    assert names("m1") == "m1"  # a kept name stays kept
    assert names(None) is None and names("") == ""  # no model is not a name
    assert len(names.tracked) == 3


def test_models_the_upstream_offers_never_compete_for_the_places() -> None:
    offered = {"qwen/qwen3-4b", "google/gemma-3-1b"}
    names = ModelNames(2, known=offered.__contains__)
    assert [names(f"junk-{i}") for i in range(10)][-1] == OTHER  # the places are full
    assert names("qwen/qwen3-4b") == "qwen/qwen3-4b"
    assert names("google/gemma-3-1b") == "google/gemma-3-1b"
    assert names.strangers == 2
    none_kept = ModelNames(0, known=offered.__contains__)
    assert none_kept("qwen/qwen3-4b") == "qwen/qwen3-4b" and none_kept("other-model") == OTHER


@given(st.lists(st.text(min_size=1, max_size=20), max_size=300), st.integers(0, 50))
def test_never_more_strangers_than_the_limit(values: list[str], limit: int) -> None:
    names = ModelNames(limit)
    out = {names(v) for v in values}
    assert len(names.tracked) <= limit
    assert len(out - {OTHER}) <= limit


def _ex(model: str, endpoint: str = "chat") -> Exchange:
    ex = Exchange("r", "POST", "/v1/chat/completions", "127.0.0.1")
    ex.endpoint, ex.model, ex.key_name, ex.status = endpoint, model, "k1", 400
    ex.tokens_in, ex.tokens_out = 3, 4
    ex.finish(12.0)
    return ex


def test_windows_prometheus_and_usage_share_the_cap(tmp_path: Path) -> None:
    names = ModelNames(5, known={"qwen/qwen3-4b"}.__contains__)
    metrics = Metrics(models=names)
    prometheus = PrometheusMetrics(models=names)
    usage = UsageRecorder(Database(tmp_path), models=names, clock=lambda: 1_000_000.0)
    exchanges = [_ex(f"made-up-{i:04d}-" + "x" * 200) for i in range(2000)]
    exchanges.append(_ex("qwen/qwen3-4b"))
    for ex in exchanges:
        for observer in (metrics, prometheus, usage):
            observer.on_start(ex)
            observer.on_finish(ex)

    by_model = metrics.snapshot()["windows"]["sinceStart"]["byModel"]
    assert len(by_model) == 7  # five made-up names, other, and the model the upstream offers
    assert by_model[OTHER]["requests"] == 1995
    assert by_model["qwen/qwen3-4b"]["requests"] == 1

    text = prometheus.render().decode()
    labels = set(re.findall(r'model="([^"]*)"', text))
    assert labels == set(by_model)
    assert len(text) < 200_000

    rows = {key[2] for key in usage.pending}
    assert rows == set(by_model)
    assert sum(row.requests for row in usage.pending.values()) == 2001


def test_a_failed_answer_adds_only_its_count_and_duration() -> None:
    prometheus = PrometheusMetrics(models=ModelNames(5))
    failed = _ex("made-up")
    failed.tokens_in = failed.tokens_out = None
    prometheus.on_start(failed)
    prometheus.on_finish(failed)
    series = {
        line.split("{")[0]
        for line in prometheus.render().decode().splitlines()
        if 'model="made-up"' in line
    }
    assert series == {
        "lmgate_inference_requests_total",
        "lmgate_inference_requests_created",
        "lmgate_inference_duration_seconds_bucket",
        "lmgate_inference_duration_seconds_count",
        "lmgate_inference_duration_seconds_sum",
        "lmgate_inference_duration_seconds_created",
    }
    answered = _ex("made-up")
    answered.ttft_ms = 5.0
    answered.finish(12.0)
    prometheus.on_start(answered)
    prometheus.on_finish(answered)
    text = prometheus.render().decode()
    assert 'lmgate_time_to_first_token_seconds_count{endpoint="chat",model="made-up"} 1.0' in text
    assert 'lmgate_tokens_total{direction="out",key="k1",model="made-up"} 4.0' in text
    assert 'lmgate_output_tokens_per_second_count{model="made-up"} 1.0' in text
