"""Tools the upstream runs itself, for keys that hold the permission only.

LM Studio can use tools on a request's behalf: `/api/v1/chat` takes `integrations` (MCP
servers from its `mcp.json`, which may read files and run commands on the machine it runs on,
its plugins, or remote MCP servers given by URL and headers), and `/v1/responses` takes remote
MCP servers as `tools`. A request that carries any of them needs a key with the tools
permission (`--tools allow`); admin keys have it, inference keys do not unless given it.
With auth off (no key exists) only clients on this machine may: that is the operator, while
anyone else (possible only with `--insecure-no-auth`) is anonymous.

Function tools stay open to every key: the model only asks for a call, and the client runs
it and sends the result back, so nothing runs on the upstream's side. Deny by default: a tool
entry the client does not run itself (any `type` but the client-side ones) needs the
permission, whichever endpoint it is sent to, as do non-empty `integrations` or `mcp_servers`
(Anthropic's MCP connector) and MCP items in a Responses `input`.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from lmgate.errors import Forbidden
from lmgate.exchange import Exchange
from lmgate.guard.auth import principal_of
from lmgate.guard.keys import Principal
from lmgate.hooks import ProxyRequest, ResponseTap

# Tool types whose calls the client runs itself. An entry without a type is one too: a tool
# the upstream runs needs its type for the upstream to know it.
_CLIENT_TYPES = frozenset({"function", "custom"})
# Anthropic's client-side tools are typed by version, e.g. `bash_20250124`.
_CLIENT_PREFIXES = ("bash_", "text_editor_", "computer_", "memory_")
_FIELDS = ("integrations", "mcp_servers")  # present and not empty: tools for the upstream


def _server_tool(entry: object, kind: str) -> str | None:
    """What makes a `tools` entry one the upstream would run, or None for a client's tool."""
    if not isinstance(entry, dict):
        return "a tool that is not an object"
    type_ = entry.get("type")
    if type_ is None or type_ in _CLIENT_TYPES:
        return None
    if kind == "messages" and isinstance(type_, str) and type_.startswith(_CLIENT_PREFIXES):
        return None
    shown = type_[:40] if isinstance(type_, str) else type(type_).__name__
    return f"a tool of type '{shown}'"


def upstream_tools(body: dict[str, Any], kind: str) -> str | None:
    """What in an inference body would have the upstream use tools itself, if anything."""
    for name in _FIELDS:
        if body.get(name):
            return f"'{name}'"
    tools = body.get("tools")
    if tools:
        if not isinstance(tools, list):
            return "'tools' that is not a list"
        for entry in tools:
            found = _server_tool(entry, kind)
            if found is not None:
                return found
    if kind == "responses":
        items = body.get("input")
        if isinstance(items, list):
            for item in items:
                if isinstance(item, dict):
                    type_ = item.get("type")
                    if isinstance(type_, str) and type_.startswith("mcp"):
                        return f"an input item of type '{type_[:40]}'"
    return None


def refusal(principal: Principal | None, what: str) -> Forbidden:
    who = f"key '{principal.name}'" if principal else "a request without a key from elsewhere"
    return Forbidden(
        f"{who} may not have the upstream use tools ({what} in the request); an operator "
        "can make a key that may with 'lmgate keys create --tools allow' "
        'or POST /admin/keys {"tools": "allow"}',
        code="tools_not_allowed",
    )


def _local(client: str | None) -> bool:
    try:
        return client is not None and ipaddress.ip_address(client).is_loopback
    except ValueError:
        return False


class ToolAccess:
    """A proxy hook; costs one attribute read for keys with the permission."""

    async def before_forward(self, ex: Exchange, request: ProxyRequest) -> ResponseTap | None:
        body = request.body
        if body is None or request.kind is None:
            return None
        principal = principal_of(request.scope)
        if principal is not None and principal.tools:
            return None
        what = upstream_tools(body, request.kind)
        if what is not None and (principal is not None or not _local(ex.client)):
            raise refusal(principal, what)
        return None
