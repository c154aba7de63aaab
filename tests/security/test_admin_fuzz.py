"""Property-based fuzzing of the admin API from its own OpenAPI schema: no input may cause a 5xx.

A dedicated gateway and emulator take the beating, since the fuzzer activates, loads and unloads
models and creates and revokes keys at random. `/debug/stream` never ends, so it is left out.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode

from tests.security.tools import bearer
from tests.servers import ADMIN_KEY, ServerProcess, start_emulator, start_gateway


@pytest.fixture(scope="module")
def fuzz_gateway(tmp_root: Path) -> Iterator[ServerProcess]:
    emulator = start_emulator(tmp_root, name="fuzz-emulator")
    gateway = start_gateway(
        tmp_root, emulator.url, env={"LMGATE_ADMIN_KEY": ADMIN_KEY}, data_dir=tmp_root / "fuzz"
    )
    yield gateway
    gateway.stop()
    emulator.stop()


@pytest.fixture(scope="module")
def admin_schema(fuzz_gateway: ServerProcess) -> schemathesis.BaseSchema:
    schema = schemathesis.openapi.from_url(
        fuzz_gateway.url + "/admin/openapi.json", headers=bearer(ADMIN_KEY)
    )
    return schema.exclude(path_regex=r"^/debug/stream")


def test_no_input_makes_the_admin_api_fail(admin_schema: schemathesis.BaseSchema) -> None:
    """Every operation, positive and negative data, 30 cases each; every 5xx is collected."""
    failures: list[str] = []
    calls: dict[str, int] = {}
    operations = [result.ok() for result in admin_schema.get_all_operations()]
    assert any(op.path == "/admin/keys" for op in operations)

    for operation in operations:

        @given(
            case=operation.as_strategy(generation_mode=GenerationMode.POSITIVE)
            | operation.as_strategy(generation_mode=GenerationMode.NEGATIVE)
        )
        @settings(
            max_examples=30,
            deadline=None,
            database=None,
            derandomize=True,
            suppress_health_check=list(HealthCheck),
        )
        def fuzz(case: schemathesis.Case) -> None:
            response = case.call(headers=bearer(ADMIN_KEY), timeout=30)
            calls[case.operation.label] = calls.get(case.operation.label, 0) + 1
            if response.status_code >= 500:
                failures.append(
                    f"{case.method} {case.formatted_path}: {response.status_code} "
                    + response.text[:200]
                )

        fuzz()
    assert not failures, "\n".join(failures[:20])
    assert len(calls) == len(operations) and sum(calls.values()) >= 10 * len(operations), calls
