"""Why a mixed step (decodes + one new prefill chunk) of qwen3-0.6b takes what it takes on the GPU.

The engine (dummy weights, sarathi, budget 2048) keeps `--decodes` requests decoding, then adds a
`--prompt`-token request every few steps; the step that carries its first chunk is a mixed step. Its
execute time (step trace) is recorded for variants that switch one engine feature off:

  head       the engine as it is
  old-buckets  the piecewise token buckets before 699adc9 (512, 768, 1024, 1536, ...)
  no-idle    vattention's idle-time mapping of free slots off (wants_idle_time -> False)
  eager      --no-piecewise-graphs

    python benchmarks/mixed_step_host.py --out $OUT/mixed_step_host.json

`--split-sweep 500,1500,3000` instead compares, inside one engine per (model, decode context), mixed
steps with the decodes attended apart (vattention's split) and in the one varlen call, alternating
round by round (fresh engines differ by a few ms; rounds of one engine do not).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

OLD_BUCKETS = (16, 32, 64, 128, 256, 384, 512, 768, 1024, 1536, 2048, 3072, 4096)


def engine_with_decodes(model: str, decodes: int, context: int, max_tokens: int, max_model_len: int,
                        piecewise: bool = True):
    """A sarathi engine (dummy weights, budget 2048) with `decodes` requests of `context`-token
    prompts added; returns it and the random source for later prompts."""
    import random

    from cadence.core.config import CacheConfig, SchedulerConfig
    from cadence.core.sampling_params import SamplingParams
    from cadence.engine.config import EngineConfig, ModelLoadConfig
    from cadence.engine.llm_engine import LLMEngine

    engine = LLMEngine(EngineConfig(
        load=ModelLoadConfig(model=model, load_format="dummy", piecewise_graphs=piecewise),
        scheduler=SchedulerConfig(policy="sarathi", max_num_seqs=256, max_num_batched_tokens=2048,
                                  max_model_len=max_model_len),
        cache=CacheConfig(enable_prefix_caching=False)))
    rng = random.Random(0)
    vocab = engine.model_config.vocab_size
    params = SamplingParams(max_tokens=max_tokens, temperature=0.0, ignore_eos=True)
    for i in range(decodes):
        engine.add_request(f"d{i}", [rng.randrange(vocab) for _ in range(context)], params)
    return engine, rng


def run_variant(name: str, model: str, decodes: int, prompt: int, rounds: int) -> dict:
    from cadence.core import graph_buckets
    from cadence.core.sampling_params import SamplingParams
    from cadence.runtime.attention import vattention

    saved = graph_buckets.PIECEWISE_TOKEN_SIZES, vattention.VAttentionBackend.wants_idle_time
    if name == "old-buckets":
        graph_buckets.PIECEWISE_TOKEN_SIZES = OLD_BUCKETS
    if name == "no-idle":
        vattention.VAttentionBackend.wants_idle_time = lambda self: False
    try:
        engine, rng = engine_with_decodes(model, decodes, 500, 7000, 8192, piecewise=name != "eager")
        vocab = engine.model_config.vocab_size
        for _ in range(40):
            engine.step()
        engine.step_trace.clear()
        one = SamplingParams(max_tokens=2, temperature=0.0, ignore_eos=True)
        t0 = time.perf_counter()
        for r in range(rounds):
            engine.add_request(f"p{r}", [rng.randrange(vocab) for _ in range(prompt)], one)
            for _ in range(8):
                engine.step()
        wall = time.perf_counter() - t0
        rows = list(engine.step_trace)
        engine.shutdown()
    finally:
        graph_buckets.PIECEWISE_TOKEN_SIZES, vattention.VAttentionBackend.wants_idle_time = saved
    # fields: start, schedule, prepare, execute, update, seqs, decodes, prefill tokens, ...
    mixed = [r for r in rows if r[7] > 0 and r[6] > 0]
    dec = [r for r in rows if r[7] == 0]
    med = lambda xs: statistics.median(xs) * 1e3 if xs else None  # noqa: E731
    return {"variant": name, "mixed_steps": len(mixed), "mixed_execute_ms": med([r[3] for r in mixed]),
            "mixed_prepare_ms": med([r[2] for r in mixed]), "decode_execute_ms": med([r[3] for r in dec]),
            "decode_prepare_ms": med([r[2] for r in dec]), "wall_s": wall}


def split_sweep(model: str, decodes: int, prompt: int, context: int, rounds: int) -> dict:
    from cadence.core.sampling_params import SamplingParams
    from cadence.runtime.attention import vattention

    engine, rng = engine_with_decodes(model, decodes, context, 4000, 16384)
    vocab = engine.model_config.vocab_size
    while any(r.num_computed_tokens < r.num_prompt_tokens for r in engine.scheduler.running) or engine.scheduler.waiting:
        engine.step()
    for _ in range(10):
        engine.step()
    one = SamplingParams(max_tokens=2, temperature=0.0, ignore_eos=True)
    times: dict[str, list[float]] = {"split": [], "one_call": []}
    backend = engine.runner.attention
    if not isinstance(backend, vattention.VAttentionBackend):
        engine.shutdown()
        raise ValueError(f"the split sweep needs the vattention backend (a CUDA GPU), not {backend.name}")
    saved = backend.split_min_context
    try:
        for r in range(2 * rounds):
            mode = "split" if r % 2 == 0 else "one_call"
            backend.split_min_context = 0 if mode == "split" else 1 << 30
            engine.step_trace.clear()
            engine.add_request(f"p{r}", [rng.randrange(vocab) for _ in range(prompt)], one)
            for _ in range(4):
                engine.step()
            mixed = [x for x in engine.step_trace if x[7] > 0 and x[6] > 0]
            times[mode] += [x[2] + x[3] for x in mixed]  # prepare + execute
    finally:
        backend.split_min_context = saved
        engine.shutdown()
    med = {k: statistics.median(v) * 1e3 for k, v in times.items() if v}
    return {"model": model, "decodes": decodes, "decode_context": context, "prompt": prompt,
            "mixed_steps": {k: len(v) for k, v in times.items()}, "median_ms": med}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="qwen3-0.6b")
    ap.add_argument("--decodes", type=int, default=24)
    ap.add_argument("--prompt", type=int, default=700)
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--variants", default="head,old-buckets,no-idle,eager")
    ap.add_argument("--split-sweep", default=None, help="decode contexts (comma-separated): split vs one call")
    ap.add_argument("--models", default="qwen3-0.6b,llama3-8b", help="with --split-sweep")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    from cadence.bench.results import environment

    if args.split_sweep:
        out = {"benchmark": "mixed_step_split", "environment": environment(), "results": []}
        for model in args.models.split(","):
            for ctx in (int(c) for c in args.split_sweep.split(",")):
                try:
                    res = split_sweep(model, args.decodes, args.prompt, ctx, args.rounds)
                except Exception as exc:  # keep the other points
                    res = {"model": model, "decode_context": ctx, "error": f"{type(exc).__name__}: {exc}"}
                print(json.dumps(res), flush=True)
                out["results"].append(res)
                args.out.parent.mkdir(parents=True, exist_ok=True)
                args.out.write_text(json.dumps(out, indent=1) + "\n")
        return

    out = {"benchmark": "mixed_step_host", "environment": environment(), "model": args.model,
           "decodes": args.decodes, "prompt": args.prompt, "rounds": args.rounds, "results": []}
    for name in args.variants.split(","):
        res = run_variant(name, args.model, args.decodes, args.prompt, args.rounds)
        print(json.dumps(res), flush=True)
        out["results"].append(res)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
