"""CUDA graphs for steps that carry prefill tokens, captured in pieces around attention.

Decode-only steps replay one whole graph (cuda_graphs.py). A step with prefill tokens cannot: its
attention depends on how the tokens split into requests, which changes every step. Run eagerly,
such a step is bound by the host launching ~30 kernels a layer (on the H100 its execute time is
flat at ~20-25 ms from 2 to ~1,000 prefill tokens for both shapes, benchmarks/NOTES.md), and every
sarathi step that carries a chunk pays it.

Here the forward is cut at each attention call: piece 0 runs the embedding and layer 0 up to its
attention inputs; piece i runs layer i-1's output projection, MLP and norms and layer i up to its
attention; the last piece ends with the final norm. Each piece is a graph per token bucket, all
captured by running the model once with an attention stand-in that copies q, k, v into static
buffers, ends the current capture, starts the next and hands back a static output buffer. A step
then replays piece 0, runs the backend's own attention eagerly on the real tokens' rows, copies
its result into the static output, replays piece 1, and so on: L + 1 graph launches and L
attention calls instead of ~30 L launches. Padded token rows run through the pieces on zero
inputs and never reach attention or the KV cache. Single-GPU only (no collectives in pieces)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import torch

from cadence.core.graph_buckets import piecewise_token_buckets
from cadence.models.llama import LlamaForCausalLM
from cadence.runtime.attention.base import StepAttention
from cadence.runtime.step_batch import StepBatch

logger = logging.getLogger("cadence.piecewise_graphs")


class _Bucket:
    """Static buffers of one token bucket: attention inputs and output, and the final hidden."""

    def __init__(self, tokens: int, heads: int, kv_heads: int, head_dim: int, dtype: torch.dtype,
                 device: torch.device) -> None:
        self.tokens = tokens
        self.q = torch.zeros(tokens, heads, head_dim, dtype=dtype, device=device)
        self.k = torch.zeros(tokens, kv_heads, head_dim, dtype=dtype, device=device)
        self.v = torch.zeros_like(self.k)
        self.out = torch.zeros_like(self.q)
        self.pieces: list[Callable[[], None]] = []
        self.graphs: list[torch.cuda.CUDAGraph] = []  # kept alive while their replays are the pieces
        self.hidden: torch.Tensor | None = None


class PiecewiseGraphs:
    """`capture=False` builds the same pieces without graphs on the same static buffers (for CPU
    tests of the plumbing; no speed-up)."""

    def __init__(self, model: LlamaForCausalLM, max_tokens: int, dtype: torch.dtype, device: torch.device,
                 capture: bool = True) -> None:
        if model.shard is not None:
            raise ValueError("piecewise graphs are single-GPU (no collectives inside pieces)")
        c = model.config
        self.model = model
        self.num_layers = c.num_layers
        self.max_tokens = max_tokens
        self.inputs = torch.zeros(2, max_tokens, dtype=torch.long, device=device)  # token ids; positions
        self.buckets = {t: _Bucket(t, c.num_heads, c.num_kv_heads, c.head_dim, dtype, device)
                        for t in piecewise_token_buckets(max_tokens)}
        self.num_replays = 0
        t0 = time.perf_counter()
        with torch.inference_mode():
            if capture:
                pool = torch.cuda.graph_pool_handle()
                for b in sorted(self.buckets.values(), key=lambda b: -b.tokens):  # largest first
                    self._capture(b, pool, device)
                torch.cuda.synchronize(device)
            else:
                for b in self.buckets.values():
                    self._eager_pieces(b)
        self.capture_seconds = time.perf_counter() - t0
        if capture:
            logger.info("captured %d x %d piecewise graphs (tokens %s) in %.1f s", len(self.buckets),
                        self.num_layers + 1, sorted(self.buckets), self.capture_seconds)

    def _forward(self, b: _Bucket, attn: StepAttention) -> torch.Tensor:
        ids, pos = self.inputs[0, :b.tokens], self.inputs[1, :b.tokens]
        return self.model(ids, pos, attn)

    def _stand_in(self, b: _Bucket, at_split: Callable[[], None]) -> StepAttention:
        def attn(layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            b.q.copy_(q)
            b.k.copy_(k)
            b.v.copy_(v)
            at_split()
            return b.out

        return attn

    def _capture(self, b: _Bucket, pool, device: torch.device) -> None:
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):  # warm up off capture (Triton compiles, cuBLAS picks kernels)
            self._forward(b, self._stand_in(b, lambda: None))
        torch.cuda.current_stream(device).wait_stream(side)
        graphs: list[torch.cuda.CUDAGraph] = [torch.cuda.CUDAGraph()]

        def split() -> None:  # end this piece's capture, begin the next one's
            graphs[-1].capture_end()
            graphs.append(torch.cuda.CUDAGraph())
            graphs[-1].capture_begin(pool=pool)

        torch.cuda.synchronize(device)
        with torch.cuda.stream(side):
            graphs[0].capture_begin(pool=pool)
            b.hidden = self._forward(b, self._stand_in(b, split))
            graphs[-1].capture_end()
        torch.cuda.current_stream(device).wait_stream(side)
        assert len(graphs) == self.num_layers + 1
        b.pieces = [g.replay for g in graphs]
        b.graphs = graphs

    def _eager_pieces(self, b: _Bucket) -> None:
        """The same pieces without graphs: the real forward runs in a worker thread that pauses at
        each attention call (where a capture would split) until the next piece is asked for."""
        reached, go = threading.Semaphore(0), threading.Semaphore(0)

        def worker() -> None:
            with torch.inference_mode():
                b.hidden = self._forward(b, self._stand_in(b, pause))
            reached.release()

        def pause() -> None:
            reached.release()
            go.acquire()

        def first() -> None:
            threading.Thread(target=worker, daemon=True).start()
            reached.acquire()

        def resume() -> None:
            go.release()
            reached.acquire()

        b.pieces = [first] + [resume] * self.num_layers

    def bucket(self, n: int) -> _Bucket | None:
        for t, b in self.buckets.items():  # built in ascending token order
            if t >= n:
                return b
        return None

    def run(self, batch: StepBatch, attn: StepAttention) -> torch.Tensor:
        """Final hidden states [n, hidden] of a step of n <= max_tokens tokens; `attn` is the
        backend's attention bound to this step (it stores K/V and attends for the real rows)."""
        n = batch.num_tokens
        b = self.bucket(n)
        assert b is not None
        self.inputs[0, :n].copy_(batch.input_ids)
        self.inputs[1, :n].copy_(batch.positions)
        if b.tokens > n:
            self.inputs[:, n:b.tokens].zero_()
        for layer in range(self.num_layers):
            b.pieces[layer]()
            b.out[:n].copy_(attn(layer, b.q[:n], b.k[:n], b.v[:n]))
        b.pieces[self.num_layers]()
        self.num_replays += 1
        assert b.hidden is not None
        return b.hidden[:n]

