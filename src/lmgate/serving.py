"""What serving the app takes, the same for one process and for each of several workers:
uvicorn's options, and the garbage collector settled once the app is built."""

from __future__ import annotations

import gc
import sys
from typing import Any

from lmgate.settings import Settings
from lmgate.shutdown import SHUTDOWN_MARGIN

# Python collects its youngest generation every 700 allocations; a proxied request makes a few
# hundred, so it paid a collection every other request, and a full one every few thousand
# walked every live event, exchange and tally. Rarer collections measured 7 % less CPU per
# request, plain or streamed, and fewer pauses in streams; garbage with cycles (almost none
# here) waits a little longer to be freed.
GC_THRESHOLDS = (50_000, 20, 100)


def settle_collector() -> None:
    """Once the app is built: what lives as long as the process leaves the collector's sight
    (so full collections stay short and do not stall streams), and collections get rarer."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def server_options(settings: Settings) -> dict[str, Any]:
    """uvicorn's options apart from the app and its HTTP protocol."""
    return {
        "host": settings.host,
        "port": settings.port,
        "loop": "uvloop" if sys.platform != "win32" else "auto",
        "ssl_certfile": settings.tls_cert,
        "ssl_keyfile": settings.tls_key,
        "proxy_headers": False,  # the guard decides whom to trust, not uvicorn
        "server_header": False,
        "access_log": False,
        "log_config": None,
        "log_level": settings.log_level,
        # lmgate ends what is still running when its own grace is over (`shutdown.Drain`):
        # uvicorn's limit, past it, is only for what is not a proxied request.
        "timeout_graceful_shutdown": settings.shutdown_grace + SHUTDOWN_MARGIN,
    }
