"""Runs one scheduled step on the model: inputs, forward (graphed for decodes on the GPU), logits of
the sampled positions, sampling."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import torch

from cadence.core.graph_buckets import MAX_PIECEWISE_TOKENS
from cadence.core.kv.kv_cache_manager import KVCacheManager
from cadence.core.scheduler.output import SchedulerOutput
from cadence.models.config import ModelConfig
from cadence.models.llama import LlamaForCausalLM
from cadence.runtime.attention import AttentionBackend, backend_class
from cadence.runtime.cuda_graphs import DecodeGraphs
from cadence.runtime.piecewise_graphs import PiecewiseGraphs
from cadence.runtime.sampler import Sampler, SampleResult
from cadence.runtime.step_batch import InFlightTokens, StepBatch, build_step_batch

logger = logging.getLogger("cadence.runtime")


@dataclass
class LaunchedStep:
    """A step whose forward and sampling are queued on the device; its tokens come back later."""

    in_flight: InFlightTokens
    host: torch.Tensor  # the tokens' copy on the host (filled once `event` completes)
    event: torch.cuda.Event | None


class ModelRunner:
    def __init__(self, model: LlamaForCausalLM, config: ModelConfig, *, backend: str, num_blocks: int,
                 block_size: int, dtype: torch.dtype, device: torch.device, max_num_seqs: int = 256,
                 max_model_len: int | None = None, cuda_graphs: bool = True, async_steps: bool = False,
                 piecewise_max_tokens: int = 0, decode_kernel: str = "auto") -> None:
        """`async_steps`: steps may be launched while the previous one runs (`launch`/`collect`).
        `piecewise_max_tokens`: capture piecewise graphs for steps with prefill tokens up to this
        many tokens (0: such steps run eagerly)."""
        self.model = model
        self.config = config
        self.device = device
        self.dtype = dtype
        self.attention: AttentionBackend = backend_class(backend)(
            config, num_blocks, block_size, dtype, device, max_num_seqs=max_num_seqs, max_model_len=max_model_len,
            defer_reuse=async_steps, decode_kernel=decode_kernel)
        self.sampler = Sampler(device)
        self.graphs: DecodeGraphs | None = None
        if cuda_graphs and device.type == "cuda" and self.attention.supports_cuda_graphs:
            self.graphs = DecodeGraphs(model, self.attention, max_num_seqs, device)
        self.piecewise: PiecewiseGraphs | None = None
        if piecewise_max_tokens and self.graphs is not None and model.shard is None:
            self.piecewise = PiecewiseGraphs(model, min(piecewise_max_tokens, MAX_PIECEWISE_TOKENS), dtype, device)
        self.last_batch: StepBatch | None = None
        self.num_steps = 0
        self.prepare_seconds = 0.0  # CPU time building step inputs (not counting the scheduler)

    @torch.inference_mode()
    def execute(self, out: SchedulerOutput, kv: KVCacheManager,
                batch: StepBatch | None = None) -> tuple[dict[str, int], dict[str, object]]:
        """Returns the sampled token of every request that caught up, and its logprobs if asked.
        `batch`: this step's inputs if the caller built them already (the tensor-parallel driver)."""
        self._release(out)
        if out.is_empty():
            return {}, {}
        t = time.perf_counter()
        if batch is None:
            batch = build_step_batch(out, kv, self.device)
        logits = self.run_batch(batch, t)
        self._idle_work()
        if logits is None:
            return {}, {}
        result: SampleResult = self.sampler(logits, batch.sample_requests)
        ids = [r.request_id for r in batch.sample_requests]
        tokens = dict(zip(ids, result.token_ids, strict=True))
        logprobs = {rid: lp for rid, lp in zip(ids, result.logprobs, strict=True) if lp is not None}
        return tokens, logprobs

    def _release(self, out: SchedulerOutput) -> None:
        """Forget what requests that ended or were preempted held (with defer_reuse, every step: the
        backend then releases what the step before last let go)."""
        for rid in out.finished_ids:
            self.sampler.forget(rid)
        gone = list(out.finished_ids) + [r.request_id for r in out.preempted]
        if gone or self.attention.defer_reuse:
            self.attention.free_requests(gone)

    @torch.inference_mode()
    def launch(self, out: SchedulerOutput, kv: KVCacheManager, prev: LaunchedStep | None) -> LaunchedStep | None:
        """Queue step `out` (forward and sampling) without waiting for it; decodes whose input is the
        token `prev` samples read it on the device. Every sampled request must `can_defer`."""
        self._release(out)
        if out.is_empty():
            return None
        t = time.perf_counter()
        batch = build_step_batch(out, kv, self.device, prev.in_flight if prev is not None else None)
        logits = self.run_batch(batch, t)
        reqs = batch.sample_requests
        if logits is None:
            tokens = torch.empty(0, dtype=torch.long, device=self.device)
        else:
            tokens = self.sampler.sample_tensor(logits, reqs)
        event = None
        if self.device.type == "cuda":
            host = torch.empty(tokens.shape, dtype=tokens.dtype, pin_memory=True)
            host.copy_(tokens, non_blocking=True)
            event = torch.cuda.Event()
            event.record()
        else:
            host = tokens
        return LaunchedStep(InFlightTokens(tokens, {r.request_id: i for i, r in enumerate(reqs)}), host, event)

    def _idle_work(self, event: torch.cuda.Event | None = None) -> None:
        """Give the backend the host's wait for the GPU (until `event`, default: the work queued
        so far), if it has work for it."""
        if self.device.type != "cuda" or not self.attention.wants_idle_time():
            return
        if event is None:
            event = torch.cuda.Event()
            event.record()
        self.attention.idle_work(lambda: not event.query())

    def collect(self, step: LaunchedStep) -> dict[str, int]:
        """Wait for a launched step's tokens (only for it: later steps may still run)."""
        if step.event is not None:
            self._idle_work(step.event)
            step.event.synchronize()
        values = step.host.tolist()
        return {rid: values[i] for rid, i in step.in_flight.rows.items()}

    def run_batch(self, batch: StepBatch, t0: float) -> torch.Tensor | None:
        """The forward of one step: logits of its sampled positions, or None if it samples none.
        Every tensor-parallel rank runs this on the same batch (sample_indices, not the Request
        objects only the driver has, say what is sampled)."""
        self.last_batch = batch
        self.num_steps += 1
        num_samples = int(batch.sample_indices.shape[0])
        graphs = self.graphs
        if graphs is not None and batch.is_decode_only and batch.num_tokens <= graphs.max_batch:
            logits = graphs.run(batch)
            self.prepare_seconds += time.perf_counter() - t0
            self.attention.after_launch(batch)
            if not num_samples:
                return None
            if num_samples != batch.num_tokens:
                logits = logits[batch.sample_indices]
            return logits
        attn = self.attention.bind(batch)
        self.prepare_seconds += time.perf_counter() - t0
        piecewise = self.piecewise
        if piecewise is not None and batch.num_tokens <= piecewise.max_tokens:
            hidden = piecewise.run(batch, attn)
        else:
            hidden = self.model(batch.input_ids, batch.positions, attn)
        self.attention.after_launch(batch)  # map ahead while the GPU runs this step
        if not num_samples:
            return None
        return self.model.compute_logits(hidden[batch.sample_indices])

    def shutdown(self) -> None:
        self.graphs = None
        self.piecewise = None
        self.attention.release()
