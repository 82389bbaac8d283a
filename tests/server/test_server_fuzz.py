"""Schemathesis against the server's own OpenAPI schema: generated bodies, valid and not, never a 5xx."""

from __future__ import annotations

import contextlib
import time

import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

EXAMPLES = {GenerationMode.POSITIVE: 40, GenerationMode.NEGATIVE: 25}
BUDGET_S = 60  # the whole run, both modes


def test_fuzz_no_server_errors(tight_server) -> None:
    fuzz_server = tight_server  # its small context bounds every generated request
    schema = schemathesis.openapi.from_url(fuzz_server.url + "/openapi.json")
    operations = [op.ok() for op in schema.get_all_operations()]
    paths = {op.path for op in operations}
    assert {"/v1/completions", "/v1/chat/completions", "/v1/models", "/health", "/metrics"} <= paths
    deadline = time.monotonic() + BUDGET_S
    seen: dict[int, int] = {}

    for mode, examples in EXAMPLES.items():
        for op in operations:
            if time.monotonic() > deadline:
                break

            @settings(max_examples=examples, deadline=None, database=None, derandomize=True,
                      phases=[Phase.explicit, Phase.generate],
                      suppress_health_check=list(HealthCheck))
            @given(case=op.as_strategy(generation_mode=mode))
            def check(case: schemathesis.Case) -> None:
                if time.monotonic() > deadline:
                    return
                r = case.call(base_url=fuzz_server.url, timeout=60)
                seen[r.status_code] = seen.get(r.status_code, 0) + 1
                assert r.status_code < 500, (case.method, case.path, case.body, r.text)
                if r.status_code >= 400:
                    err = r.json()["error"]
                    assert {"message", "type", "param", "code"} <= set(err)

            with contextlib.suppress(Unsatisfiable):  # no inputs to break (negative mode, no parameters)
                check()
    print(f"\nfuzz: statuses {seen}")
    assert sum(seen.values()) > 50
    m = fuzz_server.wait_idle()
    assert m["cadence_kv_cache_usage_ratio"] == 0.0
    assert m["cadence_engine_step_failures_total"] == 0
    assert "Traceback" not in fuzz_server.log()
