"""The official `openai` client against a real server: completions and chat, streaming and not."""

from __future__ import annotations

import httpx
import openai
import pytest

MODEL = "SmolLM2-135M-Instruct"


@pytest.fixture(scope="module")
def client(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.v1, api_key="unused", max_retries=0, timeout=60)


def test_models_lists_the_served_model(client: openai.OpenAI) -> None:
    models = client.models.list()
    assert [m.id for m in models.data] == [MODEL]
    assert client.models.retrieve(MODEL).id == MODEL


def test_completion_greedy_with_usage(client: openai.OpenAI) -> None:
    r = client.completions.create(model=MODEL, prompt="The capital of France is", max_tokens=8, temperature=0)
    assert r.object == "text_completion" and r.model == MODEL
    assert len(r.choices) == 1 and r.choices[0].finish_reason == "length"
    assert "Paris" in r.choices[0].text
    assert r.usage.completion_tokens == 8 and r.usage.prompt_tokens > 0
    assert r.usage.total_tokens == r.usage.prompt_tokens + 8
    again = client.completions.create(model=MODEL, prompt="The capital of France is", max_tokens=8, temperature=0)
    assert again.choices[0].text == r.choices[0].text


def test_completion_stream_matches_non_stream(client: openai.OpenAI) -> None:
    kwargs = dict(model=MODEL, prompt="Once upon a time", max_tokens=12, temperature=0)
    whole = client.completions.create(**kwargs).choices[0].text
    chunks = list(client.completions.create(**kwargs, stream=True, stream_options={"include_usage": True}))
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    assert text == whole
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 12
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"


def test_completion_token_ids_prompt_and_stop(client: openai.OpenAI) -> None:
    r = client.completions.create(model=MODEL, prompt=[504, 3575, 282, 4649, 314], max_tokens=30, temperature=0,
                                  stop=["."])
    assert r.choices[0].finish_reason in ("stop", "length")
    assert "." not in r.choices[0].text


def test_completion_n_and_seed(client: openai.OpenAI) -> None:
    kwargs = dict(model=MODEL, prompt="My favourite colour is", max_tokens=8, temperature=1.0, n=3, seed=7)
    a = client.completions.create(**kwargs)
    b = client.completions.create(**kwargs)
    assert sorted(c.index for c in a.choices) == [0, 1, 2]
    assert [c.text for c in a.choices] == [c.text for c in b.choices]  # reproducible
    assert len({c.text for c in a.choices}) > 1  # distinct seeds per sequence
    assert a.usage.completion_tokens == sum(1 for _ in range(3)) * 8


def test_completion_logprobs(client: openai.OpenAI) -> None:
    r = client.completions.create(model=MODEL, prompt="1, 2, 3,", max_tokens=4, temperature=0, logprobs=3)
    lp = r.choices[0].logprobs
    assert len(lp.tokens) == 4 and len(lp.token_logprobs) == 4
    assert all(v <= 0 for v in lp.token_logprobs)
    assert all(len(top) == 3 for top in lp.top_logprobs)
    assert "".join(lp.tokens) == r.choices[0].text


def test_chat_non_stream(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Say hello."}],
                                       max_tokens=10, temperature=0, user="tester")
    assert r.object == "chat.completion"
    msg = r.choices[0].message
    assert msg.role == "assistant" and msg.content
    assert r.usage.completion_tokens <= 10


def test_chat_stream_with_usage_and_extensions(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model=MODEL, messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Count."}],
        max_completion_tokens=10, stream=True, stream_options={"include_usage": True}, temperature=0.7, top_p=0.9,
        seed=1, presence_penalty=0.5, frequency_penalty=0.5,
        extra_body={"top_k": 20, "min_p": 0.05, "min_tokens": 10, "ignore_eos": True},
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text
    assert chunks[-1].usage.completion_tokens == 10  # min_tokens + ignore_eos: exactly max
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"


def test_chat_logprobs(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Hi"}], max_tokens=3,
                                       temperature=0, logprobs=True, top_logprobs=2)
    content = r.choices[0].logprobs.content
    assert len(content) == r.usage.completion_tokens
    assert all(len(e.top_logprobs) == 2 and e.logprob <= 0 for e in content)


def test_unknown_harmless_fields_are_ignored(server) -> None:
    r = httpx.post(server.v1 + "/completions", json={"prompt": "hi", "max_tokens": 2, "frobnicate": {"x": 1},
                                                      "metadata": {"k": "v"}, "store": False}, timeout=60)
    assert r.status_code == 200, r.text
    assert r.headers["x-request-id"] == r.json()["id"]


def test_raw_sse_framing(server) -> None:
    body = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4, "stream": True}
    with httpx.stream("POST", server.v1 + "/chat/completions", json=body, timeout=60) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in r.iter_lines() if line]
    assert all(line.startswith("data: ") for line in lines)
    assert lines[-1] == "data: [DONE]"


def test_health_and_metrics(server) -> None:
    assert httpx.get(server.url + "/health").json() == {"status": "ok"}
    m = server.metrics()
    for name in ("cadence_num_requests_waiting", "cadence_num_requests_running", "cadence_kv_cache_usage_ratio",
                 "cadence_num_preemptions_total", "cadence_prompt_tokens_total", "cadence_generation_tokens_total",
                 "cadence_time_to_first_token_seconds_count", "cadence_time_between_tokens_seconds_count",
                 "cadence_e2e_request_latency_seconds_count"):
        assert name in m
    assert m["cadence_generation_tokens_total"] > 0


def test_usage_reports_scheduling_delay_and_bench_reads_it(server) -> None:
    """The Cadence extension `usage.scheduling_delay_s` (receipt to first scheduled step) lies
    between 0 and the TTFT, and `cadence bench` turns it into a measured scheduling delay."""
    import json

    from cadence.bench.client import EndpointConfig, Prompt
    from cadence.bench.runner import run_workload
    from cadence.core.metrics import scheduling_delay, ttft
    from cadence.core.workload import RequestSpec

    body = {"prompt": "Hello there", "max_tokens": 3, "stream": True, "stream_options": {"include_usage": True}}
    with httpx.stream("POST", server.v1 + "/completions", json=body, timeout=60) as r:
        chunks = [json.loads(x[6:]) for x in r.iter_lines() if x.startswith("data: {")]
    delay = chunks[-1]["usage"]["scheduling_delay_s"]
    assert 0 <= delay < 5

    cfg = EndpointConfig(base_url=server.url, model=MODEL)
    specs = [RequestSpec(request_id=i, prompt_tokens=4, output_tokens=4, arrival_time=0.02 * i) for i in range(4)]
    prompts = [Prompt(text="Tell me a story", tokens=4) for _ in specs]
    result = run_workload(cfg, specs, prompts)
    for rec in result.records:
        assert rec.ok, rec.error_detail
        assert 0 <= scheduling_delay(rec) <= ttft(rec)
