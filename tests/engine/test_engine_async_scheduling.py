"""Async scheduling (plan and launch step n+1 before step n's tokens are back) gives exactly the
outputs of serial steps: same tokens, finish reasons and stop reasons, under every policy, with
preemption, prefix caching, EOS and length stops, seeded sampling, and a logprobs request that
forces serial steps while it lives; nothing leaks."""

from __future__ import annotations

import json
import random

import pytest

from cadence.core.config import CacheConfig, SchedulerConfig
from cadence.core.sampling_params import SamplingParams
from cadence.engine.config import EngineConfig, ModelLoadConfig
from cadence.engine.llm_engine import LLMEngine

VOCAB, EOS = 48, 7


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny")
    (folder / "config.json").write_text(json.dumps({
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 64, "intermediate_size": 128,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": VOCAB,
        "max_position_embeddings": 1024, "rope_theta": 10000.0, "rms_norm_eps": 1e-5, "eos_token_id": EOS}))
    return str(folder)


def make_engine(model_dir: str, policy: str, overlapped: bool, num_blocks: int, prefix: bool) -> LLMEngine:
    return LLMEngine(EngineConfig(
        load=ModelLoadConfig(model=model_dir, load_format="dummy", device="cpu", seed=3),
        scheduler=SchedulerConfig(policy=policy, max_num_seqs=8, max_num_batched_tokens=64, max_model_len=512,
                                  async_scheduling=overlapped),
        cache=CacheConfig(block_size=8, num_blocks=num_blocks, enable_prefix_caching=prefix)))


def workload(seed: int = 0) -> list[tuple[list[int], SamplingParams]]:
    rng = random.Random(seed)
    shared = [rng.randrange(VOCAB) for _ in range(20)]
    reqs = []
    for i in range(14):
        prompt = (shared if i % 3 == 0 else []) + [rng.randrange(VOCAB) for _ in range(rng.randint(3, 40))]
        kind = i % 4
        if kind == 0:
            params = SamplingParams(max_tokens=rng.randint(1, 30), temperature=0)
        elif kind == 1:
            params = SamplingParams(max_tokens=rng.randint(5, 40), temperature=0, ignore_eos=True)
        elif kind == 2:  # seeded sampling: the same draws whatever the batch
            params = SamplingParams(max_tokens=rng.randint(5, 30), temperature=0.9, top_p=0.9, seed=100 + i)
        else:
            params = SamplingParams(max_tokens=rng.randint(5, 30), temperature=0, min_tokens=3,
                                    stop_token_ids=[11])
        reqs.append((prompt, params))
    return reqs


def run(engine: LLMEngine, reqs, stagger: int = 2) -> dict[str, dict]:
    pending = list(enumerate(reqs))
    got: dict[str, dict] = {}
    step = 0
    while pending or engine.has_unfinished():
        if pending and step % stagger == 0:
            i, (prompt, params) = pending.pop(0)
            engine.add_request(f"r{i}", prompt, params)
        for o in engine.step():
            rec = got.setdefault(o.request_id, {"tokens": [], "finish": None})
            rec["tokens"] += o.new_token_ids
            assert rec["finish"] is None, "an output after the request finished"
            assert o.num_output_tokens == len(rec["tokens"])
            if o.finished:
                rec["finish"] = (o.finish_reason, o.stop_reason)
        step += 1
        assert step < 5000
    assert engine.kv.num_free_blocks == engine.kv.num_blocks  # every block back
    return got


@pytest.mark.parametrize("policy", ["sarathi", "vllm", "orca", "static"])
@pytest.mark.parametrize("num_blocks,prefix", [(400, True), (14, False)])
def test_overlapped_steps_give_the_serial_outputs(model_dir, policy, num_blocks, prefix):
    reqs = workload()
    serial = run(make_engine(model_dir, policy, False, num_blocks, prefix), reqs)
    engine = make_engine(model_dir, policy, True, num_blocks, prefix)
    overlapped = run(engine, reqs)
    assert overlapped == serial
    reasons = [r["finish"][0] for r in serial.values()]
    assert "stop" in reasons and "length" in reasons  # both kinds of stop were exercised
    if num_blocks == 14 and policy != "static":  # static admits only what fits to the end
        assert engine.scheduler.num_preemptions > 0


def test_a_logprobs_request_runs_serial_steps_while_it_lives(model_dir):
    reqs = workload(1)
    reqs[5] = (reqs[5][0], SamplingParams(max_tokens=12, temperature=0, logprobs=2))
    reqs[6] = (reqs[6][0], SamplingParams(max_tokens=12, temperature=0, presence_penalty=0.5))
    serial = run(make_engine(model_dir, "sarathi", False, 400, True), reqs)
    engine = make_engine(model_dir, "sarathi", True, 400, True)
    assert run(engine, reqs) == serial
    assert not engine._serial_ids and engine._in_flight is None


def test_abort_while_a_step_is_in_flight(model_dir):
    engine = make_engine(model_dir, "sarathi", True, 400, True)
    for i in range(4):
        engine.add_request(f"a{i}", [1, 2, 3, 4 + i], SamplingParams(max_tokens=50, temperature=0, ignore_eos=True))
    seen: dict[str, int] = {}
    for _ in range(6):
        for o in engine.step():
            seen[o.request_id] = seen.get(o.request_id, 0) + 1
    assert engine._in_flight is not None
    engine.abort(["a1", "a2"])
    after: dict[str, int] = {}
    while engine.has_unfinished():
        for o in engine.step():
            after[o.request_id] = after.get(o.request_id, 0) + 1
    assert "a1" not in after and "a2" not in after  # nothing more for the aborted ones
    assert seen["a0"] + after["a0"] == 50 and seen["a3"] + after["a3"] == 50
    assert engine.kv.num_free_blocks == engine.kv.num_blocks


def test_async_scheduling_refuses_tensor_parallelism(model_dir):
    from cadence.engine.config import ParallelConfig

    with pytest.raises(ValueError, match="tensor parallelism"):
        LLMEngine(EngineConfig(load=ModelLoadConfig(model=model_dir, load_format="dummy", device="cpu"),
                               scheduler=SchedulerConfig(async_scheduling=True),
                               parallel=ParallelConfig(tensor_parallel_size=2)))


def test_generated_blocks_become_cacheable_once_their_tokens_land(model_dir):
    """A follow-up turn (prompt = the first turn's prompt and answer) hits the prefix cache over the
    answer's blocks too: blocks filled while their last token was in flight get registered later."""
    cached = {}
    for overlapped in (False, True):
        engine = make_engine(model_dir, "sarathi", overlapped, 400, True)
        first = [3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8]
        engine.add_request("t1", first, SamplingParams(max_tokens=37, temperature=0, ignore_eos=True))
        answer = []
        while engine.has_unfinished():
            for o in engine.step():
                answer += o.new_token_ids
        engine.add_request("t2", first + answer + [1, 2, 3], SamplingParams(max_tokens=2, temperature=0))
        outs = []
        while engine.has_unfinished():
            outs += engine.step()
        cached[overlapped] = outs[-1].num_cached_tokens
    assert cached[True] == cached[False] == 48  # 6 full blocks of the 49 known tokens (12 + 37)


def test_a_preempted_request_is_not_readmitted_before_its_token_lands():
    from cadence.core.kv.kv_cache_manager import KVCacheManager
    from cadence.core.request import PLACEHOLDER, Request
    from cadence.core.scheduler import make_scheduler

    kv = KVCacheManager(16, 4, enable_prefix_caching=False)
    sched = make_scheduler(SchedulerConfig(max_num_batched_tokens=64), kv, 64)
    req = Request("a", [1, 2, 3], SamplingParams(max_tokens=8, temperature=0))
    sched.add_request(req)
    out = sched.schedule()
    sampling = sched.advance(out, 0.0)
    assert sampling == [req] and req.output_token_ids == [PLACEHOLDER] and req.num_tokens == 4
    sched._preempt(req, out)  # as a schedule() short of blocks would
    assert sched.schedule().is_empty()  # its token is in flight: no recompute yet
    assert sched.resolve(sampling, {"a": 42}, 1.0) == [(req, 42)]
    out = sched.schedule()
    assert [s.request for s in out.scheduled] == [req] and req.token_slice(0, 4) == [1, 2, 3, 42]
