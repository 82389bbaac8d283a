"""LLMEngine behaviour on the built-in model: limits, abort, stops, seeds, logprobs, preemption."""

from __future__ import annotations

import pytest

from cadence.core.sampling_params import SamplingParams
from cadence.engine.llm import LLM

PROMPT = "The capital of France is"


@pytest.fixture(scope="module")
def llm():
    return LLM(dtype="float32", max_model_len=256)


def run_all(engine):
    outs = {}
    while engine.has_unfinished():
        for o in engine.step():
            outs.setdefault(o.request_id, []).append(o)
    return outs


def test_too_long_prompt_is_refused_and_engine_keeps_serving(llm):
    engine = llm.engine
    with pytest.raises(ValueError, match="context of 256"):
        engine.add_request("long", list(range(300)), SamplingParams(max_tokens=4))
    with pytest.raises(ValueError, match="beyond this model's context"):
        engine.add_request("long2", list(range(250)), SamplingParams(max_tokens=10))
    with pytest.raises(ValueError, match="token ids must be integers"):
        engine.add_request("bad-ids", [1, -5], SamplingParams(max_tokens=1))
    res = llm.generate(PROMPT, SamplingParams(max_tokens=4, temperature=0))
    assert len(res[0].outputs[0].token_ids) == 4
    engine.kv.check_all_free()


def test_abort_frees_blocks(llm):
    engine = llm.engine
    engine.add_request("a", PROMPT, SamplingParams(max_tokens=50, temperature=0))
    engine.add_request("b", PROMPT + " a city", SamplingParams(max_tokens=5, temperature=0))
    engine.step()
    engine.step()
    assert engine.kv.num_free_blocks < engine.kv.num_blocks
    engine.abort("a")
    outs = run_all(engine)
    assert "a" not in outs or not outs["a"][-1].finished
    assert outs["b"][-1].finished and outs["b"][-1].finish_reason == "length"
    engine.kv.check_all_free()


def test_stop_string_cuts_text(llm):
    full = llm.generate(PROMPT, SamplingParams(max_tokens=12, temperature=0))[0].outputs[0].text
    word = full.split()[1] if len(full.split()) > 1 else full.split()[0]
    res = llm.generate(PROMPT, SamplingParams(max_tokens=12, temperature=0, stop=[word]))[0].outputs[0]
    assert res.finish_reason == "stop" and res.stop_reason == word
    assert word not in res.text and full.startswith(res.text)
    res = llm.generate(PROMPT, SamplingParams(max_tokens=12, temperature=0, stop=[word],
                                              include_stop_str_in_output=True))[0].outputs[0]
    assert res.text.endswith(word)


def test_seeded_sampling_is_reproducible_whatever_the_batch(llm):
    params = SamplingParams(max_tokens=8, temperature=1.0, top_p=0.9, seed=1234)
    alone = llm.generate(PROMPT, params)[0].outputs[0].token_ids
    others = [SamplingParams(max_tokens=8, temperature=1.0)] * 3
    batched = llm.generate(["Hello", PROMPT, "Once upon a time", "1, 2, 3,"], [others[0], params, *others[1:]])
    assert batched[1].outputs[0].token_ids == alone
    other_seed = llm.generate(PROMPT, SamplingParams(max_tokens=8, temperature=1.0, top_p=0.9, seed=99))
    assert other_seed[0].outputs[0].token_ids != alone


def test_logprobs(llm):
    res = llm.generate(PROMPT, SamplingParams(max_tokens=3, temperature=0, logprobs=4))[0].outputs[0]
    assert len(res.logprobs) == 3
    for lp, tok in zip(res.logprobs, res.token_ids, strict=True):
        assert lp.token_id == tok and lp.logprob <= 0
        assert len(lp.top) == 4 and lp.top[0][0] == tok  # greedy picks the likeliest
        values = [v for _, v in lp.top]
        assert values == sorted(values, reverse=True)


def test_min_tokens_and_n(llm):
    res = llm.generate(PROMPT, SamplingParams(max_tokens=20, min_tokens=20, temperature=0))[0].outputs[0]
    assert len(res.token_ids) == 20
    res = llm.generate(PROMPT, SamplingParams(max_tokens=8, temperature=1.0, n=3, seed=5))[0]
    assert len(res.outputs) == 3 and len({tuple(c.token_ids) for c in res.outputs}) > 1


def test_prefix_cache_hit_gives_the_same_tokens(llm):
    prompt = "Here is a long shared system prompt that many requests start with. " * 4 + "Question: hi?"
    first = llm.generate(prompt, SamplingParams(max_tokens=8, temperature=0))[0].outputs[0].token_ids
    engine = llm.engine
    engine.add_request("again", prompt, SamplingParams(max_tokens=8, temperature=0))
    outs = run_all(engine)["again"]
    assert outs[-1].num_cached_tokens >= 32
    assert [t for o in outs for t in o.new_token_ids] == first


def test_preemption_recomputes_without_changing_outputs(llm):
    prompts = [f"Story number {i}: once upon a time, in a land far away," for i in range(6)]
    params = SamplingParams(max_tokens=24, min_tokens=24, temperature=0)
    roomy = llm.generate(prompts, params)
    # 6 requests of ~40 tokens need 18 blocks of 16: a pool of 12 forces recompute preemptions
    small = LLM(dtype="float32", max_model_len=128, num_blocks=12, block_size=16, enable_prefix_caching=False)
    tight = small.generate(prompts, params)
    assert small.engine.scheduler.num_preemptions > 0
    assert [r.outputs[0].token_ids for r in tight] == [r.outputs[0].token_ids for r in roomy]
    small.engine.kv.check_all_free()


@pytest.mark.parametrize("kwargs, param", [
    ({"top_p": 0.0}, "top_p"), ({"temperature": -1.0}, "temperature"), ({"max_tokens": 0}, "max_tokens"),
    ({"stop": ["x"] * 17}, "stop"), ({"logprobs": 50}, "logprobs"), ({"min_tokens": 5, "max_tokens": 2}, "min_tokens"),
])
def test_sampling_params_validation(kwargs, param):
    with pytest.raises(ValueError) as info:
        SamplingParams(**kwargs)
    assert info.value.param == param
