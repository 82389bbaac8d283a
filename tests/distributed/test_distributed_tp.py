"""Tensor parallelism on CPU with gloo: greedy tokens and logits of TP=2 (and TP=4 where KV heads
are replicated) match one process; sizes a model cannot be split into are refused; a failed worker
is a clear error in the driver, and workers exit cleanly on shutdown."""

from __future__ import annotations

import pickle
import time
from pathlib import Path

import pytest
import torch

from cadence.core.config import CacheConfig, SchedulerConfig
from cadence.core.sampling_params import SamplingParams
from cadence.distributed.shard import TensorParallelError, make_shard, split
from cadence.engine.config import EngineConfig, ModelLoadConfig, ParallelConfig
from cadence.engine.llm import LLM
from cadence.engine.llm_engine import LLMEngine
from cadence.models.config import ModelConfig
from cadence.models.default_model import default_model_path
from tiny_models import make_checkpoint

QUESTIONS = ["What is the capital of France?", "Explain in one sentence what a hash table is.", "hi",
             "Give me a short recipe for pancakes, with the quantities of flour, milk and eggs."]


def _engine(model: str, tp: int, **cache: int) -> LLMEngine:
    return LLMEngine(EngineConfig(
        load=ModelLoadConfig(model=model, dtype="float32"),
        scheduler=SchedulerConfig(max_num_batched_tokens=24),  # chunked prefills mixed with decodes
        cache=CacheConfig(num_blocks=cache.get("num_blocks", 64)),
        parallel=ParallelConfig(tensor_parallel_size=tp, distributed_timeout=60.0)))


def test_default_model_greedy_tp2_matches_one_process():
    """SmolLM2-135M: 9 query heads, 3 KV heads, dealt 6+3 / 2+1 over the two ranks."""
    params = SamplingParams(max_tokens=24, min_tokens=24, temperature=0.0)
    results = {}
    for tp in (1, 2):
        llm = LLM(dtype="float32", tensor_parallel_size=tp, max_num_batched_tokens=48, num_blocks=256)
        tok = llm.tokenizer
        prompts = [tok.apply_chat_template([{"role": "user", "content": q}]) for q in QUESTIONS]
        try:
            results[tp] = [r.outputs[0].token_ids for r in llm.generate(prompts, params)]
            llm.engine.kv.check_all_free()
        finally:
            llm.engine.shutdown()
    assert results[2] == results[1]


def _logits_of_a_run(model: str, tp: int) -> list[torch.Tensor]:
    engine = _engine(model, tp)
    seen: list[torch.Tensor] = []
    run_batch = engine.runner.run_batch

    def recording(batch, t0):
        logits = run_batch(batch, t0)
        if logits is not None:
            seen.append(logits.clone())
        return logits

    engine.runner.run_batch = recording  # type: ignore[method-assign]
    params = SamplingParams(max_tokens=6, temperature=0.0, ignore_eos=True)
    try:
        for i, n in enumerate((5, 30, 61)):
            engine.add_request(str(i), [(7 * i + 3 * j) % 256 for j in range(n)], params)
        while engine.has_unfinished():
            engine.step()
    finally:
        engine.shutdown()
    return seen


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tp")
    out = {}
    for arch in ("llama", "qwen2", "qwen3"):
        make_checkpoint(arch, root / arch)
        out[arch] = root / arch
    return out


@pytest.mark.parametrize(("arch", "tp"), [("llama", 2), ("qwen2", 2), ("qwen3", 2), ("llama", 4)])
def test_tiny_checkpoint_logits_match_one_process(checkpoints, arch, tp):
    """llama: plain; qwen2: qkv bias and tied embeddings; qwen3: q/k norm. 4 heads and 2 KV heads,
    so TP=4 replicates each KV head on two ranks."""
    want = _logits_of_a_run(str(checkpoints[arch]), 1)
    got = _logits_of_a_run(str(checkpoints[arch]), tp)
    assert len(got) == len(want) > 0
    for a, b in zip(got, want, strict=True):
        assert a.shape == b.shape
        rel = ((a - b).abs().max() / b.abs().max()).item()
        assert rel <= 1e-4, f"{arch} TP={tp}: relative logit error {rel:.2e}"


def test_head_split_plans():
    smol = ModelConfig.from_path(default_model_path())
    assert (smol.num_heads, smol.num_kv_heads) == (9, 3)
    r0, r1 = make_shard(smol, 2, 0), make_shard(smol, 2, 1)
    assert (r0.q_heads, r0.kv_heads, r1.q_heads, r1.kv_heads) == ((0, 6), (0, 2), (6, 3), (2, 1))
    assert r0.intermediate[1] + r1.intermediate[1] == smol.intermediate_size
    assert r0.vocab == (0, smol.vocab_size // 2)
    shape = ModelConfig.from_dict({"architectures": ["LlamaForCausalLM"], "hidden_size": 64, "intermediate_size": 100,
                                   "num_hidden_layers": 1, "num_attention_heads": 8, "num_key_value_heads": 2,
                                   "vocab_size": 101})
    plans = [make_shard(shape, 4, r) for r in range(4)]
    assert [p.kv_heads for p in plans] == [(0, 1), (0, 1), (1, 1), (1, 1)]  # replicated KV heads
    assert [p.q_heads for p in plans] == [(0, 2), (2, 2), (4, 2), (6, 2)]
    assert [p.vocab for p in plans] == [(0, 26), (26, 26), (52, 26), (78, 26)]  # last rank padded
    assert [split(10, 4, i) for i in range(4)] == [(0, 3), (3, 3), (6, 2), (8, 2)]


def test_bad_sizes_refused_before_any_worker_starts():
    smol = ModelConfig.from_path(default_model_path())
    with pytest.raises(TensorParallelError, match="tensor_parallel_size 4 does not fit.*3 KV heads.*work here: 1, 2, 3"):
        make_shard(smol, 4, 0)
    with pytest.raises(TensorParallelError, match="tensor_parallel_size 6"):
        make_shard(smol, 6, 0)  # a multiple of 3 KV heads, but 9 query heads do not split in 6
    with pytest.raises(ValueError, match="tensor_parallel_size must be >= 1"):
        ParallelConfig(tensor_parallel_size=0)
    t = time.perf_counter()
    with pytest.raises(TensorParallelError, match="does not fit"):
        LLM(dtype="float32", tensor_parallel_size=4)
    assert time.perf_counter() - t < 30


def test_worker_failure_is_a_clear_error_and_shutdown_is_clean(checkpoints):
    engine = _engine(str(checkpoints["llama"]), 2)
    params = SamplingParams(max_tokens=4, temperature=0.0, ignore_eos=True)
    engine.add_request("a", list(range(10)), params)
    while engine.has_unfinished():
        engine.step()
    proc = engine.tp.procs[0]
    engine.tp.conns[0].send_bytes(pickle.dumps("not a step plan"))  # the worker's step raises
    engine.add_request("b", list(range(10)), params)
    t = time.perf_counter()
    with pytest.raises(TensorParallelError, match=r"(?s)rank 1 failed:.*AttributeError"):
        for _ in range(3):
            engine.step()
    assert time.perf_counter() - t < 20
    engine.shutdown()
    proc.join(5)
    assert proc.exitcode == 1

    engine = _engine(str(checkpoints["llama"]), 2)  # a worker killed between steps
    engine.tp.procs[0].kill()
    engine.tp.procs[0].join(5)
    engine.add_request("c", list(range(10)), params)
    with pytest.raises(TensorParallelError, match="rank 1 exited"):
        engine.step()
    engine.shutdown()

    engine = _engine(str(checkpoints["llama"]), 2)
    procs = list(engine.tp.procs)
    engine.shutdown()
    assert [p.exitcode for p in procs] == [0]


def test_a_hung_worker_times_out_instead_of_hanging(checkpoints):
    import os
    import signal

    engine = LLMEngine(EngineConfig(load=ModelLoadConfig(model=str(checkpoints["llama"]), dtype="float32"),
                                    cache=CacheConfig(num_blocks=64),
                                    parallel=ParallelConfig(tensor_parallel_size=2, distributed_timeout=8.0)))
    proc = engine.tp.procs[0]
    os.kill(proc.pid, signal.SIGSTOP)  # alive, but never joins the next collective
    try:
        engine.add_request("a", list(range(10)), SamplingParams(max_tokens=2))
        t = time.perf_counter()
        with pytest.raises(TensorParallelError, match="collective failed"):
            engine.step()
        assert time.perf_counter() - t < 30
    finally:
        proc.kill()
        engine.shutdown()
