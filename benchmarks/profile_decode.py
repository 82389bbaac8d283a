"""Where a W1 decode step's GPU time goes: admit W1's 256 requests, run until all are decoding,
then profile a few eager decode steps (kernel breakdown) and time graphed ones.

    PYTHONPATH=src python benchmarks/profile_decode.py --model llama3-8b
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.profiler import ProfilerActivity, profile

from cadence.core.config import CacheConfig, SchedulerConfig
from cadence.core.sampling_params import SamplingParams
from cadence.core.workload import w1
from cadence.engine.config import EngineConfig, ModelLoadConfig
from cadence.engine.llm_engine import LLMEngine


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="qwen3-0.6b")
    ap.add_argument("--budget", type=int, default=4096)
    args = ap.parse_args()
    engine = LLMEngine(EngineConfig(
        load=ModelLoadConfig(model=args.model, load_format="dummy"),
        scheduler=SchedulerConfig(max_num_seqs=256, max_num_batched_tokens=args.budget, max_model_len=2048),
        cache=CacheConfig()))
    for s in w1():
        engine.add_request(f"r{s.request_id}", list(s.prompt_token_ids),
                           SamplingParams(max_tokens=1024, temperature=0, ignore_eos=True))
    while engine.scheduler.waiting or any(r.is_prefill for r in engine.scheduler.running):
        engine.step()
    for _ in range(300):  # into the middle of the run: contexts ~ prompt + 300
        engine.step()
    ctx = engine.runner.last_batch.context_lens
    print(f"{args.model}: {len(ctx)} requests decoding, mean context {sum(ctx) / len(ctx):.0f}")
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(20):
        engine.step()
    torch.cuda.synchronize()
    print(f"graphed engine step (CPU + GPU, serial): {(time.perf_counter() - t) / 20 * 1e3:.2f} ms")
    graphs = engine.runner.graphs
    b = graphs.bucket(len(ctx))
    engine.runner.attention.prepare_decode(engine.runner.last_batch, b)
    s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    s.record()
    for _ in range(20):
        graphs.graphs[b].replay()
    e.record()
    torch.cuda.synchronize()
    print(f"graph replay alone (GPU): {s.elapsed_time(e) / 20:.2f} ms")
    engine.runner.graphs = None
    for _ in range(3):
        engine.step()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(10):
            engine.step()
    engine.runner.graphs = graphs
    print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=18, max_name_column_width=70))
    engine.shutdown()


if __name__ == "__main__":
    main()
