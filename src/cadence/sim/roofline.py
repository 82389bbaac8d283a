"""An analytic stand-in for a GPU profile: every operator's time from the roofline of the SKU.

Clearly labelled (source = "analytic-roofline") so that nothing downstream mistakes it for a
measurement; it exists so that `cadence sim` and `cadence search` run end to end, and tests run,
before `cadence profile` has been run on the H100.
"""

from __future__ import annotations

from cadence.sim import operators as ops
from cadence.sim.hardware import GPUSpec
from cadence.sim.profile_data import Profile
from cadence.sim.shapes import model_config, shard

SOURCE = "analytic-roofline"


def analytic_profile(model: str, tp: int, gpu: GPUSpec) -> Profile:
    s = shard(model, model_config(model), tp)
    prof = Profile(model, tp, f"{gpu.name} (roofline model)", SOURCE)
    for t in ops.TOKEN_GRID:
        for op in ops.TOKEN_OPS:
            prof.add(op, ops.roofline_token_op(op, s, gpu, t), tokens=t)
        prof.add("all_reduce", ops.all_reduce_op(s, gpu, t), tokens=t)
    for b in ops.DECODE_BATCH_GRID:
        prof.add("sampler", ops.roofline_token_op("sampler", s, gpu, b), batch=b)
        prof.add("cpu_step", ops.cpu_step_guess(b), batch=b, tokens=b)
        for c in ops.DECODE_CTX_GRID:
            prof.add("attn_decode", ops.roofline_attn_decode(s, gpu, b, c), batch=b, context=c)
    for q in ops.PREFILL_Q_GRID:
        for kv in ops.PREFILL_KV_GRID:
            if kv >= q:
                prof.add("attn_prefill", ops.roofline_attn_prefill(s, gpu, q, kv), tokens=q, batch=1, context=kv)
    return prof
