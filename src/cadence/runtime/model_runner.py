"""Runs one scheduled step on the model: inputs, forward, logits of the sampled positions, sampling."""

from __future__ import annotations

import torch

from cadence.core.kv.kv_cache_manager import KVCacheManager
from cadence.core.scheduler.output import SchedulerOutput
from cadence.models.config import ModelConfig
from cadence.models.llama import LlamaForCausalLM
from cadence.runtime.attention import AttentionBackend, backend_class
from cadence.runtime.sampler import Sampler, SampleResult
from cadence.runtime.step_batch import build_step_batch


class ModelRunner:
    def __init__(self, model: LlamaForCausalLM, config: ModelConfig, *, backend: str, num_blocks: int,
                 block_size: int, dtype: torch.dtype, device: torch.device) -> None:
        self.model = model
        self.config = config
        self.device = device
        self.dtype = dtype
        self.attention: AttentionBackend = backend_class(backend)(config, num_blocks, block_size, dtype, device)
        self.sampler = Sampler(device)

    @torch.inference_mode()
    def execute(self, out: SchedulerOutput, kv: KVCacheManager) -> tuple[dict[str, int], dict[str, object]]:
        """Returns the sampled token of every request that caught up, and its logprobs if asked."""
        for rid in out.finished_ids:
            self.sampler.forget(rid)
        if out.is_empty():
            return {}, {}
        batch = build_step_batch(out, kv, self.device)
        attn = self.attention.bind(batch)
        hidden = self.model(batch.input_ids, batch.positions, attn)
        if not batch.sample_requests:
            return {}, {}
        logits = self.model.compute_logits(hidden[batch.sample_indices])
        result: SampleResult = self.sampler(logits, batch.sample_requests)
        ids = [r.request_id for r in batch.sample_requests]
        tokens = dict(zip(ids, result.token_ids, strict=True))
        logprobs = {rid: lp for rid, lp in zip(ids, result.logprobs, strict=True) if lp is not None}
        return tokens, logprobs

    def shutdown(self) -> None:
        self.attention.release()
