"""vattention's decode kernel on the GPU: one query row a request (small batches, where PyTorch's
flash kernel splits long contexts itself) and grouped heads packed as rows (large batches), both
against per-request attention computed in fp32, eagerly and replayed from a CUDA graph with the
fixed max_seqlen_k a graph captures. `python -m pytest -q tests/runtime -m gpu`."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from cadence.runtime.attention.flash import PACKED_MIN_TILES, decode_kernel

pytestmark = pytest.mark.gpu


def reference(q, k, v, cu_k, ctx, scale):
    out = torch.empty(q.shape, dtype=torch.float32, device=q.device)
    rep = q.shape[1] // k.shape[1]
    for b in range(q.shape[0]):
        s, n = int(cu_k[b]), int(ctx[b])
        keys = k[s:s + n].float().repeat_interleave(rep, 1).transpose(0, 1)
        vals = v[s:s + n].float().repeat_interleave(rep, 1).transpose(0, 1)
        out[b] = F.scaled_dot_product_attention(q[b].float()[:, None], keys, vals, scale=scale)[:, 0]
    return out


@pytest.mark.parametrize("rows,longest", [(1, 16384), (4, 8192), (8, 3000), (32, 2048), (64, 1024)])
def test_decode_kernel_matches_reference_eager_and_graphed(rows, longest):
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    dev, dt = torch.device("cuda"), torch.bfloat16
    g = torch.Generator(device=dev).manual_seed(rows)
    Hq, Hkv, D, layers, slot = 32, 8, 128, 4, longest
    data = torch.randn(rows * slot, 2, layers, Hkv, D, device=dev, dtype=dt, generator=g)
    k, v = data[:, 0, 1], data[:, 1, 1]  # strided like vattention's rows
    q = torch.randn(rows, Hq, D, device=dev, dtype=dt, generator=g)
    ctx = torch.randint(1, longest + 1, (rows,), device=dev, dtype=torch.int32, generator=g)
    ctx[0] = longest
    order = torch.randperm(rows, device=dev, generator=g)
    cu_k = torch.cat([order * slot, torch.tensor([rows * slot], device=dev)]).to(torch.int32)
    scale = D ** -0.5
    kernel = decode_kernel(rows, Hq, Hkv, scale, dev)
    assert (rows * Hkv >= PACKED_MIN_TILES) == (rows >= 32)
    want = reference(q, k, v, cu_k, ctx, scale)
    got = kernel(q, k, v, cu_k, ctx, int(ctx.max())).float()
    assert ((got - want).abs().max() / want.abs().max()).item() < 1e-2

    static_out = torch.empty_like(q)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        kernel(q, k, v, cu_k, ctx, 32768)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_out.copy_(kernel(q, k, v, cu_k, ctx, 32768))
    ctx.copy_(torch.randint(1, longest + 1, (rows,), device=dev, dtype=torch.int32, generator=g))  # a new batch
    graph.replay()
    want = reference(q, k, v, cu_k, ctx, scale)
    assert ((static_out.float() - want).abs().max() / want.abs().max()).item() < 1e-2
