# ruff: noqa: E731  (lambdas bind each grid point's tensors for the timer)
"""Time Cadence's own operators on this machine's device, over a grid, for one model shape and TP.

Runs the model's own layers (RMSNorm, SiLU-and-mul, RoPE from cadence.models.layers; the runtime's
flash-attention call and sampler) on one GPU's share of the shapes (heads/TP, intermediate/TP,
vocabulary/TP) with dummy weights. All-reduce costs come from the stated ring bandwidth model
(hardware.py) until multi-GPU machines exist. Every op is bounded by a share of `max_seconds`;
points past it are skipped and named in the notes.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from cadence.sim import operators as ops
from cadence.sim.hardware import GPUSpec
from cadence.sim.profile_data import Profile
from cadence.sim.shapes import model_config, shard, sharded_config


@dataclass(frozen=True)
class Grid:
    tokens: Sequence[int]
    decode_batch: Sequence[int]
    decode_ctx: Sequence[int]
    prefill_q: Sequence[int]
    prefill_kv: Sequence[int]
    max_kv_tokens: int  # skip attention points holding more keys than this (memory)


GPU_GRID = Grid(ops.TOKEN_GRID, ops.DECODE_BATCH_GRID, ops.DECODE_CTX_GRID, ops.PREFILL_Q_GRID,
                ops.PREFILL_KV_GRID, 1 << 21)
CPU_GRID = Grid((1, 4, 16, 64, 128, 256), (1, 2, 4, 8), (32, 64, 128, 256), (16, 64, 128), (128, 256), 1 << 14)


class Timer:
    def __init__(self, device: torch.device, repeats: int) -> None:
        self.device, self.repeats = device, repeats

    def __call__(self, fn: Callable[[], object]) -> float:
        """Median seconds of `fn` after a warm-up (CUDA events on the GPU)."""
        fn()
        times = []
        cuda = self.device.type == "cuda"
        for _ in range(self.repeats):
            if cuda:
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                fn()
                end.record()
                end.synchronize()
                times.append(start.elapsed_time(end) / 1e3)
            else:
                t0 = time.perf_counter()
                fn()
                times.append(time.perf_counter() - t0)
        times.sort()
        return times[len(times) // 2]


def profile_model(model: str, tp: int, device: torch.device, gpu: GPUSpec, grid: Grid, max_seconds: float,
                  repeats: int = 5, log: Callable[[str], None] = print) -> tuple[Profile, list[str]]:
    from cadence.models.layers import RMSNorm, RotaryEmbedding, silu_and_mul

    mc = model_config(model)
    s = shard(model, mc, tp)
    smc = sharded_config(mc, s)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    prof = Profile(model, tp, name, "measured")
    notes: list[str] = []
    timer = Timer(device, repeats)
    t_start = time.monotonic()
    groups = 12
    deadline = [t_start]

    def open_group(label: str) -> None:
        deadline[0] = time.monotonic() + max(0.5, (t_start + max_seconds - time.monotonic()) / groups)
        log(f"profiling {label}")

    def out_of_time(label: str, point: object) -> bool:
        if time.monotonic() > deadline[0]:
            notes.append(f"{label}: time budget spent; points from {point} on skipped")
            return True
        return False

    torch.manual_seed(0)
    with torch.inference_mode():
        h = s.hidden
        maxt = max(grid.tokens)
        x_all = torch.randn(maxt, h, device=device, dtype=dtype)
        lin = {
            "qkv_proj": nn.Linear(h, s.q_size + 2 * s.kv_size, bias=mc.attention_bias),
            "o_proj": nn.Linear(s.q_size, h, bias=False),
            "mlp_gate_up": nn.Linear(h, 2 * s.intermediate, bias=False),
            "mlp_down": nn.Linear(s.intermediate, h, bias=False),
            "lm_head": nn.Linear(h, s.vocab, bias=False),
        }
        lin = {k: v.to(device, dtype) for k, v in lin.items()}
        norm = RMSNorm(h, mc.rms_norm_eps).to(device, dtype)
        rope = RotaryEmbedding(smc).to(device)
        embed = nn.Embedding(s.vocab, h).to(device, dtype)
        in_dims = {"qkv_proj": h, "o_proj": s.q_size, "mlp_gate_up": h, "mlp_down": s.intermediate, "lm_head": h}
        for op in ops.TOKEN_OPS:
            open_group(op)
            for t in grid.tokens:
                if op == "lm_head" and t > max(grid.decode_batch):
                    break  # lm_head runs over sampled rows only: at most one per running request
                if out_of_time(op, t):
                    break
                if op in lin:
                    xin = torch.randn(t, in_dims[op], device=device, dtype=dtype)
                    fn = (lambda m=lin[op], xin=xin: m(xin))
                elif op == "norm":
                    xin, res = x_all[:t], x_all[:t].clone()
                    fn = (lambda xin=xin, res=res: norm(xin, res))
                elif op == "act":
                    xin = torch.randn(t, 2 * s.intermediate, device=device, dtype=dtype)
                    fn = (lambda xin=xin: silu_and_mul(xin))
                elif op == "rope":
                    q = torch.randn(t, s.heads, s.head_dim, device=device, dtype=dtype)
                    k = torch.randn(t, s.kv_heads, s.head_dim, device=device, dtype=dtype)
                    pos = torch.arange(t, device=device) % smc.max_model_len
                    fn = (lambda q=q, k=k, pos=pos: rope(pos, q, k))
                else:  # embed
                    ids = torch.randint(0, s.vocab, (t,), device=device)
                    fn = (lambda ids=ids: embed(ids))
                prof.add(op, timer(fn), tokens=t)
        prof_points_all_reduce(prof, s, gpu, grid)
        _profile_sampler(prof, s, device, grid, timer, open_group, out_of_time)
        _profile_attention(prof, s, device, dtype, grid, timer, open_group, out_of_time)
    _profile_cpu_step(prof, grid, open_group, out_of_time, notes)
    notes.append(f"profiled in {time.monotonic() - t_start:.1f} s on {name} ({dtype})")
    return prof, notes


def prof_points_all_reduce(prof: Profile, s, gpu: GPUSpec, grid: Grid) -> None:
    for t in grid.tokens:  # from the stated ring model, not measured (one GPU)
        prof.add("all_reduce", ops.all_reduce_op(s, gpu, t), tokens=t)


def _profile_sampler(prof, s, device, grid, timer, open_group, out_of_time) -> None:
    from cadence.core.request import Request
    from cadence.core.sampling_params import SamplingParams
    from cadence.runtime.sampler import Sampler

    open_group("sampler")
    sampler = Sampler(device)
    for b in grid.decode_batch:
        if out_of_time("sampler", b):
            break
        logits = torch.randn(b, s.vocab, device=device)
        reqs = [Request(str(i), [1], SamplingParams(temperature=0.0)) for i in range(b)]
        prof.add("sampler", timer(lambda logits=logits, reqs=reqs: sampler(logits, reqs)), batch=b)


def _attn(q, k, v, cu_q, cu_k, max_q, max_k, used, scale, device):
    if device.type == "cuda":
        from cadence.runtime.attention.flash import flash_varlen

        return flash_varlen(q, k, v, cu_q, cu_k, max_q, max_k, used, scale)
    raise AssertionError


def _profile_attention(prof, s, device, dtype, grid, timer, open_group, out_of_time) -> None:
    scale = s.head_dim ** -0.5
    cuda = device.type == "cuda"
    rep = s.heads // s.kv_heads
    open_group("attn_prefill")
    for q_len in grid.prefill_q:
        for kv in grid.prefill_kv:
            if kv < q_len or kv > grid.max_kv_tokens:
                continue
            if out_of_time("attn_prefill", (q_len, kv)):
                break
            q = torch.randn(q_len, s.heads, s.head_dim, device=device, dtype=dtype)
            k = torch.randn(kv, s.kv_heads, s.head_dim, device=device, dtype=dtype)
            v = torch.randn_like(k)
            if cuda:
                cu_q = torch.tensor([0, q_len], device=device, dtype=torch.int32)
                cu_k = torch.tensor([0, kv], device=device, dtype=torch.int32)
                used = torch.tensor([kv], device=device, dtype=torch.int32)
                fn = (lambda q=q, k=k, v=v, cu_q=cu_q, cu_k=cu_k, used=used, ql=q_len, kv=kv:
                      _attn(q, k, v, cu_q, cu_k, ql, kv, used, scale, device))
            else:  # SDPA with the chunk's queries aligned to the end of the keys (causal)
                mask = torch.ones(q_len, kv, dtype=torch.bool).tril(kv - q_len)
                qt = q.transpose(0, 1)[None]
                kt = k.repeat_interleave(rep, 1).transpose(0, 1)[None]
                vt = v.repeat_interleave(rep, 1).transpose(0, 1)[None]
                fn = (lambda qt=qt, kt=kt, vt=vt, mask=mask: F.scaled_dot_product_attention(qt, kt, vt, attn_mask=mask))
            prof.add("attn_prefill", timer(fn), tokens=q_len, batch=1, context=kv)
    open_group("attn_decode")
    for b in grid.decode_batch:
        for c in grid.decode_ctx:
            if b * c > grid.max_kv_tokens:
                continue
            if out_of_time("attn_decode", (b, c)):
                break
            q = torch.randn(b, s.heads, s.head_dim, device=device, dtype=dtype)
            k = torch.randn(b * c, s.kv_heads, s.head_dim, device=device, dtype=dtype)
            v = torch.randn_like(k)
            if cuda:  # the engine's decode call (Triton or flash, as vattention picks; splits for this context)
                from cadence.runtime.attention.decode import decode_kernel

                kern = decode_kernel(b, s.heads, s.kv_heads, scale, device, c)
                cu_k = torch.arange(b + 1, device=device, dtype=torch.int32) * c
                used = torch.full((b,), c, device=device, dtype=torch.int32)
                fn = (lambda q=q, k=k, v=v, kern=kern, cu_k=cu_k, used=used, c=c: kern(q, k, v, cu_k, used, c))
            else:
                qt = q[:, :, None, :]
                kt = k.view(b, c, s.kv_heads, s.head_dim).repeat_interleave(rep, 2).transpose(1, 2)
                vt = v.view(b, c, s.kv_heads, s.head_dim).repeat_interleave(rep, 2).transpose(1, 2)
                fn = (lambda qt=qt, kt=kt, vt=vt: F.scaled_dot_product_attention(qt, kt, vt))
            prof.add("attn_decode", timer(fn), batch=b, context=c)


def _profile_cpu_step(prof, grid, open_group, out_of_time, notes_once: list[str]) -> None:
    """The engine's host work per step for b running decodes: the real scheduler's schedule and
    update, and the real step-batch builder (on the CPU, as the engine builds it before the copy)."""
    from cadence.core.config import SchedulerConfig
    from cadence.core.kv import KVCacheManager
    from cadence.core.request import Request
    from cadence.core.sampling_params import SamplingParams
    from cadence.core.scheduler import make_scheduler
    from cadence.runtime.step_batch import build_step_batch

    open_group("cpu_step")
    cpu = torch.device("cpu")
    for b in grid.decode_batch:
        if out_of_time("cpu_step", b):
            break
        kv = KVCacheManager(b * 64 + 64, 16, False)
        sch = make_scheduler(SchedulerConfig("sarathi", max(b, 1), max(2048, b)), kv, 1 << 16)
        for i in range(b):
            sch.add_request(Request(str(i), [1] * 16, SamplingParams(max_tokens=1 << 15, ignore_eos=True)))
        out = sch.schedule(0.0)  # the prefills
        sch.update_from_output(out, {str(i): 7 for i in range(b)}, 0.0)
        samples = []
        for _ in range(7):
            t0 = time.perf_counter()
            out = sch.schedule(0.0)
            try:
                build_step_batch(out, kv, cpu)
            except Exception as exc:  # the runtime's builder changed shape: time the scheduler alone
                if not any(n.startswith("cpu_step:") for n in notes_once):
                    notes_once.append(f"cpu_step: step-batch builder not timed ({type(exc).__name__}: {exc})")
            sch.update_from_output(out, {str(i): 7 for i in range(b)}, 0.0)
            samples.append(time.perf_counter() - t0)
        samples.sort()
        prof.add("cpu_step", samples[len(samples) // 2], batch=b, tokens=b)
