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
