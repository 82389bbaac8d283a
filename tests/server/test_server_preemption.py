"""KV exhaustion preempts and recomputes; every request still finishes in full."""

from __future__ import annotations

import asyncio

import httpx


async def _burst(url: str, n: int) -> list[httpx.Response]:
    async with httpx.AsyncClient(timeout=120) as client:
        body = {"max_tokens": 30, "ignore_eos": True, "temperature": 0}
        return await asyncio.gather(*(client.post(url, json={**body, "prompt": f"Story {i}: once upon a time"})
                                      for i in range(10)))


def test_kv_exhaustion_preempts_and_finishes(tight_server) -> None:
    before = tight_server.metrics()["cadence_num_preemptions_total"]
    results = asyncio.run(_burst(tight_server.v1 + "/completions", 10))
    assert [r.status_code for r in results] == [200] * 10
    assert all(r.json()["usage"]["completion_tokens"] == 30 for r in results)
    m = tight_server.wait_idle()
    assert m["cadence_num_preemptions_total"] > before
    assert m["cadence_kv_cache_free_blocks"] == m["cadence_kv_cache_total_blocks"]
    assert m["cadence_engine_step_failures_total"] == 0
