"""Assemble the emulated LM Studio server for one `EmulatorConfig`.

Which routes exist depends on the emulated version: 0.3 has the OpenAI-compatible routes
(including `/v1/responses`, added in 0.3.29) and REST v0; 0.4 adds REST v1 and
`/v1/messages`. Everything else falls through to the unexpected-endpoint quirk. Like LM
Studio's Express server, routing ignores letter case (path parameters keep theirs) and a
trailing slash.
"""

from __future__ import annotations

import re

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from lmgate.emulator import (
    anthropic_routes,
    downloads,
    hook_routes,
    native_v0_routes,
    native_v1_routes,
    openai_routes,
    responses_routes,
    sdk_endpoints,
)
from lmgate.emulator.config import EmulatorConfig
from lmgate.emulator.middleware import FrontDoor
from lmgate.emulator.quirks import unexpected_endpoint
from lmgate.emulator.replies import EmulatorError, error_response, json_response
from lmgate.emulator.state import EmulatorState


async def greeting(request: Request) -> Response:
    return json_response({"lmstudio": True})


def create_app(config: EmulatorConfig | None = None) -> Starlette:
    """A fresh app with its own state, reachable as `app.state.emulator`."""
    state = EmulatorState(config or EmulatorConfig())
    routes: list[BaseRoute] = []
    if not state.config.openai_only:
        routes.append(Route("/lmstudio-greeting", greeting, methods=["GET"]))
    routes += openai_routes.routes()
    if not state.config.openai_only:
        routes += responses_routes.routes()
        routes += native_v0_routes.routes()
    if state.config.has_v1_api and not state.config.openai_only:
        routes += anthropic_routes.routes()
        routes += native_v1_routes.routes()
        routes += downloads.routes()
        routes += downloads.hook_routes()
    routes += hook_routes.routes()
    if state.config.sdk:
        routes += sdk_endpoints.routes()  # the SDK's websocket namespaces and their test hook
    for route in routes:
        if isinstance(route, Route):  # Express matches paths whatever their letter case
            route.path_regex = re.compile(route.path_regex.pattern, re.IGNORECASE)
    app = Starlette(
        routes=routes,
        middleware=[Middleware(FrontDoor, state=state)],
        exception_handlers={
            404: unexpected_endpoint,
            405: unexpected_endpoint,
            EmulatorError: error_response,
        },
    )
    app.router.redirect_slashes = False
    app.state.emulator = state
    return app
