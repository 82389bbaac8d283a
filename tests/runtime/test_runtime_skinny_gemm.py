"""The weight-streaming matmul's logic on the CPU, through Triton's interpreter (TRITON_INTERPRET=1,
set before Triton is imported, hence a fresh process; float32, which the interpreter computes
exactly enough): row counts from 1 to the limit, N and K that do and do not divide the tiles,
split-K with empty splits, against x @ W^T. Then the engine-side switch: which rows go where, and
that CPU models never take the kernel. The GPU suite checks the compiled kernel in bf16
(tests/runtime/test_gpu_skinny_gemm.py)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from cadence.models.layers import Linear, stream_small_batches
from cadence.runtime import skinny_gemm

SCRIPT = textwrap.dedent("""
    import torch
    from cadence.runtime.skinny_gemm import TileConfig, pick_config, skinny_mm

    gen = torch.Generator().manual_seed(0)
    worst = 0.0
    for m, n, k, c in [(1, 96, 256, TileConfig(64, 64, 1)), (5, 130, 384, TileConfig(64, 64, 2)),
                       (17, 64, 200, TileConfig(32, 64, 2)), (64, 128, 512, TileConfig(64, 128, 4)),
                       (3, 70, 130, None), (2, 32, 64, TileConfig(32, 16, 8))]:  # the last: empty splits
        x = torch.randn(m, k, generator=gen)
        w = torch.randn(n, k, generator=gen)
        y = skinny_mm(x, w, c, num_sms=2)
        want = x @ w.T
        assert y.shape == (m, n) and y.dtype == x.dtype
        worst = max(worst, ((y - want).abs().max() / want.abs().max()).item())
    assert pick_config(1, 6144, 4096, 132).split_k == 1 or 6144 // 64 * pick_config(1, 6144, 4096, 132).split_k >= 264
    print(worst)
""")


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="needs the triton package")
def test_skinny_mm_in_the_interpreter():
    src = Path(__file__).resolve().parents[2] / "src"
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": f"{src}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert float(proc.stdout.strip().splitlines()[-1]) < 1e-5


def test_pick_config_fills_the_gpu_with_split_k_only_when_columns_are_few():
    wide = skinny_gemm.pick_config(16, 28672, 4096, 132)  # 448 column tiles: no split
    assert wide.split_k == 1
    narrow = skinny_gemm.pick_config(16, 4096, 14336, 132)  # 64 column tiles: K split 8 ways (512 programs)
    assert narrow.split_k == 8 and 14336 % (narrow.block_k * narrow.split_k) == 0
    odd = skinny_gemm.pick_config(16, 4096, 1030, 132)  # K that no split divides stays whole
    assert odd.split_k == 1


def test_stream_rows_by_kind_and_device():
    assert skinny_gemm.stream_rows("cublas", torch.device("cuda")) == 0
    assert skinny_gemm.stream_rows("auto", torch.device("cpu")) == 0
    assert skinny_gemm.stream_rows("triton", torch.device("cpu")) == 0
    with pytest.raises(ValueError, match="unknown decode gemm"):
        skinny_gemm.stream_rows("cutlass", torch.device("cpu"))


def test_cpu_linear_ignores_stream_rows():
    lin = Linear(8, 4, bias=False)
    holder = torch.nn.Sequential(lin, torch.nn.Linear(4, 4))
    assert stream_small_batches(holder, 64) == 1 and lin.stream_rows == 64  # only our Linear
    x = torch.randn(3, 8)
    assert torch.equal(lin(x), torch.nn.functional.linear(x, lin.weight))
