"""CUDA graphs for decode-only steps: one graph per bucketed batch size, captured at start-up.

A decode step of a small model is hundreds of short kernels; launched one by one from Python the
GPU waits on the CPU. A graph replays them all with one launch. Inputs live in static buffers
(token ids, positions here; slot offsets and context lengths in the backend), a batch is padded
to the next bucket, and the padded rows write their K/V into the backend's scratch slot."""

from __future__ import annotations

import logging
import time

import torch

from cadence.core.graph_buckets import decode_batch_buckets
from cadence.models.llama import LlamaForCausalLM
from cadence.runtime.attention.base import AttentionBackend
from cadence.runtime.step_batch import StepBatch

logger = logging.getLogger("cadence.cuda_graphs")


class DecodeGraphs:
    def __init__(self, model: LlamaForCausalLM, attention: AttentionBackend, max_batch: int,
                 device: torch.device) -> None:
        self.model = model
        self.attention = attention
        self.buckets = decode_batch_buckets(max_batch)
        self.max_batch = max_batch
        self.inputs = torch.zeros(2, max_batch, dtype=torch.long, device=device)  # token ids; positions
        self.input_ids, self.positions = self.inputs[0], self.inputs[1]
        self.graphs: dict[int, torch.cuda.CUDAGraph] = {}
        self.logits: dict[int, torch.Tensor] = {}
        self.num_replays = 0
        t = time.perf_counter()
        pool = None
        with torch.inference_mode():
            for b in reversed(self.buckets):  # largest first: the smaller ones reuse its memory pool
                attn = attention.graph_attention(b, self.positions[:b])
                ids, pos = self.input_ids[:b], self.positions[:b]

                def forward(ids=ids, pos=pos, attn=attn) -> torch.Tensor:
                    return model.compute_logits(model(ids, pos, attn))

                side = torch.cuda.Stream(device)
                side.wait_stream(torch.cuda.current_stream(device))
                with torch.cuda.stream(side):  # warm up (Triton compiles, cuBLAS picks kernels) off capture
                    forward()
                torch.cuda.current_stream(device).wait_stream(side)
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph, pool=pool):
                    self.logits[b] = forward()
                pool = graph.pool()
                self.graphs[b] = graph
        torch.cuda.synchronize(device)
        self.capture_seconds = time.perf_counter() - t
        logger.info("captured %d decode graphs (batch %s) in %.1f s", len(self.buckets), self.buckets,
                    self.capture_seconds)

    def bucket(self, n: int) -> int | None:
        for b in self.buckets:
            if b >= n:
                return b
        return None

    def run(self, batch: StepBatch) -> torch.Tensor:
        """Logits [n, vocab] of a decode-only batch of n <= max_batch requests."""
        n = batch.num_tokens
        b = self.bucket(n)
        assert b is not None
        ids, pos = batch.input_ids, batch.positions
        same = ids.untyped_storage().data_ptr() == pos.untyped_storage().data_ptr()
        if same and ids.storage_offset() == 0 and pos.storage_offset() == n:
            self.inputs[:, :n].copy_(batch.input_ids.as_strided((2, n), (n, 1)))  # both rows, one copy
        else:
            self.input_ids[:n].copy_(batch.input_ids)
            self.positions[:n].copy_(batch.positions)
        if b > n:
            self.inputs[:, n:b].zero_()
        self.attention.prepare_decode(batch, b)
        self.graphs[b].replay()
        self.num_replays += 1
        return self.logits[b][:n]
