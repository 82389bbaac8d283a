"""The Triton decode kernel's logic on the CPU, through Triton's interpreter (TRITON_INTERPRET=1, set
before Triton is imported, hence a fresh process): grouped query heads of several group sizes, rows
handed out of order at a row stride, contexts shorter and longer than a tile, with and without
context splits (empty splits included), against float32 attention per request. The GPU suite
checks the compiled kernel in bf16 (tests/runtime/test_gpu_decode_kernel.py)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

SCRIPT = textwrap.dedent("""
    import torch
    from cadence.runtime.attention import triton_decode as td

    gen = torch.Generator().manual_seed(0)
    worst = 0.0
    for heads, kv_heads, D, slot, splits, block_n in [(8, 2, 32, 50, 1, 16), (4, 4, 32, 70, 4, 16),
                                                        (6, 2, 16, 33, 2, 16), (12, 4, 16, 200, 8, 32),
                                                        (32, 8, 16, 40, 16, 16)]:
        B = 4
        data = torch.randn(B * slot, 2, 3, kv_heads, D, generator=gen)
        k, v = data[:, 0, 1], data[:, 1, 1]  # one layer of rows holding 3 layers' K and V
        q = torch.randn(B, heads, D, generator=gen)
        used = torch.randint(1, slot + 1, (B,), generator=gen, dtype=torch.int32)
        used[0], used[1] = slot, 1
        start = (torch.randperm(B, generator=gen) * slot).to(torch.int32)
        out = td.gqa_decode(q, k, v, start, used, 0.3, splits=splits, block_n=block_n)
        want = td.reference(q, k, v, start, used, 0.3)
        assert out.shape == q.shape and torch.isfinite(out).all()
        worst = max(worst, ((out - want).abs().max() / want.abs().max()).item())
    print(worst)
""")


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="needs the triton package")
def test_triton_decode_kernel_in_the_interpreter():
    src = Path(__file__).resolve().parents[2] / "src"
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": f"{src}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert float(proc.stdout.strip().splitlines()[-1]) < 1e-5
