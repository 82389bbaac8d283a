"""The model runner on each tensor-parallel rank. The driver's sends the step plan to the workers,
then runs the same forward itself and samples; a worker's runs the forward of the plans it gets."""

from __future__ import annotations

import time

import torch

from cadence.core.kv.kv_cache_manager import KVCacheManager
from cadence.core.scheduler.output import SchedulerOutput
from cadence.distributed.group import TensorParallelGroup
from cadence.distributed.shard import TensorParallelError
from cadence.distributed.step_plan import StepPlan
from cadence.runtime.model_runner import ModelRunner
from cadence.runtime.step_batch import StepBatch


class DriverModelRunner(ModelRunner):
    group: TensorParallelGroup

    @torch.inference_mode()
    def execute(self, out: SchedulerOutput, kv: KVCacheManager,
                batch: StepBatch | None = None) -> tuple[dict[str, int], dict[str, object]]:
        gone = list(out.finished_ids) + [r.request_id for r in out.preempted]
        if out.is_empty() and not gone:
            return {}, {}
        plan = StepPlan.build(out, kv, gone)
        self.group.send(plan)
        if not plan.is_empty:
            batch = plan.to_batch(self.device, [s.request for s in out.scheduled if s.samples], kv)
        try:
            return super().execute(out, kv, batch)
        except TensorParallelError:
            raise
        except RuntimeError as exc:  # a collective failed: say which worker broke, and why
            raise self.group.failure(exc) from exc

    def shutdown(self) -> None:
        super().shutdown()
        self.group.shutdown()


class WorkerModelRunner(ModelRunner):
    @torch.inference_mode()
    def execute_plan(self, plan: StepPlan) -> None:
        if plan.gone:
            self.attention.free_requests(plan.gone)
        if plan.is_empty:
            return
        self.run_batch(plan.to_batch(self.device), time.perf_counter())
