"""The weight-streaming matmul on the GPU against torch's (bf16): every row count it takes, shapes
that do and do not divide its tiles, with and without split-K, eagerly and replayed from a CUDA
graph; and a model whose small steps take it against the same model on cuBLAS.
`python -m pytest -q tests/runtime -m gpu`."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from cadence.models.config import ModelConfig
from cadence.models.layers import stream_small_batches
from cadence.models.llama import LlamaForCausalLM
from cadence.runtime.skinny_gemm import MAX_ROWS, TileConfig, skinny_mm

pytestmark = pytest.mark.gpu


def _rel(got: torch.Tensor, want: torch.Tensor) -> float:
    return ((got.float() - want.float()).abs().max() / want.float().abs().max()).item()


@pytest.mark.parametrize("n,k", [(6144, 4096), (4096, 14336), (1000, 1030), (96, 64)])
def test_skinny_mm_matches_torch(n, k):
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    g = torch.Generator(device="cuda").manual_seed(n + k)
    w = torch.randn(n, k, device="cuda", dtype=torch.bfloat16, generator=g)
    for m in (1, 2, 7, 16, 33, MAX_ROWS):
        x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16, generator=g)
        want = F.linear(x, w)
        assert _rel(skinny_mm(x, w), want) < 1e-2, m
        for c in (TileConfig(64, 64, 1), TileConfig(128, 64, 4, num_warps=8, num_stages=3)):
            assert _rel(skinny_mm(x, w, c), want) < 1e-2, (m, c)


def test_skinny_mm_replays_from_a_graph():
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    g = torch.Generator(device="cuda").manual_seed(1)
    w = torch.randn(4096, 4096, device="cuda", dtype=torch.bfloat16, generator=g)
    x = torch.randn(24, 4096, device="cuda", dtype=torch.bfloat16, generator=g)
    skinny_mm(x, w)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = skinny_mm(x, w)
    x.copy_(torch.randn(24, 4096, device="cuda", dtype=torch.bfloat16, generator=g))
    graph.replay()
    assert _rel(out, F.linear(x, w)) < 1e-2


def test_skinny_mm_rejects_what_it_cannot_take():
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    w = torch.zeros(64, 128, device="cuda", dtype=torch.bfloat16)
    with pytest.raises(ValueError, match="rows"):
        skinny_mm(torch.zeros(MAX_ROWS + 1, 128, device="cuda", dtype=torch.bfloat16), w)
    with pytest.raises(ValueError, match="agree in K"):
        skinny_mm(torch.zeros(4, 64, device="cuda", dtype=torch.bfloat16), w)


def test_model_with_streamed_small_batches_matches_cublas():
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    cfg = ModelConfig(architecture="LlamaForCausalLM", vocab_size=1000, hidden_size=256, intermediate_size=768,
                      num_layers=2, num_heads=4, num_kv_heads=2, head_dim=64, max_position_embeddings=512)
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg).to("cuda", torch.bfloat16)
    hidden = torch.randn(48, cfg.hidden_size, device="cuda", dtype=torch.bfloat16)
    want = model.compute_logits(hidden)
    assert stream_small_batches(model, MAX_ROWS) == 2 * 4 + 1
    assert _rel(model.compute_logits(hidden), want) < 1e-2
    big = torch.randn(MAX_ROWS + 8, cfg.hidden_size, device="cuda", dtype=torch.bfloat16)
    assert torch.equal(model.compute_logits(big), F.linear(big, model.lm_head.weight).float())  # cuBLAS above
