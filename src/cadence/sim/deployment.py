"""From a deployment description (model, GPU, TP, PP, replicas, policy) to a ready Simulator."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from cadence.core.config import SchedulerConfig
from cadence.core.graph_buckets import MAX_PIECEWISE_TOKENS
from cadence.core.workload import RequestSpec
from cadence.sim.errors import SimInputError
from cadence.sim.hardware import gpu_spec
from cadence.sim.memory import MemoryPlan, plan_memory
from cadence.sim.predictor import StepTimePredictor
from cadence.sim.profile_data import Profile, load_profile
from cadence.sim.roofline import analytic_profile
from cadence.sim.shapes import model_config
from cadence.sim.simulator import SimConfig, Simulator


@dataclass(frozen=True)
class Deployment:
    model: str = "llama3-8b"
    gpu: str = "H100"
    tp: int = 1
    pp: int = 1
    replicas: int = 1
    policy: str = "sarathi"
    max_num_batched_tokens: int = 2048
    max_num_seqs: int = 256
    router: str = "round_robin"
    block_size: int = 16
    gpu_memory_utilization: float = 0.9
    profile: str | None = None  # CSV from `cadence profile`; None = analytic roofline for the GPU
    exact_steps: bool = False
    async_scheduling: bool = False  # the engine's --async-scheduling: host work overlaps the device's
    cuda_graphs: bool = True  # decode-only steps replay graphs padded to batch buckets, as the engine on a GPU
    piecewise_graphs: bool = True  # steps with prefill replay piecewise graphs at token buckets (one GPU only)

    @property
    def num_gpus(self) -> int:
        return self.tp * self.pp * self.replicas

    def label(self) -> str:
        return (f"{self.replicas}x(tp{self.tp},pp{self.pp}) {self.policy} budget={self.max_num_batched_tokens} "
                f"batch={self.max_num_seqs}" + (" async" if self.async_scheduling else ""))

    def to_dict(self) -> dict:
        return asdict(self)


_PROFILE_CACHE: dict[tuple, Profile] = {}


def resolve_profile(d: Deployment) -> Profile:
    key = (d.profile, d.model, d.tp, d.gpu)
    if key not in _PROFILE_CACHE:
        if d.profile is None:
            _PROFILE_CACHE[key] = analytic_profile(d.model, d.tp, gpu_spec(d.gpu))
        else:
            prof = load_profile(Path(d.profile))
            if (prof.model, prof.tp) != (d.model, d.tp):
                raise SimInputError(f"profile {d.profile} is for {prof.model} tp={prof.tp}, not the requested "
                                    f"{d.model} tp={d.tp}")
            _PROFILE_CACHE[key] = prof
    return _PROFILE_CACHE[key]


def max_step_tokens(d: Deployment, specs: list[RequestSpec] | None) -> int:
    """The largest step the policy can form: the budget for Sarathi; policies that never split a
    prompt run the longest prompt (or a recompute of prompt + output) whole, beside the decodes."""
    if d.policy == "sarathi":
        return d.max_num_batched_tokens
    longest = max((s.prompt_tokens + s.output_tokens for s in specs), default=0) if specs else 0
    return max(d.max_num_batched_tokens, d.max_num_seqs + longest)


def build(d: Deployment, specs: list[RequestSpec] | None = None) -> tuple[Simulator, MemoryPlan]:
    try:
        mc = model_config(d.model)
        gpu = gpu_spec(d.gpu)
        sched = SchedulerConfig(d.policy, d.max_num_seqs, d.max_num_batched_tokens)
    except ValueError as exc:
        raise SimInputError(str(exc)) from None
    mem = plan_memory(d.model, mc, gpu, d.tp, d.pp, d.block_size, d.max_num_batched_tokens, d.max_num_seqs,
                      d.gpu_memory_utilization)
    pieces = d.cuda_graphs and d.piecewise_graphs and d.tp == 1 and d.pp == 1  # the engine's rule
    pred = StepTimePredictor(resolve_profile(d), d.pp, gpu, max_step_tokens(d, specs), d.async_scheduling,
                             graph_max_batch=d.max_num_seqs if d.cuda_graphs else 0,
                             piecewise_max_tokens=min(d.max_num_batched_tokens, MAX_PIECEWISE_TOKENS) if pieces else 0)
    if specs:
        pred.check_covers(max_batch=d.max_num_seqs if d.max_num_seqs <= len(specs) else len(specs),
                          max_context=max(s.prompt_tokens + s.output_tokens for s in specs))
    cfg = SimConfig(sched, d.replicas, d.pp, d.router, d.block_size, exact_steps=d.exact_steps)
    return Simulator(cfg, pred, mem.num_blocks, mc.max_model_len), mem
