"""The scheduler core's own cost per request: `python -m bench.scheduler`.

A request that finds its model loaded with a free slot is admitted without touching the queue;
this measures submit + finish of such requests, alone and while other requests wait for
another, busy model (a long queue must not slow the fast path). Best of five runs of CPU time
(`time.process_time`); the target is well under 30 µs per request.

It then measures the same through the gateway's shell (`SchedulerShell.before_forward` and
`on_finish`, as the proxy and the exchange middleware call them): building the core's request,
the model lookup, the verdict, and freeing the slot.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from lmgate.exchange import Exchange
from lmgate.gateway import Gateway
from lmgate.hooks import ProxyRequest
from lmgate.schedule import Request, Scheduler, SchedulerConfig, UpstreamSpec
from lmgate.settings import Settings
from lmgate.upstream.capabilities import Capabilities
from lmgate.upstream.inventory import Instance, UpstreamModel


def fast_path_cost(waiting_elsewhere: int, requests: int = 2000, runs: int = 5) -> float:
    """Best per-request CPU seconds for submit + finish on a loaded model with free slots."""
    sched = Scheduler(
        SchedulerConfig(queue_max=100_000), [UpstreamSpec("lms", max_loaded_models=2)]
    )
    sched.observe("lms", 0.0, {"hot": 4, "busy": 1})
    sched.submit(Request("hold", "k", "busy"), 0.0)
    for i in range(waiting_elsewhere):
        sched.submit(Request(f"w{i}", f"k{i % 7}", "busy"), 0.0)
    batch = [Request(str(i), "k", "hot") for i in range(requests)]
    best = float("inf")
    for _ in range(runs):
        start = time.process_time()
        for request in batch:
            sched.submit(request, 1.0)
            sched.finish(request.id, 1.0)
        best = min(best, (time.process_time() - start) / len(batch))
    return best


def shell_cost(requests: int = 2000, runs: int = 5) -> float:
    """Best per-request CPU seconds through the shell when nothing waits."""
    with tempfile.TemporaryDirectory() as tmp:
        gw = Gateway.build(Settings(data_dir=Path(tmp), _env_file=None))
        shell, watcher = gw.scheduler, gw.watcher
        watcher.caps = Capabilities(reachable=True, native_v1=True)
        hot = Instance("hot", "hot", {"parallel": 4})
        watcher.models = {"hot": UpstreamModel("hot", "llm", (hot,))}
        watcher.instances = {"hot": hot}
        shell.synced()
        body = {"model": "hot"}
        best = float("inf")
        for _ in range(runs):
            pairs = [
                (
                    Exchange(str(i), "POST", "/v1/chat/completions", None, model="hot"),
                    ProxyRequest({}, "POST", "/v1/chat/completions", "chat", body),
                )
                for i in range(requests)
            ]
            start = time.process_time()
            for ex, request in pairs:
                step = shell.before_forward(ex, request)
                try:
                    step.send(None)
                except StopIteration:  # admitted without waiting: no suspension
                    pass
                else:
                    raise AssertionError("the fast path waited")
                shell.on_finish(ex)
            best = min(best, (time.process_time() - start) / requests)
        gw.db.close()
        return best


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.scheduler", description=__doc__)
    p.add_argument("--waiting", type=int, nargs="*", default=[0, 500, 5000])
    args = p.parse_args(argv)
    for waiting in args.waiting:
        cost = fast_path_cost(waiting)
        print(
            f"free slot, {waiting:>5} waiting for another model: {cost * 1e6:6.2f} µs per request"
        )
    cost = shell_cost()
    print(f"through the gateway's shell, nothing waiting:   {cost * 1e6:6.2f} µs per request")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
