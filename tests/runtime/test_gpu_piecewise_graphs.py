"""Piecewise CUDA graphs on the GPU (vattention): steps with prefill tokens replayed as L + 1 graph
pieces around eager attention match the eager forward on the same steps (bf16, relative error
<= 1e-2), the engine serves through them to the end, and no VMM page is left behind.
`python -m pytest -q tests/runtime -m gpu`."""

from __future__ import annotations

import json
import random

import pytest
import torch

from cadence.core.config import CacheConfig, SchedulerConfig
from cadence.core.sampling_params import SamplingParams
from cadence.engine.config import EngineConfig, ModelLoadConfig
from cadence.engine.llm_engine import LLMEngine

pytestmark = pytest.mark.gpu


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).norm() / b.float().norm())


def test_piecewise_graphs_match_eager_steps(tmp_path):
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    (tmp_path / "config.json").write_text(json.dumps({
        "architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3", "hidden_size": 512, "intermediate_size": 1024,
        "num_hidden_layers": 8, "num_attention_heads": 16, "num_key_value_heads": 8, "head_dim": 128,
        "vocab_size": 1000, "max_position_embeddings": 2048, "rms_norm_eps": 1e-6}))
    engine = LLMEngine(EngineConfig(
        load=ModelLoadConfig(model=str(tmp_path), load_format="dummy", attention_backend="vattention", seed=2,
                             piecewise_graphs=True),
        scheduler=SchedulerConfig(max_num_seqs=16, max_num_batched_tokens=256, max_model_len=1024),
        cache=CacheConfig(block_size=64)))  # 8 layers x 8 KV heads x 128 x K,V x bf16: 64 tokens a page
    runner = engine.runner
    pw = runner.piecewise
    assert pw is not None and all(len(b.pieces) == 9 for b in pw.buckets.values())
    errors: list[float] = []
    original = runner.run_batch

    def checked(batch, t0):
        if not batch.is_decode_only:
            eager = runner.model(batch.input_ids, batch.positions, runner.attention.bind(batch)).clone()
            pieces = pw.run(batch, runner.attention.bind(batch)).clone()
            errors.append(rel(pieces, eager))
        return original(batch, t0)

    runner.run_batch = checked
    rng = random.Random(0)
    for i in range(24):
        engine.add_request(f"r{i}", [rng.randrange(1000) for _ in range(rng.randint(3, 600))],
                           SamplingParams(max_tokens=rng.randint(1, 40), temperature=0, ignore_eos=True))
    steps = 0
    while engine.has_unfinished():
        engine.step()
        steps += 1
    assert len(errors) > 10 and max(errors) <= 1e-2, max(errors)
    assert pw.num_replays >= 2 * len(errors)  # each checked step ran the pieces twice (check + engine)
    att = runner.attention
    engine.shutdown()
    assert att.vm.stats.pages_alive == 0 and att.vm.stats.mappings_alive == 0
