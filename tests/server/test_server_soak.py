"""A bounded soak: 400 mixed requests, 16 at a time, some cancelled mid-stream, some invalid."""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections import Counter

import httpx

NUM_REQUESTS = 400
CONCURRENCY = 16
TOPICS = ["the sea", "a cat", "mountains", "bread", "the moon", "trains", "rain", "chess"]
INVALID = [
    {"prompt": "hi", "max_tokens": -1},
    {"prompt": "hi", "temperature": -2},
    {"prompt": "hi", "top_p": 3},
    {"model": "nope", "prompt": "hi"},
    {"prompt": "hi", "n": 999},
    {"max_tokens": 3},
    '{"prompt": ',
]


def _plan(rng: random.Random, i: int) -> dict:
    roll = rng.random()
    kind = "invalid" if roll < 0.1 else "cancel" if roll < 0.2 else "valid"
    max_tokens = rng.randint(8, 16)
    chat = rng.random() < 0.5
    text = f"Write about {rng.choice(TOPICS)} (#{i})."
    body: dict = {"max_tokens": max_tokens, "temperature": rng.choice([0.0, 0.8]), "seed": i}
    if chat:
        body["messages"] = [{"role": "user", "content": text}]
    else:
        body["prompt"] = text
    stream = kind == "cancel" or rng.random() < 0.5
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    if kind == "cancel":
        body.update(max_tokens=200, ignore_eos=True)  # long enough to still be running when we leave
    path = "/chat/completions" if chat else "/completions"
    if kind == "invalid":
        return {"kind": kind, "path": "/completions", "body": rng.choice(INVALID), "stream": False}
    return {"kind": kind, "path": path, "body": body, "stream": stream, "chat": chat}


async def _run_one(client: httpx.AsyncClient, url: str, plan: dict) -> dict:
    body = plan["body"]
    if plan["kind"] == "invalid":
        kwargs = {"content": body} if isinstance(body, str) else {"json": body}
        r = await client.post(url + plan["path"], **kwargs)
        return {"status": r.status_code, "ok": 400 <= r.status_code < 500 and "error" in r.json()}
    if not plan["stream"]:
        r = await client.post(url + plan["path"], json=body)
        if r.status_code != 200:
            return {"status": r.status_code, "ok": False}
        data = r.json()
        choice = data["choices"][0]
        n = data["usage"]["completion_tokens"]
        full = choice["finish_reason"] == "stop" or (choice["finish_reason"] == "length" and n == body["max_tokens"])
        return {"status": 200, "ok": full}
    async with client.stream("POST", url + plan["path"], json=body) as r:
        if r.status_code != 200:
            return {"status": r.status_code, "ok": False}
        events = []
        async for line in r.aiter_lines():
            if not line.startswith("data: "):
                continue
            events.append(line[6:])
            if plan["kind"] == "cancel" and len(events) >= 3:
                return {"status": 200, "ok": True, "cancelled": True}  # leaving closes the connection
    if events[-1] != "[DONE]":
        return {"status": 200, "ok": False}
    chunks = [json.loads(e) for e in events[:-1]]
    if any("error" in c for c in chunks):
        return {"status": 200, "ok": False}
    finish = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1]
    n = chunks[-1]["usage"]["completion_tokens"]
    full = finish == "stop" or (finish == "length" and n == body["max_tokens"])
    return {"status": 200, "ok": full}


async def _soak(url: str, plans: list[dict]) -> list[dict]:
    sem = asyncio.Semaphore(CONCURRENCY)
    limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
    async with httpx.AsyncClient(timeout=120, limits=limits) as client:
        async def guarded(plan: dict) -> dict:
            async with sem:
                return await _run_one(client, url, plan)

        return await asyncio.gather(*(guarded(p) for p in plans))


def test_soak(server) -> None:
    rng = random.Random(1234)
    warm = [_plan(rng, -i) for i in range(CONCURRENCY)]
    asyncio.run(_soak(server.v1, warm))  # warm-up, so allocator caches are not counted as growth
    server.wait_idle()
    rss_before = server.rss_mb()
    plans = [_plan(rng, i) for i in range(NUM_REQUESTS)]
    start = time.monotonic()
    results = asyncio.run(_soak(server.v1, plans))
    wall = time.monotonic() - start
    m = server.wait_idle(30)
    rss_after = server.rss_mb()
    statuses = Counter(r["status"] for r in results)
    kinds = Counter(p["kind"] for p in plans)
    print(f"\nsoak: {NUM_REQUESTS} requests in {wall:.1f} s, kinds {dict(kinds)}, statuses {dict(statuses)}, "
          f"RSS {rss_before:.0f} -> {rss_after:.0f} MB ({rss_after - rss_before:+.1f} MB)")
    assert not [r for r in results if r["status"] >= 500]
    failed = [(p, r) for p, r in zip(plans, results, strict=True) if not r["ok"]]
    assert not failed, failed[:5]
    assert m["cadence_num_requests_running"] == 0 and m["cadence_num_requests_waiting"] == 0
    assert m["cadence_kv_cache_free_blocks"] == m["cadence_kv_cache_total_blocks"]
    assert rss_after - rss_before < 100
