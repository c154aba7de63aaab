"""Requests in quick succession through one lmgate all reach the server.

llama.cpp's server closes its connection after every streamed answer, although it announces
keep-alive. A gateway that pools upstream connections must not hand the next request to one
the server has just closed: the client would get a 502 from a healthy server. The client
here is the standard library's, on one keep-alive connection to lmgate: it sends each
request the moment the previous answer ends, when that window is widest.
"""

from __future__ import annotations

import http.client
import json
from collections import Counter

from tests.real_model.conftest import Activate
from tests.real_model.engine import ALIAS
from tests.servers import API_KEY, ServerProcess

STREAMS = 100  # at the ~15% failure rate seen, all 100 succeed by chance once in 10**7
PLAIN = 30


def _statuses(gateway: ServerProcess, count: int, *, stream: bool) -> Counter[int]:
    message = {"role": "user", "content": "Hi"}
    body = json.dumps({"model": ALIAS, "messages": [message], "max_tokens": 1, "stream": stream})
    headers = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"}
    conn = http.client.HTTPConnection("127.0.0.1", gateway.port, timeout=60)
    seen: Counter[int] = Counter()
    try:
        for _ in range(count):
            conn.request("POST", "/v1/chat/completions", body, headers)
            answer = conn.getresponse()
            answer.read()
            seen[answer.status] += 1
    finally:
        conn.close()
    return seen


def test_back_to_back_plain_requests_all_succeed(
    activate: Activate, real_gateway: ServerProcess
) -> None:
    activate()
    assert _statuses(real_gateway, PLAIN, stream=False) == {200: PLAIN}


def test_back_to_back_streams_all_succeed(activate: Activate, real_gateway: ServerProcess) -> None:
    activate()
    assert _statuses(real_gateway, STREAMS, stream=True) == {200: STREAMS}
