"""`GET /`: where a person who typed the gateway's address lands.

A browser is sent on to the dashboard; any other client gets a JSON hint naming the paths it
probably wants. It tells nothing the public dashboard does not, so it needs no key.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response

DASHBOARD = "/dashboard/"


def _wants_html(request: Request) -> bool:
    accept = request.headers.get("accept", "")
    return "text/html" in accept or "application/xhtml+xml" in accept


async def landing(request: Request) -> Response:
    if _wants_html(request):
        return RedirectResponse(DASHBOARD, status_code=302)
    return JSONResponse(
        {
            "service": "lmgate",
            "message": "This is an lmgate gateway. Open /dashboard/ in a browser; point "
            "OpenAI clients at /v1 and Anthropic clients at this address.",
            "dashboard": DASHBOARD,
            "openai": "/v1",
            "health": "/health",
        }
    )
