"""Split-KV decode on the GPU: PyTorch's flash kernel over each context's parts, merged by
log-sum-exp, against the same kernel over whole contexts (bf16), eagerly and replayed from a CUDA
graph. `python -m pytest -q tests/runtime -m gpu`."""

from __future__ import annotations

import pytest
import torch

from cadence.runtime.attention.flash import flash_varlen, split_kv_decode

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("splits", [2, 4, 16])
def test_split_kv_decode_matches_whole_contexts(splits):
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    dev, dt = torch.device("cuda"), torch.bfloat16
    g = torch.Generator(device=dev).manual_seed(splits)
    B, Hq, Hkv, D, slot, layers = 6, 32, 8, 128, 4096, 4
    rows = torch.randn(B * slot, 2, layers, Hkv, D, device=dev, dtype=dt, generator=g)
    k, v = rows[:, 0, 1], rows[:, 1, 1]  # strided like vattention's rows
    q = torch.randn(B, Hq, D, device=dev, dtype=dt, generator=g)
    ctx = torch.tensor([1, 7, 4096, 1000, 15, 3333], device=dev, dtype=torch.int32)  # some < splits
    order = torch.tensor([2, 0, 5, 1, 4, 3], device=dev)
    cu_k = torch.cat([order * slot, torch.tensor([B * slot], device=dev)]).to(torch.int32)
    cu_1 = torch.arange(B + 1, device=dev, dtype=torch.int32)
    cu_split = torch.arange(B * splits + 1, device=dev, dtype=torch.int32)
    whole = flash_varlen(q, k, v, cu_1, cu_k, 1, slot, ctx, D ** -0.5).float()
    split = split_kv_decode(q, k, v, cu_k, ctx, slot, D ** -0.5, splits, cu_split).float()
    assert ((split - whole).abs().max() / whole.abs().max()).item() < 1e-2

    static_out = torch.empty_like(q)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        split_kv_decode(q, k, v, cu_k, ctx, slot, D ** -0.5, splits, cu_split)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_out.copy_(split_kv_decode(q, k, v, cu_k, ctx, slot, D ** -0.5, splits, cu_split))
    ctx.copy_(torch.tensor([2, 9, 100, 4000, 1, 2048], device=dev, dtype=torch.int32))  # a new batch
    graph.replay()
    whole = flash_varlen(q, k, v, cu_1, cu_k, 1, slot, ctx, D ** -0.5).float()
    assert ((static_out.float() - whole).abs().max() / whole.abs().max()).item() < 1e-2
