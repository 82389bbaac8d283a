"""Piecewise graphs for steps with prefill tokens, with the pieces run without capture (CPU): the
forward cut at every attention call, attention run by the backend on the real rows of static
buffers, padded rows in between. Tokens must equal the plain forward's in every kind of step
(chunked prefills, mixed, decode-only, prefix hits), and each step must go through the pieces."""

from __future__ import annotations

import json
import random

import pytest
import torch

from cadence.core.config import CacheConfig, SchedulerConfig
from cadence.core.graph_buckets import piecewise_token_buckets as token_buckets
from cadence.core.sampling_params import SamplingParams
from cadence.engine.config import EngineConfig, ModelLoadConfig
from cadence.engine.llm_engine import LLMEngine
from cadence.runtime.piecewise_graphs import PiecewiseGraphs

VOCAB = 64


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-qwen3")
    (folder / "config.json").write_text(json.dumps({
        "architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3", "hidden_size": 64, "intermediate_size": 128,
        "num_hidden_layers": 3, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16,
        "vocab_size": VOCAB, "max_position_embeddings": 1024, "rms_norm_eps": 1e-6}))
    return str(folder)


def run(model_dir: str, piecewise: bool) -> tuple[dict[str, list[int]], LLMEngine]:
    engine = LLMEngine(EngineConfig(
        load=ModelLoadConfig(model=model_dir, load_format="dummy", device="cpu", dtype="float32", seed=4),
        scheduler=SchedulerConfig(max_num_seqs=6, max_num_batched_tokens=48, max_model_len=512),
        cache=CacheConfig(block_size=8, num_blocks=200, enable_prefix_caching=True)))
    runner = engine.runner
    if piecewise:
        runner.piecewise = PiecewiseGraphs(runner.model, 48, torch.float32, torch.device("cpu"), capture=False)
    rng = random.Random(1)
    shared = [rng.randrange(VOCAB) for _ in range(24)]
    pending = [((shared if i % 3 == 0 else []) + [rng.randrange(VOCAB) for _ in range(rng.randint(2, 70))],
                SamplingParams(max_tokens=rng.randint(1, 25), temperature=0, ignore_eos=True)) for i in range(12)]
    got: dict[str, list[int]] = {}
    step = 0
    while pending or engine.has_unfinished():
        if pending and step % 2 == 0:
            prompt, params = pending.pop(0)
            engine.add_request(f"r{step}", prompt, params)
        before = (runner.piecewise.num_replays if piecewise else 0, runner.num_steps)
        for o in engine.step():
            got.setdefault(o.request_id, []).extend(o.new_token_ids)
        if piecewise:  # every forward went through the pieces
            assert runner.piecewise.num_replays - before[0] == runner.num_steps - before[1]
        step += 1
    return got, engine


def test_piecewise_pieces_give_the_plain_forwards_tokens(model_dir):
    plain, e1 = run(model_dir, False)
    pieces, e2 = run(model_dir, True)
    assert pieces == plain and len(plain) == 12
    assert e2.runner.piecewise.num_replays == e2.runner.num_steps > 20
    e1.shutdown()
    e2.shutdown()


def test_piecewise_hidden_states_equal_the_forward_with_padding(model_dir):
    """One mixed step by hand: hidden states of the pieces (bucket 16 for 11 tokens: 5 padded rows)
    against the plain forward on the same step (equal to rounding: the GEMMs see 16 rows, not 11)."""
    engine = LLMEngine(EngineConfig(
        load=ModelLoadConfig(model=model_dir, load_format="dummy", device="cpu", dtype="float32", seed=4),
        scheduler=SchedulerConfig(max_num_seqs=4, max_num_batched_tokens=11, max_model_len=256),
        cache=CacheConfig(block_size=8, num_blocks=64, enable_prefix_caching=False)))
    runner = engine.runner
    pw = PiecewiseGraphs(runner.model, 16, torch.float32, torch.device("cpu"), capture=False)
    assert token_buckets(16) == [16] and token_buckets(48) == [16, 32, 48]
    engine.add_request("a", list(range(1, 6)), SamplingParams(max_tokens=4, temperature=0))
    engine.step()  # a's prefill; its next step decodes
    engine.add_request("b", list(range(10, 40)), SamplingParams(max_tokens=2, temperature=0))
    captured = {}
    original = runner.run_batch

    def spy(batch, t0):
        attn = runner.attention.bind(batch)
        captured["plain"] = runner.model(batch.input_ids, batch.positions, attn).clone()
        captured["pieces"] = pw.run(batch, runner.attention.bind(batch)).clone()
        captured["n"] = batch.num_tokens
        return original(batch, t0)

    runner.run_batch = spy
    engine.step()  # a decodes, b's first 10-token chunk: 11 tokens
    assert captured["n"] == 11
    assert captured["pieces"].shape == captured["plain"].shape == (11, 64)
    torch.testing.assert_close(captured["pieces"], captured["plain"], rtol=1e-5, atol=1e-5)
    engine.shutdown()
