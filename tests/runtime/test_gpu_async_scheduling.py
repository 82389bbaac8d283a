"""Async scheduling on the GPU (vattention, CUDA graphs): overlapped steps give the tokens of serial
steps on the same requests, and no VMM page or slot is left behind. `python -m pytest -q tests/runtime -m gpu`."""

from __future__ import annotations

import json
import random

import pytest
import torch

from cadence.core.config import CacheConfig, SchedulerConfig
from cadence.core.sampling_params import SamplingParams
from cadence.engine.config import EngineConfig, ModelLoadConfig
from cadence.engine.llm_engine import LLMEngine
from cadence.runtime.attention import decode, triton_decode
from cadence.runtime.attention import vattention as va

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    folder = tmp_path_factory.mktemp("gpu-tiny")
    # 8 layers x 8 KV heads x 128 dims x K,V x bf16 = 32 KiB a token: 64 tokens a 2 MiB page
    (folder / "config.json").write_text(json.dumps({
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 512, "intermediate_size": 1024,
        "num_hidden_layers": 8, "num_attention_heads": 16, "num_key_value_heads": 8, "head_dim": 128,
        "vocab_size": 1000, "max_position_embeddings": 2048, "rope_theta": 10000.0, "rms_norm_eps": 1e-6}))
    return str(folder)


def run(model_dir: str, overlapped: bool, num_blocks: int, kernel: str) -> tuple[dict[str, list[int]], LLMEngine]:
    engine = LLMEngine(EngineConfig(
        load=ModelLoadConfig(model=model_dir, load_format="dummy", attention_backend="vattention", seed=1,
                             decode_kernel=kernel),
        scheduler=SchedulerConfig(max_num_seqs=32, max_num_batched_tokens=512, max_model_len=1024,
                                  async_scheduling=overlapped),
        cache=CacheConfig(block_size=64, num_blocks=num_blocks)))
    assert engine.runner.attention.name == "vattention" and engine.runner.graphs is not None
    rng = random.Random(0)
    shared = [rng.randrange(1000) for _ in range(130)]
    pending = [((shared if i % 4 == 0 else []) + [rng.randrange(1000) for _ in range(rng.randint(5, 400))],
                SamplingParams(max_tokens=rng.randint(1, 120), temperature=0, ignore_eos=True)) for i in range(48)]
    got: dict[str, list[int]] = {}
    step = added = 0
    while pending or engine.has_unfinished():
        if pending and step % 3 == 0:
            prompt, params = pending.pop(0)
            engine.add_request(f"r{added}", prompt, params)
            added += 1
        for o in engine.step():
            got.setdefault(o.request_id, []).extend(o.new_token_ids)
        step += 1
    return got, engine


@pytest.mark.parametrize("num_blocks,kernel", [(400, "auto"), (24, "flash")])  # 24 blocks of 64 tokens: preemption
def test_overlapped_steps_match_serial_steps_on_the_gpu(model_dir, num_blocks, kernel, monkeypatch):
    # Overlapped steps may batch requests differently from serial ones around a preemption (a
    # preempted request waits for its in-flight token, and its recomputed prompt goes through the
    # prefill kernel where its tokens first went through the decode kernel). Token equality then needs
    # attention whose result for a request does not depend on its batch or on the step kind: flash
    # for every step, grouped heads packed in decodes (one tile per request and KV head, the same
    # arithmetic as its varlen prefill; its single-row route splits contexts by batch size), every
    # mixed step's decodes in the varlen call. With the Triton decode kernel the recomputed tokens'
    # bf16 rounding differs from their first pass and flips near-ties of these random weights (seen
    # on the H200), so the preemption case runs flash; the other case runs the default kernel with
    # splits off (their count follows the row count).
    monkeypatch.setattr(triton_decode, "num_splits", lambda *args: 1)
    monkeypatch.setattr(decode, "PACKED_MIN_TILES", 0)
    monkeypatch.setitem(va.SMALL_MODEL_SPLIT_MIN_CONTEXT, "triton", 0)
    monkeypatch.setitem(va.SMALL_MODEL_SPLIT_MIN_CONTEXT, "flash", 1 << 30)
    serial, e1 = run(model_dir, False, num_blocks, kernel)
    e1.shutdown()
    overlapped, e2 = run(model_dir, True, num_blocks, kernel)
    assert overlapped == serial
    assert e2.kv.num_free_blocks == e2.kv.num_blocks
    att = e2.runner.attention
    e2.shutdown()
    assert att.vm.stats.pages_alive == 0 and att.vm.stats.mappings_alive == 0
