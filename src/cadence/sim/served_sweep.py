"""A served-step sweep: the real engine (dummy weights) decoding batches of `b` requests with `c`
tokens of context, over a grid of (b, c), with its step trace on. Decode steps then cover batch and
context independently, which traffic from one workload does not (W3's requests are all long, W2's
all short), so the calibration fitted from this trace extrapolates to any workload's steps.

First, a prefill phase: one request at a time, prompts inside and at the edge of every piecewise
token bucket (core/graph_buckets.py), so `served_prefill` has a point per bucket.

Each (b, c) runs twice: all b requests at c tokens, and (b > 1) spread evenly from c/8 to c. A
served batch mixes lengths, and a decode step's time depends on its longest context as well as on
the sum (the kernel's blocks of the longest request finish last); with equal contexts only, the
two are tied (sum = b x longest) and the fit cannot tell them apart.

    cadence profile --served-sweep --model llama3-8b --from-profile ops.csv --out served.csv
"""

from __future__ import annotations

import json
import random
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

SWEEP_BATCHES = (1, 2, 4, 8, 16, 24, 32, 48, 64, 96, 128, 192, 256)  # decode graph buckets up to 256
SWEEP_CONTEXTS = (128, 512, 1024, 2048, 4096, 8192, 16384)
SWEEP_SPREADS = (1.0, 0.125)  # shortest context over longest within a point's batch
CPU_SWEEP = ((1, 3), (16, 40))  # a smoke-test grid for the CPU
PREFILL_REPEATS = 2


def prefill_lengths(max_tokens: int) -> list[int]:
    """Prompt lengths for the prefill phase: for each token bucket up to `max_tokens`, one 7/8 of
    the way in and one at its edge."""
    from cadence.core.graph_buckets import MAX_PIECEWISE_TOKENS, piecewise_token_buckets

    buckets = piecewise_token_buckets(min(max_tokens, MAX_PIECEWISE_TOKENS))
    return sorted({t - t // 8 for t in buckets} | set(buckets))


def spread_contexts(b: int, c: int, spread: float) -> list[int]:
    """b contexts evenly from spread x c up to c (all c when spread is 1 or b is 1)."""
    if b == 1 or spread >= 1.0:
        return [c] * b
    lo = max(1, round(spread * c))
    return [round(lo + (c - lo) * i / (b - 1)) for i in range(b)]


def run_served_sweep(model: str, trace_path: str | Path, *, batches: Sequence[int] = SWEEP_BATCHES,
                     contexts: Sequence[int] = SWEEP_CONTEXTS, spreads: Sequence[float] = SWEEP_SPREADS,
                     decode_steps: int = 24, prefills: Sequence[int] | None = None,
                     max_kv_tokens: int = 1 << 19, device: str = "auto", max_seconds: float = 300.0,
                     log: Callable[[str], None] = print) -> dict[str, int]:
    """Run the prefill phase (`prefills`: prompt lengths; None: `prefill_lengths` of the budget),
    then the grid (points over `max_kv_tokens` context tokens, or past the time budget, are
    skipped), and write the engine's step trace to `trace_path`. Returns what ran."""
    from cadence.core.config import CacheConfig, SchedulerConfig
    from cadence.core.sampling_params import SamplingParams
    from cadence.engine.config import EngineConfig, ModelLoadConfig
    from cadence.engine.llm_engine import LLMEngine
    from cadence.models.config import NAMED_SHAPES
    from cadence.sim.shapes import SIM_SHAPES

    folder = None
    if model not in NAMED_SHAPES and model in SIM_SHAPES:  # a simulator-only shape: a config-only folder
        folder = tempfile.TemporaryDirectory()
        (Path(folder.name) / "config.json").write_text(json.dumps(SIM_SHAPES[model]))
    longest = max(contexts) + decode_steps + 1
    engine = LLMEngine(EngineConfig(
        load=ModelLoadConfig(model=folder.name if folder else model, load_format="dummy", device=device),
        scheduler=SchedulerConfig(policy="sarathi", max_num_seqs=max(batches), max_num_batched_tokens=8192,
                                  max_model_len=longest),
        cache=CacheConfig(enable_prefix_caching=False)))
    vocab = engine.model_config.vocab_size
    rng = random.Random(0)
    t0, points, skipped, n = time.monotonic(), 0, 0, 0
    params = SamplingParams(max_tokens=decode_steps, temperature=0.0, ignore_eos=True)
    try:
        one = SamplingParams(max_tokens=1, temperature=0.0, ignore_eos=True)
        lengths = prefill_lengths(engine.config.scheduler.max_num_batched_tokens) if prefills is None else prefills
        for length in [x for x in lengths for _ in range(PREFILL_REPEATS)]:
            if length >= engine.max_model_len:
                continue
            engine.add_request(f"p{n}", [rng.randrange(vocab) for _ in range(length)], one)
            n += 1
            while engine.has_unfinished():
                engine.step()
        log(f"served sweep: {len(lengths)} prefill lengths ({time.monotonic() - t0:.0f} s)")
        capacity = engine.kv.num_blocks * engine.kv.block_size
        grid = [(b, c, s) for s in spreads for b in batches for c in contexts if s >= 1.0 or b > 1]
        for b, c, s in grid:  # equal contexts first: the time budget cuts the spread points first
            lens = spread_contexts(b, c, s)
            if sum(lens) + b * decode_steps > min(max_kv_tokens, capacity) or c + decode_steps >= engine.max_model_len:
                skipped += 1
                continue
            if time.monotonic() - t0 > max_seconds:
                skipped += 1
                continue
            for length in lens:
                engine.add_request(f"s{n}", [rng.randrange(vocab) for _ in range(length)], params)
                n += 1
            while engine.has_unfinished():
                engine.step()
            points += 1
            log(f"served sweep: batch {b} context {c} spread {s:g} ({time.monotonic() - t0:.0f} s)")
        engine.write_step_trace(trace_path)
    finally:
        engine.shutdown()
        if folder is not None:
            folder.cleanup()
    return {"prefills": len(lengths), "points": points, "skipped": skipped, "steps": len(engine.step_trace)}
