"""W1 offline throughput on one GPU: Cadence against the hardware floor and HF transformers.

    PYTHONPATH=src python benchmarks/throughput.py --models qwen3-0.6b llama3-8b --out results.json
    PYTHONPATH=src python benchmarks/throughput.py --hf --models qwen3-0.6b --out hf.json

Measures the device ceilings (copy bandwidth, bf16 matmul rate), computes W1's floor per model
shape (WORKLOADS.md), runs W1 with dummy weights through LLMEngine and reports output tokens/s
and % of floor; with --hf, serves the first 64 W1 requests through HF transformers' continuous
batching (sdpa) and through Cadence, and prints the ratio. Writes JSON with device, torch,
commit and workload.

    python benchmarks/throughput.py --floors-from results/throughput_h100_w1_4d7a09e.json \
        --hf-from results/throughput_h100_hf64.json --out results/throughput_floors_h100.json

computes, on any CPU, the floors of W1 and of its first 64 requests from a run's measured ceilings:
WORKLOADS.md's (the whole run's bytes over bandwidth or FLOPs over the matmul rate, whichever is
longer) and a per-step one (each step at least the longer of its own bytes and FLOPs; prompts, all
there at t=0, in budget-sized compute-bound steps before the decodes they feed)."""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from cadence.core.config import CacheConfig, SchedulerConfig
from cadence.core.sampling_params import SamplingParams
from cadence.core.workload import w1
from cadence.engine.config import EngineConfig, ModelLoadConfig
from cadence.engine.llm_engine import LLMEngine
from cadence.models.config import NAMED_SHAPES, ModelConfig

HF_SUBSET = 64


def commit() -> str:
    if os.environ.get("CADENCE_COMMIT"):
        return os.environ["CADENCE_COMMIT"]
    try:
        return subprocess.check_output(["git", "rev-parse", "HEAD"], text=True, stderr=subprocess.DEVNULL).strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def ceilings() -> dict[str, float]:
    x = torch.empty(2 << 30, dtype=torch.uint8, device="cuda")
    y = torch.empty_like(x)
    for _ in range(3):
        y.copy_(x)
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(10):
        y.copy_(x)
    torch.cuda.synchronize()
    copy = 2 * x.numel() * 10 / (time.perf_counter() - t)
    del x, y
    a = torch.randn(8192, 8192, dtype=torch.bfloat16, device="cuda")
    b = torch.randn_like(a)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(10):
        a @ b
    torch.cuda.synchronize()
    flops = 2 * 8192**3 * 10 / (time.perf_counter() - t)
    del a, b
    torch.cuda.empty_cache()
    return {"copy_bytes_per_s": copy, "bf16_flops_per_s": flops}


def floor(cfg: ModelConfig, reqs: list[tuple[int, int]], ceil: dict[str, float]) -> dict[str, float]:
    """WORKLOADS.md: time >= max(FLOPs / matmul rate, bytes / bandwidth). Bytes: the weights once per
    decode step (at least the longest output) plus every KV byte attention reads; FLOPs: 2 x
    parameters per token processed plus attention."""
    params = cfg.num_parameters()
    kv_token = cfg.kv_bytes_per_token(2)
    steps = max(o for _, o in reqs)
    weight_bytes = 2 * params * steps
    kv_reads = sum(o * p + o * (o - 1) // 2 for p, o in reqs)  # context tokens read by each decode
    kv_bytes = kv_token * kv_reads
    tokens = sum(p + o for p, o in reqs)
    attn_ctx = kv_reads + sum(p * (p + 1) // 2 for p, _ in reqs)
    flops = 2 * params * tokens + 4 * cfg.num_layers * cfg.q_size * attn_ctx
    t_mem = (weight_bytes + kv_bytes) / ceil["copy_bytes_per_s"]
    t_flop = flops / ceil["bf16_flops_per_s"]
    out = sum(o for _, o in reqs)
    t = max(t_mem, t_flop)
    return {"weights_s": weight_bytes / ceil["copy_bytes_per_s"], "kv_s": kv_bytes / ceil["copy_bytes_per_s"],
            "memory_s": t_mem, "compute_s": t_flop, "floor_s": t, "floor_out_tok_s": out / t}


def step_floor(cfg: ModelConfig, reqs: list[tuple[int, int]], ceil: dict[str, float],
                budget: int = 4096) -> dict[str, float]:
    """A tighter floor than `floor`: a decode step cannot take less than the longer of its own memory
    time (weights + its requests' KV) and compute time, so steps near the ridge point (llama3-8b at
    ~256 requests) count both; the prompts run first, in budget-sized compute-bound steps."""
    params, kv_token = cfg.num_parameters(), cfg.kv_bytes_per_token(2)
    bw, rate = ceil["copy_bytes_per_s"], ceil["bf16_flops_per_s"]
    prompt = sum(p for p, _ in reqs)
    attn = sum(p * (p + 1) // 2 for p, _ in reqs)
    t_prefill = max(-(-prompt // budget) * 2 * params / bw,
                    (2 * params * prompt + 4 * cfg.num_layers * cfg.q_size * attn) / rate)
    t_decode = 0.0
    for j in range(max(o for _, o in reqs)):
        live = [p for p, o in reqs if o > j]
        ctx = sum(live) + j * len(live)
        t_decode += max((2 * params + kv_token * ctx) / bw,
                        (2 * params * len(live) + 4 * cfg.num_layers * cfg.q_size * ctx) / rate)
    out = sum(o for _, o in reqs)
    return {"prefill_s": t_prefill, "decode_s": t_decode, "floor_s": t_prefill + t_decode,
            "floor_out_tok_s": out / (t_prefill + t_decode)}


def floors_report(run: dict, hf: dict | None) -> dict:
    """Both floors of W1 and of its first HF_SUBSET requests, from a run's ceilings, beside the
    run's figures (and the HF comparison's, if given)."""
    specs = w1()
    reqs = [(len(s.prompt_token_ids), s.output_tokens) for s in specs]
    ceil = run["ceilings"]
    ceil64 = hf["ceilings"] if hf is not None else ceil  # the HF comparison's own host
    out: dict = {"benchmark": "throughput_floors", "ceilings": ceil, "ceilings_from": run.get("commit_note")
                 or run.get("commit"), "device": run.get("device"), "models": {}}
    for model in ("qwen3-0.6b", "llama3-8b"):
        cfg = ModelConfig.from_dict(NAMED_SHAPES[model])
        m: dict = {"w1": {"floor": floor(cfg, reqs, ceil), "step_floor": step_floor(cfg, reqs, ceil)},
                   "first_64": {"floor": floor(cfg, reqs[:HF_SUBSET], ceil64),
                                "step_floor": step_floor(cfg, reqs[:HF_SUBSET], ceil64)}}
        for key in ("w1", "w1_async"):
            if key in run.get(model, {}):
                tps = run[model][key]["out_tok_s"]
                m["w1"][key] = {"out_tok_s": tps, "pct_of_floor": 100 * tps / m["w1"]["floor"]["floor_out_tok_s"],
                                "pct_of_step_floor": 100 * tps / m["w1"]["step_floor"]["floor_out_tok_s"]}
        if hf is not None and "hf_cb_64" in hf.get(model, {}):
            h = hf[model]["hf_cb_64"]["out_tok_s"]
            m["first_64"]["hf_out_tok_s"] = h
            m["first_64"]["cadence_out_tok_s"] = hf[model]["cadence_64"]["out_tok_s"]
            # the most any engine could beat HF by on this subset, on this device
            m["first_64"]["max_ratio_vs_hf"] = m["first_64"]["floor"]["floor_out_tok_s"] / h
        out["models"][model] = m
    return out


def make_engine(model: str, args, overlapped: bool = False, decode_kernel: str | None = None) -> LLMEngine:
    cfg = EngineConfig(
        load=ModelLoadConfig(model=model, load_format="dummy", attention_backend=args.backend,
                             piecewise_graphs=args.piecewise_graphs, decode_kernel=decode_kernel or args.decode_kernel),
        scheduler=SchedulerConfig(max_num_seqs=256, max_num_batched_tokens=args.budget, max_model_len=2048,
                                  async_scheduling=overlapped),
        cache=CacheConfig(gpu_memory_utilization=args.gpu_memory_utilization, enable_prefix_caching=True),
    )
    return LLMEngine(cfg)


def run_cadence(engine: LLMEngine, reqs: list[tuple[list[int], int]], tag: str) -> dict:
    """All requests submitted at once; wall clock from the first submission to the last token."""
    engine.kv.reset_prefix_cache()
    sched, runner = engine.scheduler, engine.runner
    t_sched = t_exec = 0.0
    orig_schedule, orig_execute = sched.schedule, runner.execute

    def timed_schedule(*a, **k):
        nonlocal t_sched
        t = time.perf_counter()
        r = orig_schedule(*a, **k)
        t_sched += time.perf_counter() - t
        return r

    def timed_execute(*a, **k):
        nonlocal t_exec
        t = time.perf_counter()
        r = orig_execute(*a, **k)
        t_exec += time.perf_counter() - t
        return r

    sched.schedule, runner.execute = timed_schedule, timed_execute
    att = runner.attention
    vm = getattr(att, "vm", None)
    maps0 = (vm.stats.maps, vm.stats.map_seconds, att.num_swaps) if vm else None
    replays0 = runner.graphs.num_replays if runner.graphs else 0
    frag: list[dict] = []
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for i, (ids, o) in enumerate(reqs):
        engine.add_request(f"{tag}-{i}", ids, SamplingParams(max_tokens=o, temperature=0, ignore_eos=True))
    out_tokens, steps, step_times = 0, 0, []
    while engine.has_unfinished():
        ts = time.perf_counter()
        outs = engine.step()
        step_times.append(time.perf_counter() - ts)
        out_tokens += sum(len(x.new_token_ids) for x in outs)
        steps += 1
        if steps % 50 == 0 and hasattr(att, "fragmentation") and runner.last_batch is not None:
            frag.append(att.fragmentation(runner.last_batch.context_lens))
    elapsed = time.perf_counter() - t0
    sched.schedule, runner.execute = orig_schedule, orig_execute
    res = {"requests": len(reqs), "out_tokens": out_tokens, "seconds": elapsed, "out_tok_s": out_tokens / elapsed,
           "steps": steps, "median_step_ms": 1e3 * statistics.median(step_times),
           "schedule_s": t_sched, "execute_s": t_exec, "rest_of_step_s": sum(step_times) - t_sched - t_exec,
           "runner_prepare_s": runner.prepare_seconds,
           "graph_replays": (runner.graphs.num_replays - replays0) if runner.graphs else 0,
           "preemptions": engine.scheduler.num_preemptions}
    if vm is not None:
        maps = vm.stats.maps - maps0[0]
        res.update(page_maps=maps, page_map_s=vm.stats.map_seconds - maps0[1],
                   page_map_us=1e6 * (vm.stats.map_seconds - maps0[1]) / max(maps, 1),
                   page_swaps=att.num_swaps - maps0[2])
    if frag:
        res["fragmentation_mean"] = {k: statistics.mean(f[k] for f in frag) for k in
                                     ("tail_waste", "waste_pages_per_request")}
        res["fragmentation_max_tail_waste"] = max(f["tail_waste"] for f in frag)
    return res


def run_w1(engine: LLMEngine, reqs: list[tuple[list[int], int]], r: dict, model: str, key: str) -> None:
    """W1 through `engine` into r[key], with its share of the floor in r["floor"]."""
    r[key] = run_cadence(engine, reqs, key)
    r[key]["pct_of_floor"] = 100 * r[key]["out_tok_s"] / r["floor"]["floor_out_tok_s"]
    print(model, key, json.dumps(r[key]), flush=True)


def decode_step_gpu_ms(engine: LLMEngine) -> dict[str, float]:
    """GPU time of one graphed decode step per bucket (scratch-slot rows: the kernel part only)."""
    graphs = engine.runner.graphs
    if graphs is None:
        return {}
    out = {}
    for b in (1, 64, 256):
        bucket = graphs.bucket(b)
        if bucket is None:
            continue
        g = graphs.graphs[bucket]
        engine.runner.attention.graph_attention(bucket, graphs.positions[:bucket])  # rows -> scratch slot
        graphs.positions[:bucket].zero_()
        for _ in range(3):
            g.replay()
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        for _ in range(20):
            g.replay()
        e.record()
        torch.cuda.synchronize()
        out[f"b{bucket}_ctx1"] = s.elapsed_time(e) / 20
    return out


def run_hf(model: str, reqs: list[tuple[list[int], int]], timeout_s: float) -> dict:
    from transformers import AutoModelForCausalLM, GenerationConfig, LlamaConfig, Qwen3Config

    shape = NAMED_SHAPES[model]
    keys = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
            "vocab_size", "max_position_embeddings", "rope_theta", "rms_norm_eps", "tie_word_embeddings",
            "head_dim")
    kw = {k: shape[k] for k in keys if k in shape}
    hf_cfg = (Qwen3Config if model.startswith("qwen3") else LlamaConfig)(**kw)
    torch.manual_seed(0)
    with torch.device("cuda"):
        hf = AutoModelForCausalLM.from_config(hf_cfg, dtype=torch.bfloat16, attn_implementation="sdpa")
    hf.eval()
    gen = GenerationConfig(do_sample=False, eos_token_id=-1, max_new_tokens=1024)
    res: dict = {}
    t0 = time.perf_counter()
    try:
        with hf.continuous_batching_context_manager(generation_config=gen, block=True, timeout=10) as mgr:
            res["warmup_s"] = time.perf_counter() - t0
            t1 = time.perf_counter()
            for ids, o in reqs:
                mgr.add_request(list(ids), max_new_tokens=o)
            done = toks = 0
            while done < len(reqs) and time.perf_counter() - t1 < timeout_s:
                out = mgr.get_result(timeout=1)
                if out is not None and out.is_finished():
                    done += 1
                    toks += len(out.generated_tokens)
            el = time.perf_counter() - t1
        res.update(done=done, out_tokens=toks, seconds=el, out_tok_s=toks / el)
    except Exception as exc:  # report, don't hide: HF's CB path has crashed here before
        res["error"] = repr(exc)[:500]
    del hf
    torch.cuda.empty_cache()
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["qwen3-0.6b", "llama3-8b"])
    ap.add_argument("--backend", default="auto")
    ap.add_argument("--budget", type=int, default=4096, help="max_num_batched_tokens")
    ap.add_argument("--gpu-memory-utilization", type=float, default=0.9)
    ap.add_argument("--hf", action="store_true", help="also HF continuous batching on the first 64 requests")
    ap.add_argument("--skip-w1", action="store_true", help="only the 64-request comparison")
    ap.add_argument("--hf-timeout", type=float, default=240.0)
    ap.add_argument("--out", default=None, help="results JSON path")
    ap.add_argument("--piecewise-graphs", action=argparse.BooleanOptionalAction, default=True,
                    help="CUDA graphs in pieces for steps with prefill tokens (the engine's --piecewise-graphs)")
    ap.add_argument("--async-scheduling", default="off", choices=("off", "on", "both"),
                    help="both: W1 with serial steps, then again with async scheduling, in the same process")
    ap.add_argument("--decode-kernel", default="auto", choices=("auto", "triton", "flash"),
                    help="the engine's --decode-kernel")
    ap.add_argument("--peer-decode-kernel", default=None, choices=("triton", "flash"),
                    help="also W1 (async if --async-scheduling is on or both) with this decode kernel, same process")
    ap.add_argument("--floors-from", default=None, metavar="JSON",
                    help="no GPU: compute both floors from this results file's ceilings and stop")
    ap.add_argument("--hf-from", default=None, metavar="JSON", help="with --floors-from: the HF comparison's results")
    args = ap.parse_args(argv)
    if args.floors_from:
        hf = json.loads(Path(args.hf_from).read_text()) if args.hf_from else None
        rep = floors_report(json.loads(Path(args.floors_from).read_text()), hf)
        text = json.dumps(rep, indent=1)
        print(text)
        if args.out:
            Path(args.out).write_text(text + "\n")
        return 0

    specs = w1()
    reqs = [(list(s.prompt_token_ids), s.output_tokens) for s in specs]
    assert sum(o for _, o in reqs) == 132_121, "W1 differs from WORKLOADS.md"
    res: dict = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__, "commit": commit(),
                 "workload": {"name": "W1", "requests": len(reqs), "out_tokens": 132_121,
                              "definition": "WORKLOADS.md W1 (random.Random(0)); greedy; EOS ignored; all at t=0",
                              "hf_subset": HF_SUBSET},
                 "settings": {"backend": args.backend, "max_num_batched_tokens": args.budget, "max_num_seqs": 256,
                              "gpu_memory_utilization": args.gpu_memory_utilization, "dtype": "bfloat16",
                              "weights": "dummy", "piecewise_graphs": args.piecewise_graphs,
                              "decode_kernel": args.decode_kernel},
                 "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    res["ceilings"] = ceilings()
    print(json.dumps(res, indent=1), flush=True)
    rows = []
    for model in args.models:
        r: dict = {"floor": floor(ModelConfig.from_dict(NAMED_SHAPES[model]), [(len(p), o) for p, o in reqs],
                                  res["ceilings"])}
        t = time.perf_counter()
        engine = make_engine(model, args, overlapped=args.async_scheduling == "on")
        r["engine_start_s"] = time.perf_counter() - t
        r["async_scheduling"] = args.async_scheduling == "on"
        r["kv_sizing"] = getattr(engine, "kv_sizing", None)
        r["backend"] = engine.runner.attention.name
        if engine.runner.graphs is not None:
            r["graph_capture_s"] = engine.runner.graphs.capture_seconds
        warm = [([10 + (7 * i + j) % 29000 for j in range(200 + 13 * i)], 8) for i in range(16)]

        run_cadence(engine, warm, "warm")
        if not args.skip_w1:
            run_w1(engine, reqs, r, model, "w1")
        if args.hf:
            r["cadence_64"] = run_cadence(engine, reqs[:HF_SUBSET], "sub")
        r["decode_gpu_ms"] = decode_step_gpu_ms(engine)
        engine.shutdown()
        if r["backend"] == "vattention":
            st = engine.runner.attention.vm.stats
            r["vmm_after_shutdown"] = {"pages_alive": st.pages_alive, "mappings_alive": st.mappings_alive}
        del engine
        torch.cuda.empty_cache()
        if args.async_scheduling == "both" and (args.hf or not args.skip_w1):  # the same, steps overlapped
            engine = make_engine(model, args, overlapped=True)
            run_cadence(engine, warm, "warm")
            if not args.skip_w1:
                run_w1(engine, reqs, r, model, "w1_async")
            if args.hf:
                r["cadence_64_async"] = run_cadence(engine, reqs[:HF_SUBSET], "suba")
            engine.shutdown()
            del engine
            torch.cuda.empty_cache()
        if args.peer_decode_kernel and not args.skip_w1:  # the same W1 with the other decode kernel
            overlapped = args.async_scheduling != "off"
            engine = make_engine(model, args, overlapped=overlapped, decode_kernel=args.peer_decode_kernel)
            run_cadence(engine, warm, "warm")
            run_w1(engine, reqs, r, model, f"w1{'_async' if overlapped else ''}_{args.peer_decode_kernel}_decode")
            engine.shutdown()
            del engine
            torch.cuda.empty_cache()
        if args.hf:
            r["hf_cb_64"] = run_hf(model, reqs[:HF_SUBSET], args.hf_timeout)
            if "out_tok_s" in r["hf_cb_64"]:
                r["ratio_vs_hf_64"] = r["cadence_64"]["out_tok_s"] / r["hf_cb_64"]["out_tok_s"]
                if "cadence_64_async" in r:
                    r["ratio_vs_hf_64_async"] = r["cadence_64_async"]["out_tok_s"] / r["hf_cb_64"]["out_tok_s"]
        res[model] = r
        print(model, json.dumps(r, indent=1), flush=True)
        for key in [k for k in r if k.startswith("w1")]:
            ratio = r.get("ratio_vs_hf_64_async" if key == "w1_async" else "ratio_vs_hf_64") if key in (
                "w1", "w1_async") else None
            rows.append((f"{model} {key[3:]}".strip(), r[key]["out_tok_s"], r["floor"]["floor_out_tok_s"],
                         r[key]["pct_of_floor"], ratio))
        if args.out:
            Path(args.out).write_text(json.dumps(res, indent=1))
    print(f"\n{'model':34} {'tok/s':>9} {'floor tok/s':>12} {'% floor':>8} {'x HF(64)':>9}")
    for model, tps, fl, pct, ratio in rows:
        print(f"{model:34} {tps:9.0f} {fl:12.0f} {pct:8.1f} {ratio if ratio else float('nan'):9.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
