"""Every bad input gets its status and an OpenAI-style error body, and harms nobody else."""

from __future__ import annotations

import json
import threading

import httpx
import pytest

CHAT = "/chat/completions"
CMPL = "/completions"
USER = [{"role": "user", "content": "hi"}]
LONG = "hello " * 600  # beyond the test server's 512-token context

# (name, path, body (dict, or raw str), status, param, code)
CASES = [
    ("malformed json", CMPL, '{"prompt": "hi",', 400, None, "invalid_json"),
    ("empty body", CMPL, "", 400, None, "invalid_json"),
    ("body not an object", CMPL, "[1, 2]", 400, None, None),
    ("nan temperature", CMPL, '{"prompt": "hi", "temperature": NaN}', 400, "temperature", None),
    ("missing prompt", CMPL, {"max_tokens": 4}, 400, "prompt", "missing_required_parameter"),
    ("missing messages", CHAT, {"max_tokens": 4}, 400, "messages", "missing_required_parameter"),
    ("missing role", CHAT, {"messages": [{"content": "hi"}]}, 400, "messages.0.role", "missing_required_parameter"),
    ("unknown role", CHAT, {"messages": [{"role": "wizard", "content": "hi"}]}, 400, "messages.0.role", None),
    ("empty messages", CHAT, {"messages": []}, 400, "messages", None),
    ("messages not a list", CHAT, {"messages": "hi"}, 400, "messages", None),
    ("max_tokens as string", CMPL, {"prompt": "hi", "max_tokens": "5"}, 400, "max_tokens", "invalid_type"),
    ("temperature as string", CMPL, {"prompt": "hi", "temperature": "hot"}, 400, "temperature", "invalid_type"),
    ("stream as string", CMPL, {"prompt": "hi", "stream": "yes"}, 400, "stream", "invalid_type"),
    ("seed as float", CMPL, {"prompt": "hi", "seed": 1.5}, 400, "seed", None),
    ("max_tokens zero", CMPL, {"prompt": "hi", "max_tokens": 0}, 400, "max_tokens", None),
    ("max_tokens negative", CHAT, {"messages": USER, "max_tokens": -3}, 400, "max_tokens", None),
    ("max_tokens beyond context", CMPL, {"prompt": "hi", "max_tokens": 100000}, 400, "max_tokens",
     "context_length_exceeded"),
    ("max_completion_tokens beyond context", CHAT, {"messages": USER, "max_completion_tokens": 10**30}, 400,
     "max_completion_tokens", "context_length_exceeded"),
    ("prompt beyond context", CMPL, {"prompt": LONG, "max_tokens": 1}, 400, "prompt", "context_length_exceeded"),
    ("chat beyond context", CHAT, {"messages": [{"role": "user", "content": LONG}]}, 400, "messages",
     "context_length_exceeded"),
    ("negative temperature", CMPL, {"prompt": "hi", "temperature": -0.5}, 400, "temperature", None),
    ("top_p zero", CMPL, {"prompt": "hi", "top_p": 0}, 400, "top_p", None),
    ("top_p above one", CHAT, {"messages": USER, "top_p": 1.5}, 400, "top_p", None),
    ("top_k negative", CMPL, {"prompt": "hi", "top_k": -5}, 400, "top_k", None),
    ("presence_penalty too big", CMPL, {"prompt": "hi", "presence_penalty": 5}, 400, "presence_penalty", None),
    ("min_tokens above max_tokens", CMPL, {"prompt": "hi", "max_tokens": 2, "min_tokens": 5}, 400, "min_tokens", None),
    ("unknown model", CMPL, {"model": "gpt-17", "prompt": "hi"}, 404, "model", "model_not_found"),
    ("unknown model chat", CHAT, {"model": "gpt-17", "messages": USER}, 404, "model", "model_not_found"),
    ("too many stop strings", CMPL, {"prompt": "hi", "stop": [f"s{i}" for i in range(17)]}, 400, "stop", None),
    ("empty stop string", CMPL, {"prompt": "hi", "stop": [""]}, 400, "stop", None),
    ("n too large", CMPL, {"prompt": "hi", "n": 1000}, 400, "n", None),
    ("n zero", CHAT, {"messages": USER, "n": 0}, 400, "n", None),
    ("logprobs too many", CMPL, {"prompt": "hi", "logprobs": 50}, 400, "logprobs", None),
    ("top_logprobs too many", CHAT, {"messages": USER, "logprobs": True, "top_logprobs": 50}, 400,
     "top_logprobs", None),
    ("top_logprobs without logprobs", CHAT, {"messages": USER, "top_logprobs": 2}, 400, "top_logprobs", None),
    ("empty prompt", CMPL, {"prompt": ""}, 400, "prompt", None),
    ("empty token prompt", CMPL, {"prompt": []}, 400, "prompt", None),
    ("token id beyond vocabulary", CMPL, {"prompt": [10**9]}, 400, "prompt", None),
    ("negative token id", CMPL, {"prompt": [-1, 5]}, 400, "prompt", None),
    ("stop token beyond vocabulary", CMPL, {"prompt": "hi", "stop_token_ids": [10**9]}, 400, "stop_token_ids",
     None),
    ("batched prompts", CMPL, {"prompt": ["a", "b"]}, 400, "prompt", "unsupported_parameter"),
    ("logit_bias", CMPL, {"prompt": "hi", "logit_bias": {"50256": -100}}, 400, "logit_bias",
     "unsupported_parameter"),
    ("echo", CMPL, {"prompt": "hi", "echo": True}, 400, "echo", "unsupported_parameter"),
    ("suffix", CMPL, {"prompt": "hi", "suffix": "end"}, 400, "suffix", "unsupported_parameter"),
    ("best_of", CMPL, {"prompt": "hi", "best_of": 3}, 400, "best_of", "unsupported_parameter"),
    ("tools", CHAT, {"messages": USER, "tools": [{"type": "function", "function": {"name": "f"}}]}, 400, "tools",
     "unsupported_parameter"),
    ("image content", CHAT, {"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "http://x/y.png"}}]}]}, 400, "messages.0.content.0",
     "unsupported_parameter"),
    ("json response_format", CHAT, {"messages": USER, "response_format": {"type": "json_object"}}, 400,
     "response_format", "unsupported_parameter"),
    ("stream_options without stream", CMPL, {"prompt": "hi", "stream_options": {"include_usage": True}}, 400,
     "stream_options", None),
]


def _post(server, path: str, body: dict | str) -> httpx.Response:
    if isinstance(body, str):
        return httpx.post(server.v1 + path, content=body, headers={"content-type": "application/json"}, timeout=60)
    return httpx.post(server.v1 + path, json=body, timeout=60)


def assert_error_body(r: httpx.Response, status: int, param: str | None = None, code: str | None = None) -> dict:
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert isinstance(err["message"], str) and err["message"]
    assert isinstance(err["type"], str)
    assert err["param"] == param, err
    if code is not None:
        assert err["code"] == code, err
    return err


@pytest.mark.parametrize(("name", "path", "body", "status", "param", "code"), CASES, ids=[c[0] for c in CASES])
def test_bad_input(server, name, path, body, status, param, code) -> None:
    err = assert_error_body(_post(server, path, body), status, param, code)
    assert err["type"] == ("not_found_error" if status == 404 else "invalid_request_error")


def test_unknown_route_and_method(server) -> None:
    assert_error_body(httpx.get(server.v1 + "/nope"), 404)
    assert_error_body(httpx.get(server.v1 + "/completions"), 405)
    assert_error_body(httpx.get(server.v1 + "/models/gpt-17"), 404, "model", "model_not_found")


def test_streamed_bad_input_is_refused_before_the_stream(server) -> None:
    r = _post(server, CMPL, {"prompt": "hi", "stream": True, "max_tokens": 0})
    assert_error_body(r, 400, "max_tokens")


def test_bad_input_leaves_requests_in_flight_alone(server) -> None:
    body = {"prompt": "Count to twenty: 1, 2, 3,", "max_tokens": 40, "ignore_eos": True, "stream": True,
            "temperature": 0}
    result: dict = {}

    def stream() -> None:
        with httpx.stream("POST", server.v1 + CMPL, json=body, timeout=120) as r:
            events = [line[6:] for line in r.iter_lines() if line.startswith("data: ")]
        result["events"] = events

    t = threading.Thread(target=stream)
    t.start()
    for _name, path, bad, status, _param, _code in CASES:
        assert _post(server, path, bad).status_code == status
    t.join(120)
    events = result["events"]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    assert not any("error" in c for c in chunks)
