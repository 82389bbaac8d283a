"""Back-pressure (--max-queue) and the API key, on a server of their own."""

from __future__ import annotations

import asyncio
import statistics
import time

import httpx
import openai
import pytest

KEY = "sekrit-key"
AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture(scope="module")
def small_server(launch):
    # The key comes from the environment, as `cadence serve` documents.
    return launch("--max-queue", "4", "--max-num-seqs", "4", env={"CADENCE_API_KEY": KEY}).wait_ready()


def test_api_key_required_on_v1_routes(small_server) -> None:
    url = small_server.v1 + "/completions"
    body = {"prompt": "hi", "max_tokens": 2}
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY}):
        r = httpx.post(url, json=body, headers=headers, timeout=60)
        assert r.status_code == 401
        assert r.json()["error"]["type"] == "authentication_error"
        assert r.json()["error"]["code"] == "invalid_api_key"
    assert httpx.get(small_server.v1 + "/models").status_code == 401
    assert httpx.post(url, json=body, headers=AUTH, timeout=60).status_code == 200
    assert httpx.get(small_server.url + "/health").status_code == 200
    assert httpx.get(small_server.url + "/metrics").status_code == 200
    client = openai.OpenAI(base_url=small_server.v1, api_key=KEY, max_retries=0)
    assert client.completions.create(model=client.models.list().data[0].id, prompt="hi", max_tokens=2).usage
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=small_server.v1, api_key="nope", max_retries=0).models.list()


async def _one(client: httpx.AsyncClient, url: str, i: int) -> tuple[int, float, httpx.Response]:
    start = time.monotonic()
    body = {"prompt": f"Request {i}: write a poem.", "max_tokens": 16, "ignore_eos": True, "temperature": 0}
    r = await client.post(url, json=body, headers=AUTH)
    return r.status_code, time.monotonic() - start, r


async def _burst(url: str, n: int) -> list[tuple[int, float, httpx.Response]]:
    limits = httpx.Limits(max_connections=n, max_keepalive_connections=n)
    async with httpx.AsyncClient(timeout=120, limits=limits) as client:
        return await asyncio.gather(*(_one(client, url, i) for i in range(n)))


def test_full_queue_gets_503_quickly_and_the_rest_finish(small_server) -> None:
    start = time.monotonic()
    results = asyncio.run(_burst(small_server.v1 + "/completions", 64))
    wall = time.monotonic() - start
    ok = [(t, r) for s, t, r in results if s == 200]
    refused = [(t, r) for s, t, r in results if s == 503]
    assert len(ok) + len(refused) == 64, [s for s, _, _ in results]
    assert refused and ok
    for _t, r in refused:
        assert r.headers["retry-after"] == "1"
        assert r.json()["error"]["code"] == "queue_full"
    for _t, r in ok:
        assert r.json()["usage"]["completion_tokens"] == 16
    refused_s = sorted(t for t, _ in refused)
    print(f"\noverload: {len(ok)} served, {len(refused)} refused; 503 latency median "
          f"{statistics.median(refused_s):.3f} s, max {refused_s[-1]:.3f} s; burst wall {wall:.2f} s")
    assert statistics.median(refused_s) < 2.0
    assert max(refused_s) < 5.0
    m = small_server.wait_idle()
    assert m["cadence_kv_cache_usage_ratio"] == 0.0
