"""A client that goes away mid-request aborts it within a step and its KV blocks come back."""

from __future__ import annotations

import time

import httpx
import pytest

LONG_RUN = {"prompt": "Tell me a long story about a dragon.", "max_tokens": 400, "ignore_eos": True,
            "temperature": 0}


def _wait_freed(server, timeout: float = 5.0) -> tuple[float, dict[str, float]]:
    start = time.monotonic()
    m = server.wait_idle(timeout)
    return time.monotonic() - start, m


@pytest.mark.parametrize("n", [1, 2])
def test_stream_disconnect_frees_kv_blocks(server, n: int) -> None:
    server.wait_idle()
    with httpx.Client(timeout=60) as client, client.stream(
        "POST", server.v1 + "/completions", json={**LONG_RUN, "n": n, "stream": True}
    ) as r:
        assert r.status_code == 200
        lines = r.iter_lines()
        got = 0
        for line in lines:
            got += line.startswith("data: ")
            if got >= 5:
                break
        during = server.metrics()
        assert during["cadence_kv_cache_usage_ratio"] > 0
        assert during["cadence_num_requests_running"] == n
    # leaving the block closes the connection mid-stream
    gen_at_close = server.metrics()["cadence_generation_tokens_total"]
    took, after = _wait_freed(server)
    assert after["cadence_num_requests_running"] == 0, after
    assert after["cadence_kv_cache_usage_ratio"] == 0.0
    assert after["cadence_kv_cache_free_blocks"] == after["cadence_kv_cache_total_blocks"]
    assert took < 2.0
    # Aborted within a step or so: nowhere near the 400 tokens asked for.
    assert after["cadence_generation_tokens_total"] - gen_at_close <= 3 * n


def test_non_stream_disconnect_frees_kv_blocks(server) -> None:
    server.wait_idle()
    before = server.metrics()["cadence_generation_tokens_total"]
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(server.v1 + "/completions", json=LONG_RUN, timeout=httpx.Timeout(60, read=1.0))
    took, after = _wait_freed(server)
    assert after["cadence_num_requests_running"] == 0
    assert after["cadence_kv_cache_usage_ratio"] == 0.0
    assert after["cadence_generation_tokens_total"] - before < 200
