"""The `model` of an inference body, refused when it cannot be a model's name.

A model name is recorded everywhere (log lines, events, statistics, Prometheus labels, usage
rows), so one of any length would cost memory and disk on every request that carries it.
LM Studio's identifiers (`publisher/name@quant`, instance ids, file paths) are short,
printable strings; anything else (too long, not a string, control characters that would
garble a log line or a terminal) is refused with 400 before any of it is recorded. An
explicit `null` passes: the upstream decides what no model means.
"""

from __future__ import annotations

from lmgate.errors import BadRequest
from lmgate.exchange import Exchange
from lmgate.hooks import ProxyRequest, ResponseTap

MAX_MODEL_CHARS = 256


def model_problem(model: object) -> tuple[str, str] | None:
    """Why `model` (a body's field, not None) cannot be a model's name, and the error code."""
    if not isinstance(model, str):
        return f"'model' must be a string, not {type(model).__name__}", "invalid_model"
    if len(model) > MAX_MODEL_CHARS:
        return (
            f"'model' is {len(model)} characters long; model names have at most {MAX_MODEL_CHARS}",
            "model_name_too_long",
        )
    if not model.isprintable():  # control characters, invisible formatting, odd spaces
        return "'model' holds characters that are not printable", "invalid_model"
    return None


class ModelNameCheck:
    """A proxy hook, first in line: the relay has put the body's model on the exchange by
    now, and a refused name is taken off it again so that nothing records it. The error is
    raised where it is made, never held in a local: a frame that held it would hold the
    body too, in a reference cycle left for a collector that runs rarely."""

    async def before_forward(self, ex: Exchange, request: ProxyRequest) -> ResponseTap | None:
        body = request.body
        if body is None:
            return None
        model = body.get("model")
        if model is None:
            return None
        problem = model_problem(model)
        if problem is not None:
            ex.model = None
            raise BadRequest(problem[0], code=problem[1], param="model")
        return None
