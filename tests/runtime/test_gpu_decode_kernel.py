"""vattention's decode kernels on the GPU, against per-request attention computed in fp32, eagerly
and replayed from a CUDA graph with the fixed max_seqlen_k a graph captures: the Triton kernel (with
and without context splits) and PyTorch's flash kernel (one query row a request for small batches,
where it splits long contexts itself; grouped heads packed as rows for large ones).
`python -m pytest -q tests/runtime -m gpu`."""

from __future__ import annotations

import pytest
import torch

from cadence.runtime.attention import triton_decode as td
from cadence.runtime.attention.decode import PACKED_MIN_TILES, decode_kernel

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("kind", ["triton", "flash"])
@pytest.mark.parametrize("rows,longest", [(1, 16384), (4, 8192), (8, 3000), (32, 2048), (64, 1024)])
def test_decode_kernel_matches_reference_eager_and_graphed(rows, longest, kind):
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
    kernel = decode_kernel(rows, Hq, Hkv, scale, dev, longest, kind)
    assert (rows * Hkv >= PACKED_MIN_TILES) == (rows >= 32)  # flash packs from 32 requests
    want = td.reference(q, k, v, cu_k, ctx, scale)
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
    want = td.reference(q, k, v, cu_k, ctx, scale)
    assert ((static_out.float() - want).abs().max() / want.abs().max()).item() < 1e-2


@pytest.mark.parametrize("heads,kv_heads,rows,longest,splits", [
    (32, 8, 256, 1500, 1), (16, 8, 300, 700, 1), (32, 8, 3, 9000, 8), (16, 8, 5, 3000, 16), (14, 2, 7, 2000, 4),
    (8, 8, 2, 600, 2)])
def test_triton_decode_matches_reference_eager_and_graphed(heads, kv_heads, rows, longest, splits):
    """The Triton decode kernel, with and without context splits, on strided rows handed out of order,
    against fp32 attention; then replayed from a CUDA graph on new context lengths."""
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    dev, dt = torch.device("cuda"), torch.bfloat16
    g = torch.Generator(device=dev).manual_seed(rows * splits)
    D, layers, slot = 128, 3, longest
    data = torch.randn(rows * slot, 2, layers, kv_heads, D, device=dev, dtype=dt, generator=g)
    k, v = data[:, 0, 2], data[:, 1, 2]
    q = torch.randn(rows, heads, D, device=dev, dtype=dt, generator=g)
    used = torch.randint(1, longest + 1, (rows,), device=dev, dtype=torch.int32, generator=g)
    used[0] = longest
    start = (torch.randperm(rows, device=dev, generator=g) * slot).to(torch.int32)
    scale = D ** -0.5
    out = td.gqa_decode(q, k, v, start, used, scale, splits=splits)
    want = td.reference(q, k, v, start, used, scale)
    assert ((out.float() - want).abs().max() / want.abs().max()).item() < 1e-2

    static = torch.empty_like(q)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static.copy_(td.gqa_decode(q, k, v, start, used, scale, splits=splits))
    used.copy_(torch.randint(1, longest + 1, (rows,), device=dev, dtype=torch.int32, generator=g))
    graph.replay()
    want = td.reference(q, k, v, start, used, scale)
    assert ((static.float() - want).abs().max() / want.abs().max()).item() < 1e-2
