"""A simulated replica: the engine's own scheduler and KV accounting, stepped by a predicted clock.

With pipeline parallelism a replica keeps `pp` micro-batches in flight, as vLLM's virtual engines
do: `pp` schedulers, each with its share of the KV blocks; a micro-batch passes the stages in order
and each stage works on one micro-batch at a time.
"""

from __future__ import annotations

from dataclasses import dataclass

from cadence.core.config import SchedulerConfig
from cadence.core.kv.kv_cache_manager import KVCacheManager
from cadence.core.request import Request
from cadence.core.scheduler import SchedulerOutput, make_scheduler
from cadence.sim.predictor import StepTimePredictor


@dataclass
class SimEngine:
    """One scheduler + KV manager (a whole replica, or one virtual engine of a PP replica)."""

    replica: Replica
    index: int
    kv: KVCacheManager
    scheduler: object
    outstanding: int = 0
    inflight: SchedulerOutput | None = None
    pending: bool = False  # an event for this engine is in the queue

    def add(self, req: Request) -> None:
        self.scheduler.add_request(req)
        self.outstanding += 1


class Replica:
    def __init__(self, index: int, sched: SchedulerConfig, num_blocks: int, block_size: int, max_model_len: int,
                 predictor: StepTimePredictor, pp: int, prefix_caching: bool) -> None:
        self.index, self.pp, self.predictor = index, pp, predictor
        per_engine = max(1, num_blocks // pp)
        self.max_model_len = min(max_model_len, per_engine * block_size)
        self.engines = []
        for i in range(pp):
            kv = KVCacheManager(per_engine, block_size, prefix_caching)
            self.engines.append(SimEngine(self, i, kv, make_scheduler(sched, kv, self.max_model_len)))
        self.stage_free = [0.0] * pp
        self.outstanding = 0
        self.steps = 0

    def kv_usage(self) -> float:
        return sum(e.kv.usage for e in self.engines) / self.pp

    def add(self, req: Request) -> SimEngine:
        eng = min(self.engines, key=lambda e: (e.outstanding, e.index))
        eng.add(req)
        self.outstanding += 1
        return eng

    def run_stages(self, start: float, stage_time: float) -> float:
        """Push one micro-batch through the stages from `start`; returns when it leaves the last."""
        t = start
        free = self.stage_free
        for s in range(self.pp):
            t = max(t, free[s]) + stage_time
            free[s] = t
        return t
