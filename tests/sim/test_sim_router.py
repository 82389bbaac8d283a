"""The global router: round robin ignores state, least-outstanding and least-KV read it."""

from __future__ import annotations

from cadence.core.workload import RequestSpec
from cadence.sim.deployment import Deployment, build
from cadence.sim.router import Router


def _run(router: str, specs: list[RequestSpec]) -> dict[str, int]:
    sim, _ = build(Deployment(replicas=2, router=router), specs)
    res = sim.run(specs)
    res.check_conservation()
    return sim.assignment


def _one_long_then_short() -> list[RequestSpec]:
    # Request 0 holds replica it lands on for a long time (long prompt, long output); the short ones
    # arrive far apart, each done before the next comes.
    return [RequestSpec(0, 4000, 3000, 0.0)] + [RequestSpec(i, 32, 4, 1.0 * i) for i in range(1, 9)]


def test_round_robin_alternates():
    got = _run("round_robin", _one_long_then_short())
    assert [got[str(i)] for i in range(9)] == [i % 2 for i in range(9)]


def test_least_outstanding_avoids_the_busy_replica():
    got = _run("least_outstanding", _one_long_then_short())
    assert got["0"] == 0
    assert all(got[str(i)] == 1 for i in range(1, 9))


def test_least_kv_avoids_the_full_replica():
    got = _run("least_kv", _one_long_then_short())
    assert all(got[str(i)] == 1 for i in range(1, 9))


def test_burst_splits_evenly():
    specs = [RequestSpec(i, 100, 10, 0.0) for i in range(10)]
    got = _run("least_outstanding", specs)
    assert sorted(got.values()).count(0) == 5


def test_unknown_router():
    import pytest

    with pytest.raises(ValueError, match="unknown router"):
        Router("random")
