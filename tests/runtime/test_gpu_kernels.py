"""Fused Triton kernels against the PyTorch reference path (bf16, on the GPU)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from cadence.models import layers
from cadence.models.config import NAMED_SHAPES, ModelConfig
from cadence.runtime import kernels

pytestmark = pytest.mark.gpu


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).norm() / b.float().norm())


@pytest.fixture
def reference(monkeypatch):
    def run(fn):
        with monkeypatch.context() as m:
            m.setattr(kernels, "enabled", lambda x: False)
            return fn()
    return run


@pytest.mark.parametrize("rows,cols", [(1, 1024), (37, 4096), (300, 128)])
def test_rms_norm(reference, rows, cols):
    x = torch.randn(rows, cols, device="cuda", dtype=torch.bfloat16)
    r = torch.randn_like(x)
    norm = layers.RMSNorm(cols, 1e-6).cuda().to(torch.bfloat16)
    norm.weight.data.uniform_(0.5, 1.5)
    out, res = norm(x, r)
    ref_out, ref_res = reference(lambda: norm(x, r))
    assert torch.equal(res, ref_res)
    assert rel(out, ref_out) < 1e-2
    assert rel(norm(x), reference(lambda: norm(x))) < 1e-2


def test_silu_and_mul(reference):
    x = torch.randn(77, 2 * 3072, device="cuda", dtype=torch.bfloat16)
    assert rel(layers.silu_and_mul(x), reference(lambda: layers.silu_and_mul(x))) < 1e-2


def test_rope_on_strided_views(reference):
    cfg = dataclasses.replace(ModelConfig.from_dict(NAMED_SHAPES["llama3-8b"]), max_position_embeddings=4096)
    rope = layers.RotaryEmbedding(cfg).cuda()
    qkv = torch.randn(50, 48 * 128, device="cuda", dtype=torch.bfloat16)
    pos = torch.randint(0, 4096, (50,), device="cuda")
    q, k = qkv[:, :4096].view(50, 32, 128), qkv[:, 4096:5120].view(50, 8, 128)
    ref_q, ref_k = reference(lambda: rope(pos, q.clone(), k.clone()))
    out_q, out_k = rope(pos, q, k)
    assert rel(out_q, ref_q) < 1e-2 and rel(out_k, ref_k) < 1e-2


@pytest.mark.parametrize("arch", ["LlamaForCausalLM", "Qwen3ForCausalLM"])
def test_fused_qk_norm_rope(reference, arch):
    from cadence.models.llama import DecoderAttention

    shape = dict(NAMED_SHAPES["qwen3-0.6b"], architectures=[arch], max_position_embeddings=4096)
    cfg = ModelConfig.from_dict(shape)
    att = DecoderAttention(cfg, 0).cuda().to(torch.bfloat16)
    if att.q_norm is not None:
        att.q_norm.weight.data.uniform_(0.5, 1.5)
        att.k_norm.weight.data.uniform_(0.5, 1.5)
    rope = layers.RotaryEmbedding(cfg).cuda()
    x = torch.randn(33, cfg.hidden_size, device="cuda", dtype=torch.bfloat16)
    pos = torch.randint(0, 4096, (33,), device="cuda")
    seen = []

    def capture(layer, q, k, v):
        seen.append((q.clone(), k.clone(), v.clone()))
        return q

    att(x, rope, pos, capture)
    reference(lambda: att(x, rope, pos, capture))
    for got, want in zip(seen[0], seen[1], strict=True):
        assert rel(got, want) < 1e-2


def test_kv_write_into_strided_rows():
    rows = torch.randn(50, 2, 4, 8, 128, device="cuda", dtype=torch.bfloat16)  # [row, K/V, layer, head, dim]
    before = rows.clone()
    qkv = torch.randn(6, 48 * 128, device="cuda", dtype=torch.bfloat16)
    k, v = qkv[:, 32 * 128:40 * 128].view(6, 8, 128), qkv[:, 40 * 128:].view(6, 8, 128)
    idx = torch.tensor([3, 0, 49, 7, 8, 20], device="cuda")
    kernels.kv_write(k, v, rows[:, 0, 2], rows[:, 1, 2], idx)
    assert torch.equal(rows[idx, 0, 2], k) and torch.equal(rows[idx, 1, 2], v)
    before[idx, :, 2] = rows[idx, :, 2]
    assert torch.equal(rows, before)  # nothing else written
