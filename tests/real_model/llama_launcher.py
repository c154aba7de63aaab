"""Start llama.cpp's server in this process and keep it up until SIGTERM or SIGINT.

`xllamacpp` has no command line of its own: this script is it. It runs with the engine's
cache directory on PYTHONPATH (see `engine.command`), so it imports nothing from lmgate.
"""

from __future__ import annotations

import argparse
import signal
import threading

import xllamacpp  # type: ignore[import-not-found]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--model", required=True)
    p.add_argument("--alias", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--ctx", type=int, default=4096)
    p.add_argument("--parallel", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--embeddings", action="store_true")
    args = p.parse_args()

    params = xllamacpp.CommonParams()
    params.model.path = args.model
    params.model_alias = {args.alias}
    params.hostnames = ["127.0.0.1"]
    params.port = args.port
    params.n_ctx = args.ctx
    params.n_parallel = args.parallel
    params.cpuparams.n_threads = args.threads
    params.cpuparams_batch.n_threads = args.threads
    params.ui = False
    params.endpoint_slots = True
    params.endpoint_metrics = True
    if args.embeddings:
        params.embedding = True
        params.pooling_type = xllamacpp.llama_pooling_type.LLAMA_POOLING_TYPE_MEAN

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    server = xllamacpp.Server(params)  # returns once the model is loaded and it listens
    print(f"llama.cpp server listening on {server.listening_address}", flush=True)
    stop.wait()
    del server  # its destructor stops the HTTP and inference loops


if __name__ == "__main__":
    main()
