"""The scheduler core's own cost per request: `python -m bench.scheduler`.

A request that finds its model loaded with a free slot is admitted without touching the queue;
this measures submit + finish of such requests, alone and while other requests wait for
another, busy model (a long queue must not slow the fast path). Best of five runs of CPU time
(`time.process_time`); the target is well under 30 µs per request.
"""

from __future__ import annotations

import argparse
import time

from lmgate.schedule import Request, Scheduler, SchedulerConfig, UpstreamSpec


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


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.scheduler", description=__doc__)
    p.add_argument("--waiting", type=int, nargs="*", default=[0, 500, 5000])
    args = p.parse_args(argv)
    for waiting in args.waiting:
        cost = fast_path_cost(waiting)
        print(
            f"free slot, {waiting:>5} waiting for another model: {cost * 1e6:6.2f} µs per request"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
