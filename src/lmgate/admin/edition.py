"""The TypeScript edition's admin API, kept working: its load fields and its model list shape.

Its load body carried `instanceId` / `identifier` (the name to load an instance under) and
`ttlSeconds`. LM Studio's REST API names instances itself and takes no load TTL, so lmgate
stores the TTL with the load config (as `ttl`), passes both to the `lms load` command it
suggests when it cannot load by itself, and reports what it could not apply under
`notApplied`, as it does for every other load setting.
"""

from __future__ import annotations

from typing import Any

from lmgate.admin.schemas import EditionFields

IDENTIFIER_REASON = (
    "LM Studio's REST API names loaded instances itself (see instanceId in this answer); to "
    "choose the name, load with `lms load MODEL --identifier NAME` on the LM Studio machine"
)
ACTIVATE_REASONS = {
    "instanceId": "activation makes a model key the default; a request names an instance by "
    "sending its id as `model`",
    "identifier": "activation makes a model key the default; a request names an instance by "
    "sending its id as `model`",
    "ttlSeconds": "a TTL belongs to a load: send it with POST /admin/models/load",
}


def wanted_identifier(body: EditionFields) -> str | None:
    return body.identifier or body.instance_id


def with_ttl(body: EditionFields, config: dict[str, Any]) -> dict[str, Any]:
    """The load config, with the edition's `ttlSeconds` as `ttl` unless one was given."""
    if body.ttl_seconds is None or "ttl" in config:
        return config
    return {**config, "ttl": body.ttl_seconds}


def load_not_applied(
    body: EditionFields, not_applied: dict[str, str], instance_id: str | None
) -> dict[str, str]:
    """`notApplied` in the names the request used: `ttlSeconds` for a TTL sent that way, and
    `instanceId` / `identifier` when the instance did not get that name."""
    out = dict(not_applied)
    if body.ttl_seconds is not None and "ttl" in out:
        out["ttlSeconds"] = out.pop("ttl")
    wanted = wanted_identifier(body)
    if wanted is not None and wanted != instance_id:
        for name, value in (("instanceId", body.instance_id), ("identifier", body.identifier)):
            if value is not None:
                out[name] = IDENTIFIER_REASON
    return out


BY_HAND = (
    "this upstream cannot be told to load models: the workflow's `lms load` command applies it"
)


def stored_not_applied(body: EditionFields) -> dict[str, str]:
    """For an upstream lmgate cannot load on: the edition's fields wait for the load by hand."""
    given = {
        "instanceId": body.instance_id,
        "identifier": body.identifier,
        "ttlSeconds": body.ttl_seconds,
    }
    return {name: BY_HAND for name, value in given.items() if value is not None}


def activate_not_applied(body: EditionFields) -> dict[str, str]:
    given = {
        "instanceId": body.instance_id,
        "identifier": body.identifier,
        "ttlSeconds": body.ttl_seconds,
    }
    return {name: ACTIVATE_REASONS[name] for name, value in given.items() if value is not None}


def edition_model(entry: dict[str, Any]) -> dict[str, Any]:
    """A model as the edition's `/admin/models` listed it under `data`: LM Studio's v0 model
    fields (`id`, `object`, `type`, `state`, ...) and lmgate's view of it."""
    return {
        "id": entry["key"],
        "object": "model",
        "type": entry.get("type"),
        "state": "loaded" if entry.get("loaded") else "not-loaded",
        "max_context_length": entry.get("maxContextLength"),
        "quantization": entry.get("quantization"),
        "format": entry.get("format"),
        "instances": [i["id"] for i in entry.get("instances") or []],
        "available": entry.get("available", True),
        "active": entry.get("active", False),
    }


def edition_listing(models: list[dict[str, Any]]) -> dict[str, Any]:
    """The edition's `{"data": [...]}`, loaded and downloaded models alike."""
    return {"object": "list", "data": [edition_model(m) for m in models]}
