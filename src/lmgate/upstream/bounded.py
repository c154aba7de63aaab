"""Reads of lmgate's own calls to the upstream (model lists, probes, loads), with a size cap.

Relayed answers are streamed and never held, but what lmgate asks for itself is read whole and
parsed. A broken or hostile upstream answering a model list with gigabytes must cost at most
`CONTROL_READ_LIMIT` bytes, then a clear error: the cap is checked against `Content-Length`
before anything is read and against the bytes as they arrive.
"""

from __future__ import annotations

import aiohttp

from lmgate.errors import UpstreamError

CONTROL_READ_LIMIT = 8 * 1024 * 1024  # a model list of thousands of models is under 1 MiB


class AnswerTooLarge(UpstreamError):
    code = "upstream_answer_too_large"


def _too_large(what: str, limit: int) -> AnswerTooLarge:
    return AnswerTooLarge(
        f"the upstream's answer to {what} is larger than {limit // 1024} KiB, the most lmgate "
        "reads of an answer to its own calls"
    )


async def read_bounded(
    resp: aiohttp.ClientResponse, what: str, limit: int = CONTROL_READ_LIMIT
) -> bytearray:
    """The whole body of `resp` in one buffer (orjson parses it as it is), or `AnswerTooLarge`;
    the connection is then dropped, not drained."""
    declared = resp.content_length
    if declared is not None and declared > limit:
        resp.close()
        raise _too_large(what, limit)
    body = bytearray()
    async for chunk in resp.content.iter_any():
        if len(body) + len(chunk) > limit:
            resp.close()
            raise _too_large(what, limit)
        body += chunk
    return body
