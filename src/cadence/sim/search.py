"""Configuration search: each deployment's capacity under an SLO (bench's bisection over the
arrival rate, every point a simulation), ranked by capacity per dollar, with the Pareto front of
(capacity, cost). Configurations run in parallel processes."""

from __future__ import annotations

import itertools
import math
import multiprocessing as mp
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import yaml

from cadence.bench.capacity import CapacityConfig, search_capacity
from cadence.core import metrics as m
from cadence.core import workload as wl
from cadence.core.metrics import ServiceSLO
from cadence.sim.deployment import Deployment
from cadence.sim.errors import SimInputError
from cadence.sim.hardware import gpu_spec
from cadence.sim.memory import plan_memory
from cadence.sim.shapes import model_config, shard

PRICES_FILE = Path(__file__).resolve().parent.parent / "configs" / "prices.yaml"


@dataclass(frozen=True)
class SearchSpace:
    model: str
    gpu: str
    max_gpus: int
    tp: Sequence[int] = (1, 2, 4, 8)
    pp: Sequence[int] = (1, 2, 4)
    replicas: Sequence[int] = (1, 2, 4, 8)
    policies: Sequence[str] = ("sarathi", "vllm")
    budgets: Sequence[int] = (512, 2048)
    max_batch: Sequence[int] = (128, 256)
    profiles: dict | None = None  # tp -> profile CSV; missing tp: analytic roofline


@dataclass(frozen=True)
class SearchConfig:
    slo: ServiceSLO
    workload: str = "W2"
    num_requests: int = 400  # per replica, at least
    min_duration_s: float = 120.0  # and enough for this much simulated arrival time: an overloaded
    # queue must have time to show (short runs end before the backlog builds and pass any rate)
    seed: int = 0
    precision: float = 0.1
    max_points: int = 12
    processes: int = 2
    # Simulate one replica per shape and scale its capacity by the replica count (a balancing router
    # over independent replicas), then verify the `verify_top` best multi-replica rows in full.
    scale_replicas: bool = False
    verify_top: int = 2
    # Judge each point on the later arrivals only: an overload's backlog grows through the run, so
    # the early requests (an empty system) would hide it and inflate the capacity of short runs.
    judged_share: float = 0.5


def load_prices(path: str | Path = PRICES_FILE) -> dict[str, float]:
    doc = yaml.safe_load(Path(path).read_text())
    return {k: float(v) for k, v in doc["prices"].items()}


def enumerate_space(space: SearchSpace) -> tuple[list[Deployment], list[dict]]:
    """Every deployment of the space within the GPU budget, and the ones skipped (with why)."""
    mc = model_config(space.model)
    gpu = gpu_spec(space.gpu)
    ok, skipped = [], []
    for tp, pp, n, pol, budget, batch in itertools.product(space.tp, space.pp, space.replicas, space.policies,
                                                         space.budgets, space.max_batch):
        if tp * pp * n > space.max_gpus:
            continue
        if pol != "sarathi" and budget != max(space.budgets):
            continue  # without chunking the budget only caps whole prefills; one value is enough
        d = Deployment(space.model, space.gpu, tp, pp, n, pol, budget, batch,
                       router="round_robin" if n == 1 else "least_outstanding",
                       profile=(space.profiles or {}).get(tp))
        try:
            shard(space.model, mc, tp)
            if mc.num_layers % pp:
                raise SimInputError(f"{mc.num_layers} layers do not split into {pp} stages")
            plan_memory(space.model, mc, gpu, tp, pp, d.block_size, budget, batch)
        except (SimInputError, ValueError) as exc:
            skipped.append({"config": d.label(), "reason": str(exc)})
            continue
        ok.append(d)
    # the same skip reason repeats for every policy/budget/batch: keep one per (tp, pp)
    seen, unique = set(), []
    for s in skipped:
        key = s["reason"]
        if key not in seen:
            seen.add(key)
            unique.append(s)
    return ok, unique


def _start_rate(d: Deployment, cfg: SearchConfig) -> float:
    """First probe: 80% of the throughput of a closed burst (every request at t=0), the deployment's
    service rate; the capacity under an SLO sits at or below it, so the bracket closes in few points."""
    from cadence.sim.run import simulate

    specs = wl.named(cfg.workload, min(cfg.num_requests, 200) * d.replicas, math.inf, cfg.seed)
    tput = simulate(d, specs).summary["throughput"]["requests_per_s"]
    return max(0.05, 0.8 * tput)


def evaluate_config(d: Deployment, cfg: SearchConfig) -> dict:
    from cadence.sim.run import simulate

    t0 = time.perf_counter()

    late = cfg.slo.median_scheduling_delay

    def evaluate(rate: float) -> dict:
        # Lengths and unit arrival gaps are drawn in order, so every point shares its first requests.
        n = max(cfg.num_requests * d.replicas, math.ceil(rate * cfg.min_duration_s))
        out = simulate(d, wl.named(cfg.workload, n, rate, cfg.seed), late_limit=late)
        if out.result.stopped or cfg.judged_share >= 1.0:
            return out.summary
        recs = out.result.records  # in arrival order
        return m.summarize(recs[int(len(recs) * (1 - cfg.judged_share)):], m.SummaryOptions(fluent_rate=False))

    try:
        res = search_capacity(evaluate, CapacityConfig(cfg.slo, _start_rate(d, cfg), factor=1.5,
                                                       precision=cfg.precision, max_points=cfg.max_points))
    except SimInputError as exc:
        return {"deployment": d.to_dict(), "label": d.label(), "error": str(exc)}
    best = max((p for p in res["points"] if p["ok"]), key=lambda p: p["rate"], default=None)
    return {
        "deployment": d.to_dict(), "label": d.label(), "gpus": d.num_gpus, "capacity_rps": res["capacity"],
        "bound": res["bound"], "points": len(res["points"]),
        "output_tokens_per_s": best["output_tokens_per_s"] if best else None,
        "p99_tbt_at_capacity": best["p99_tbt"] if best else None, "search_s": time.perf_counter() - t0,
    }


def _worker(args: tuple[Deployment, SearchConfig]) -> dict:
    return evaluate_config(*args)


def _evaluate_all(configs: list[Deployment], cfg: SearchConfig, on_result: Callable[[dict], None] | None) -> list[dict]:
    jobs = [(d, cfg) for d in configs]
    rows: list[dict] = []
    if cfg.processes > 1 and len(jobs) > 1:
        with mp.get_context("fork").Pool(min(cfg.processes, len(jobs))) as pool:
            for row in pool.imap_unordered(_worker, jobs):
                rows.append(row)
                if on_result:
                    on_result(row)
    else:
        for job in jobs:
            rows.append(_worker(job))
            if on_result:
                on_result(rows[-1])
    return rows


def _shape_key(d: dict) -> tuple:
    return tuple(v for k, v in sorted(d.items()) if k not in ("replicas", "router"))


def _scaled(base: dict, d: Deployment) -> dict:
    row = dict(base, deployment=d.to_dict(), label=d.label(), gpus=d.num_gpus, simulated="one replica, scaled")
    if d.replicas > 1:
        for k in ("capacity_rps", "output_tokens_per_s"):
            row[k] = base[k] * d.replicas if base.get(k) else base.get(k)
    else:
        row["simulated"] = "full"
    return row


def _price(rows: list[dict], price: float) -> None:
    for r in rows:
        r["cost_per_hour"] = r.get("gpus", 0) * price
        cap = r.get("capacity_rps")
        r["requests_per_dollar"] = cap * 3600 / r["cost_per_hour"] if cap and r["cost_per_hour"] else None
        r.setdefault("simulated", "full")


def pareto_front(rows: list[dict]) -> list[dict]:
    """Rows no other row beats on both capacity (higher) and cost (lower)."""
    good = [r for r in rows if r.get("capacity_rps")]
    front = []
    for r in good:
        if not any(o is not r and o["capacity_rps"] >= r["capacity_rps"] and o["cost_per_hour"] <= r["cost_per_hour"]
                   and (o["capacity_rps"] > r["capacity_rps"] or o["cost_per_hour"] < r["cost_per_hour"]) for o in good):
            front.append(r)
    return sorted(front, key=lambda r: r["cost_per_hour"])


def run_search(space: SearchSpace, cfg: SearchConfig, prices: dict[str, float],
               on_result: Callable[[dict], None] | None = None) -> dict:
    if space.gpu not in prices:
        raise SimInputError(f"no price for {space.gpu} in the price table ({', '.join(prices)})")
    configs, skipped = enumerate_space(space)
    if not configs:
        raise SimInputError(f"no configuration of {space.model} fits on up to {space.max_gpus} {space.gpu}: "
                            + "; ".join(s["reason"] for s in skipped[:3]))
    t0 = time.perf_counter()
    price = prices[space.gpu]
    if cfg.scale_replicas:
        singles = list({replace(d, replicas=1, router="round_robin"): None for d in configs})
        base = {_shape_key(r["deployment"]): r for r in _evaluate_all(singles, cfg, on_result)}
        rows = [_scaled(base[_shape_key(d.to_dict())], d) for d in configs]
        _price(rows, price)
        multi = sorted((r for r in rows if r["deployment"]["replicas"] > 1 and r.get("capacity_rps")),
                       key=lambda r: -r["requests_per_dollar"])[: cfg.verify_top]
        todo = [d for d in configs if any(d.to_dict() == r["deployment"] for r in multi)]
        for full in _evaluate_all(todo, cfg, on_result):
            i = next(i for i, r in enumerate(rows) if r["deployment"] == full["deployment"])
            full["scaled_estimate_rps"] = rows[i]["capacity_rps"]
            rows[i] = full
    else:
        rows = _evaluate_all(configs, cfg, on_result)
    _price(rows, price)
    ranked = sorted(rows, key=lambda r: -(r["requests_per_dollar"] or 0))
    return {
        "model": space.model, "gpu": space.gpu, "max_gpus": space.max_gpus, "price_per_gpu_hour": price,
        "slo": {k: v for k, v in vars(cfg.slo).items() if v is not None}, "workload": cfg.workload,
        "requests_per_point": cfg.num_requests, "configs": len(configs), "skipped": skipped,
        "wall_s": time.perf_counter() - t0, "best": ranked[0] if ranked and ranked[0]["requests_per_dollar"] else None,
        "pareto_front": pareto_front(rows), "ranked": ranked,
    }


def plot_front(result: dict, path: str | Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in result["ranked"] if r.get("capacity_rps")]
    front = result["pareto_front"]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.scatter([r["cost_per_hour"] for r in rows], [r["capacity_rps"] for r in rows], s=14, alpha=0.5, label="configs")
    ax.plot([r["cost_per_hour"] for r in front], [r["capacity_rps"] for r in front], "r.-", label="Pareto front")
    for r in front:
        ax.annotate(r["label"], (r["cost_per_hour"], r["capacity_rps"]), fontsize=6)
    ax.set_xlabel(f"cost (USD/h, {result['gpu']} at {result['price_per_gpu_hour']} USD/GPU-h)")
    ax.set_ylabel("capacity (req/s under SLO)")
    ax.set_title(f"cadence search: {result['model']} on up to {result['max_gpus']} {result['gpu']}")
    ax.legend()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path

