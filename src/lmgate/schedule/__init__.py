"""The model scheduler's pure core: who is admitted next, which model to load or evict, where.

Every inference request passes through a `Scheduler` before it is forwarded. The core is
synchronous and does no I/O: the async shell feeds it events with the current monotonic time
and carries out the actions it returns, in order. One object holds the state of every upstream.

Driving it::

    sched = Scheduler(SchedulerConfig(queue_max=64), [UpstreamSpec("lms", max_loaded_models=2)])
    sched.observe("lms", now, {"qwen": 4}, sizes={"qwen": 4_000_000_000})  # after each sync
    for action in sched.submit(Request("r1", key="alice", model="qwen"), now):
        ...  # Admit -> forward; Reject -> answer the error; Load / Unload -> call the upstream

Events (each returns `list[Action]`):
    submit(request, now)                 a request arrives (admitted at once if it fits)
    cancel(request_id, now)              its client went away (waiting: leaves the queue)
    finish(request_id, now)              an admitted request's answer ended
    load_finished(up, model, now, slots) / load_failed(up, model, now, reason)
    load_started(up, model, now)         a load lmgate began outside the core (preload)
    unloaded(up, model, now) / unload_failed(up, model, now)
    observe(up, now, loaded, sizes)      the upstream's listing: {model: parallel | None}
    tick(now)                            time passed; call it by `next_deadline(now)` or ~1 s
    set_upstream(spec, now) / set_policy(model, policy, now)   limits, capability, profiles

Actions:
    Admit(request_id, upstream, model, waited, position)    forward it now
    Reject(request_id, status, code, message, retry_after)  answer 429 / 503 / 409
    Unload(upstream, model, reason)      idle_ttl | make_room; the model has nothing in flight
    Load(upstream, model, evicting, reason, key)   the Unloads of `evicting` come just before

Every request ends exactly once: Admit (then `finish`), Reject, or the shell's `cancel`.
Every Load is answered by `load_finished`/`load_failed`, every Unload by `unloaded`/
`unload_failed` (if an eviction fails, report the load as failed too).

Reading: `position(id, now)` -> `QueueInfo(position, eta_ms)` for `X-Queue-Position` and SSE
`: queued` comments; `positions(now)`; `snapshot(now)` for `/debug/queue`. Admin loads and
preloads go through `request_load(model, now)`, which obeys the same rules or raises
`LoadRefused`; `set_active(model)` names the model evicted last (the core never clears it).

Upstreams without load capability (`UpstreamSpec(can_load=False)`: LM Studio 0.3, plain OpenAI
servers) serve any model as asked (they may JIT-load it): queueing, slots and fairness apply,
switching does not. A model loaded on an upstream whose slots are full makes its requests wait
there; the core does not load a second copy elsewhere. An unknown `size_bytes` counts as 0.

`simulate.replay` runs a trace through the core (or a plain FIFO policy) on a fake clock and a
simulated upstream, and reports switches, waits per key and Jain's fairness index.
"""

from lmgate.schedule.core import Scheduler
from lmgate.schedule.types import (
    Action,
    Admit,
    Load,
    LoadRefused,
    ModelPolicy,
    ModelView,
    QueueInfo,
    Reject,
    Request,
    SchedulerConfig,
    Snapshot,
    Unload,
    UpstreamSpec,
    UpstreamView,
    WaitingView,
)

__all__ = [
    "Action",
    "Admit",
    "Load",
    "LoadRefused",
    "ModelPolicy",
    "ModelView",
    "QueueInfo",
    "Reject",
    "Request",
    "Scheduler",
    "SchedulerConfig",
    "Snapshot",
    "Unload",
    "UpstreamSpec",
    "UpstreamView",
    "WaitingView",
]
