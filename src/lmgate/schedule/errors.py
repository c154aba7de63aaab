"""The scheduler's refusals as the gateway's OpenAI-style errors: 429, 503 or 409 with
`Retry-After` when waiting can help."""

from __future__ import annotations

import math

from lmgate.errors import GatewayError
from lmgate.schedule.types import Reject


class SchedulerRefusal(GatewayError):
    type = "server_error"
    code = "scheduler_refused"

    def __init__(self, reject: Reject) -> None:
        headers = {}
        if reject.retry_after is not None:
            headers["Retry-After"] = str(max(1, math.ceil(reject.retry_after)))
        super().__init__(reject.message, code=reject.code, headers=headers)
        self.status = reject.status
        if reject.status == 429:
            self.type = "rate_limit_error"
        elif reject.status == 409:
            self.type = "invalid_request_error"
