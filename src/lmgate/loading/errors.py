"""The errors a load surface answers with, OpenAI-shaped like every error lmgate makes."""

from __future__ import annotations

from lmgate.errors import BadRequest, UpstreamError, UpstreamTimeout


class SurfaceUnavailable(BadRequest):
    """A load asked for a surface this upstream does not offer now."""

    code = "load_surface_unavailable"


class LoadFailed(UpstreamError):
    """The surface ran and the model did not load."""

    code = "model_load_failed"


class LoadTimedOut(UpstreamTimeout):
    code = "model_load_timeout"
