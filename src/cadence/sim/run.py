"""One simulated run: build the deployment, simulate the workload, summarize with the shared metrics."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from cadence.core import metrics as m
from cadence.core import workload as wl
from cadence.sim.deployment import Deployment, build
from cadence.sim.errors import SimInputError
from cadence.sim.simulator import SimResult


@dataclass
class RunOutput:
    result: SimResult
    summary: dict
    sim_seconds: float  # wall time of the simulation itself
    notes: list[str]


def simulate(d: Deployment, specs: list[wl.RequestSpec], options: m.SummaryOptions | None = None,
             late_limit: float | None = None) -> RunOutput:
    if not specs:
        raise SimInputError("the workload has no requests (empty trace?)")
    sim, mem = build(d, specs)
    t0 = time.perf_counter()
    res = sim.run(specs, late_limit)
    wall = time.perf_counter() - t0
    summary = m.summarize(res.records, options or m.SummaryOptions(fluent_rate=False))
    prof = sim.predictor.profile
    notes = [
        f"simulated by cadence sim: {d.label()} of {d.model} on {d.gpu}",
        f"profile: {d.profile or 'generated'} ({prof.source}, {prof.device})",
        f"KV cache: {mem.num_blocks} blocks x {mem.block_size} tokens per replica; weights "
        f"{mem.weight_bytes_per_gpu / (1 << 30):.1f} GiB per GPU",
        f"{res.steps} steps ({res.windows} decode windows) simulated in {wall:.2f} s",
    ]
    if res.stopped:
        notes.append(f"stopped early: over half the requests waited more than {late_limit} s to be scheduled")
    if prof.source != "measured":
        notes.append("step times come from an analytic roofline, not from GPU measurements")
    return RunOutput(res, summary, wall, notes)


def write(out_dir: str | Path, d: Deployment, run: RunOutput, workload: dict, plots: bool = False) -> Path:
    from cadence.bench.results import write_results

    cfg = d.to_dict() | {"sim_wall_s": run.sim_seconds, "steps": run.result.steps}
    return write_results(out_dir, run.result.records, run.summary, config=cfg, workload=workload,
                         notes=run.notes, source="sim", plots=plots)
