"""Command line: `python -m lmgate.emulator --port N [options]`.

Prints one "listening" line once the socket is bound (scripts wait for it), and leaves
SIGINT/SIGTERM to uvicorn's graceful shutdown, after which the process exits with status 0.
"""

from __future__ import annotations

import argparse
import dataclasses
import signal
import socket
import sys
from pathlib import Path
from types import FrameType

import uvicorn

from lmgate.emulator.app import create_app
from lmgate.emulator.config import DEFAULT_MODELS, EmulatorConfig, load_models_file


def parse_args(argv: list[str] | None = None) -> EmulatorConfig:
    parser = argparse.ArgumentParser(
        prog="python -m lmgate.emulator", description="Serve a fake LM Studio over HTTP."
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=1234, help="0 picks a free port")
    parser.add_argument("--version", choices=["0.3", "0.4"], default="0.4")
    parser.add_argument("--token-delay", type=float, default=0.01, metavar="SECONDS")
    parser.add_argument("--api-token", default=None, help="require this token (Bearer/x-api-key)")
    parser.add_argument("--unknown-status", type=int, choices=[200, 404], default=200)
    parser.add_argument("--no-jit", action="store_true", help="disable just-in-time loading")
    parser.add_argument("--no-preload", action="store_true", help="start with nothing loaded")
    parser.add_argument("--no-auto-evict", action="store_true", help="keep older JIT models")
    parser.add_argument(
        "--no-sdk", action="store_true", help="serve no SDK websocket API (HTTP surfaces only)"
    )
    parser.add_argument(
        "--openai-only",
        action="store_true",
        help="a plain OpenAI-compatible server: /v1/* only, nothing of LM Studio's own",
    )
    parser.add_argument("--load-delay", type=float, default=0.05, metavar="SECONDS")
    parser.add_argument("--models", type=Path, default=None, metavar="FILE.json")
    parser.add_argument(
        "--parallel", type=int, default=None, metavar="N", help="slots of every model's instance"
    )
    parser.add_argument(
        "--download-speed",
        type=float,
        default=500_000_000.0,
        metavar="BYTES",
        help="bytes per second of a faked model download (REST v1)",
    )
    parser.add_argument(
        "--download-size", type=int, default=1_000_000_000, metavar="BYTES", help="of each download"
    )
    args = parser.parse_args(argv)
    try:
        models = load_models_file(args.models) if args.models else DEFAULT_MODELS
    except (OSError, ValueError, TypeError) as exc:
        parser.error(f"--models: {exc}")
    if args.parallel is not None:
        models = tuple(dataclasses.replace(m, parallel=max(1, args.parallel)) for m in models)
    return EmulatorConfig(
        host=args.host,
        port=args.port,
        version=args.version,
        token_delay=max(0.0, args.token_delay),
        api_token=args.api_token or None,
        unknown_status=404 if args.openai_only else args.unknown_status,
        jit=not args.no_jit,
        preload=not args.no_preload,
        load_delay=max(0.0, args.load_delay),
        models=models,
        auto_evict=not args.no_auto_evict,
        sdk=not args.no_sdk and not args.openai_only,
        openai_only=args.openai_only,
        download_speed=max(1.0, args.download_speed),
        download_size=max(1, args.download_size),
    )


class _AnnouncingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, emulator: EmulatorConfig) -> None:
        super().__init__(config)
        self.emulator = emulator

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if not self.started or not self.servers:
            return
        port = self.emulator.port
        for server in self.servers:
            for sock in server.sockets:
                port = sock.getsockname()[1]
        host = self.emulator.host
        url = f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
        print(f"lmgate emulator (LM Studio {self.emulator.version}) listening on {url}", flush=True)


def _exit_cleanly(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


def main(argv: list[str] | None = None) -> int:
    config = parse_args(argv)
    # uvicorn shuts down gracefully on these, then re-raises them to the previous handler:
    # make that handler a plain exit instead of a traceback or death-by-signal.
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _exit_cleanly)
    server_config = uvicorn.Config(
        create_app(config),
        host=config.host,
        port=config.port,
        log_level="warning",
        access_log=False,
        server_header=False,
        lifespan="off",
        timeout_graceful_shutdown=2,
    )
    _AnnouncingServer(server_config, config).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
