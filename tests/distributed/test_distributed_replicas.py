"""Multi-replica serving: the router policies, and two engine processes behind one front end
(requests spread as the policy says, every one finishes, the HTTP API works unchanged)."""

from __future__ import annotations

import asyncio

import pytest
from fastapi.testclient import TestClient

from cadence.core.config import CacheConfig
from cadence.core.sampling_params import SamplingParams
from cadence.distributed.replicas import ReplicaPool
from cadence.distributed.router import ReplicaLoad, make_router
from cadence.engine.config import EngineConfig, ModelLoadConfig
from cadence.server.app import build_app
from tiny_models import make_checkpoint


def test_round_robin_skips_dead_replicas():
    router = make_router("round_robin")
    loads = [ReplicaLoad(), ReplicaLoad(alive=False), ReplicaLoad()]
    assert [router.choose(loads, 10) for _ in range(4)] == [0, 2, 0, 2]
    with pytest.raises(ValueError, match="no replica is alive"):
        router.choose([ReplicaLoad(alive=False)], 1)
    with pytest.raises(ValueError, match="unknown router 'random'"):
        make_router("random")


def test_least_outstanding_and_kv_aware_pick_by_load():
    loads = [ReplicaLoad(outstanding=3, kv_free_tokens=1000), ReplicaLoad(outstanding=1, kv_free_tokens=100),
             ReplicaLoad(outstanding=1, kv_free_tokens=500, waiting_tokens=450)]
    assert make_router("least_outstanding").choose(loads, 10) == 1  # ties go to the lowest index
    assert make_router("kv_aware").choose(loads, 10) == 0  # 1000 free beats 100 and 500 - 450


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    folder = tmp_path_factory.mktemp("replicas") / "llama"
    make_checkpoint("llama", folder)
    config = EngineConfig(load=ModelLoadConfig(model=str(folder), dtype="float32", device="cpu"),
                          cache=CacheConfig(num_blocks=64))
    pool = ReplicaPool(config, 2, "round_robin", max_queue=64)
    pool.start()
    yield pool
    pool.stop()


def _run(pool: ReplicaPool, router: str, prompts: list[list[int]], max_tokens: int = 4) -> list[int]:
    """Add every prompt before reading any output (so that loads build up), then read them all;
    returns how many requests each replica got."""
    pool.router = make_router(router)
    before = list(pool.routed)

    async def go() -> None:
        params = SamplingParams(max_tokens=max_tokens, temperature=0.0, ignore_eos=True)
        streams = [await pool.add(f"{router}-{i}", p, params) for i, p in enumerate(prompts)]
        for stream in streams:
            outs = [out async for _, out in stream]
            assert outs[-1].finished and outs[-1].num_output_tokens == max_tokens

    asyncio.run(asyncio.wait_for(go(), 60))
    return [a - b for a, b in zip(pool.routed, before, strict=True)]


def test_policies_spread_requests_and_all_finish(pool):
    short = [list(range(3, 11))] * 4
    assert _run(pool, "round_robin", short) == [2, 2]
    # in flight together (long enough that none ends while the others are added, even on a busy
    # machine): they alternate
    assert _run(pool, "least_outstanding", short, max_tokens=300) == [2, 2]
    # a long prompt fills replica 0's headroom: the short ones after it go to replica 1 (the long one
    # must still be in flight when they are added; with 4 new tokens a fast machine finished it first)
    assert _run(pool, "kv_aware", [list(range(200))] + [list(range(10))] * 2, max_tokens=300) == [1, 2]
    assert all(load.outstanding == 0 and load.waiting_tokens == 0 for load in pool.loads)
    stats = pool.stats()
    assert stats["num_replicas"] == 2 and stats["num_running"] == 0 and stats["kv_total_blocks"] == 128


def test_http_front_end_over_replicas(pool):
    pool.router = make_router("round_robin")
    before = list(pool.routed)
    with TestClient(build_app(pool)) as client:  # type: ignore[arg-type]
        assert client.get("/health").status_code == 200
        for i in range(4):
            r = client.post("/v1/completions", json={"prompt": [5, 6, 7, i], "max_tokens": 3, "temperature": 0,
                                                      "ignore_eos": True})
            assert r.status_code == 200, r.text
            assert r.json()["usage"]["completion_tokens"] == 3
        r = client.post("/v1/completions", json={"prompt": [1, 2], "max_tokens": 3, "stream": True, "n": 2})
        assert r.status_code == 200 and r.text.rstrip().endswith("data: [DONE]")
        r = client.post("/v1/completions", json={"prompt": [999999], "max_tokens": 3})
        assert r.status_code == 400
        assert "cadence_engine_steps" in client.get("/metrics").text
    assert [a - b for a, b in zip(pool.routed, before, strict=True)] == [3, 2]  # the bad prompt never routes
    assert not pool.is_running  # the app's shutdown stopped the replicas, cleanly
    assert [rep.proc.exitcode for rep in pool.replicas] == [0, 0]


def test_serve_and_generate_flags():
    import argparse

    from cadence.engine import cli as generate_cli
    from cadence.server import cli as serve_cli

    serve = argparse.ArgumentParser()
    serve_cli.add_arguments(serve)
    args = serve.parse_args(["--replicas", "3", "--router", "kv_aware", "--tensor-parallel-size", "2"])
    assert (args.replicas, args.router, args.tensor_parallel_size) == (3, "kv_aware", 2)
    with pytest.raises(SystemExit):
        serve.parse_args(["--router", "random"])
    generate = argparse.ArgumentParser()
    generate_cli.add_arguments(generate)
    assert generate.parse_args(["--prompt", "x", "--tensor-parallel-size", "2"]).tensor_parallel_size == 2
