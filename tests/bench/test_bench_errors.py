"""Bad servers are reported per request and in the summary; the run always finishes."""

from __future__ import annotations

import socket

import pytest

from cadence.bench.client import CHAT_ENDPOINT, EndpointConfig, Prompt
from cadence.bench.runner import run_workload
from cadence.bench.scripted_server import Script, serve_in_subprocess
from cadence.bench.stream import StreamError, StreamState
from cadence.core import metrics as m
from cadence.core.workload import RequestSpec

SPECS = [RequestSpec(i, 3, 6, i * 0.01) for i in range(6)]
PROMPTS = [Prompt(3, text="x y z")] * 6


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_server_down():
    res = run_workload(EndpointConfig(f"http://127.0.0.1:{_free_port()}", "m"), SPECS, PROMPTS)
    assert [r.error for r in res.records] == ["connect"] * 6
    assert any("preflight" in n for n in res.notes)
    s = m.summarize(res.records)
    assert s["requests"]["errors_by_kind"] == {"connect": 6} and s["ttft"] == {"count": 0}


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("fault", "kind"),
    [
        ("http_500", "http_500"),
        ("malformed", "malformed_stream"),
        ("disconnect", "disconnected"),
        ("stream_error", "stream_error"),
    ],
)
def test_faults_on_every_third_request(fault, kind):
    script = Script(ttft=0.01, tbt=0.005, fault=fault, fault_every=3)
    with serve_in_subprocess(script) as url:
        res = run_workload(EndpointConfig(url, script.model, endpoint=CHAT_ENDPOINT), SPECS, PROMPTS)
    kinds = [r.error for r in res.records]
    assert sorted(kinds, key=str) == sorted([kind, kind, None, None, None, None], key=str), kinds
    assert m.summarize(res.records)["requests"]["errors_by_kind"] == {kind: 2}
    bad = [r for r in res.records if not r.ok]
    assert all(r.error_detail for r in bad)


@pytest.mark.timeout(60)
def test_wrong_model():
    with serve_in_subprocess(Script()) as url:
        res = run_workload(EndpointConfig(url, "no-such-model"), SPECS[:2], PROMPTS[:2])
    assert [r.error for r in res.records] == ["wrong_model"] * 2
    assert any("not among the served models" in n for n in res.notes)


def test_stream_parser_rejects_garbage_and_tolerates_comments():
    st = StreamState()
    st.feed(b': keep-alive\n\nevent: message\ndata: {"choices": [{"text": "hi"}]}\n\n', 1.0)
    st.feed(b'data: {"choices": [{"text": " there", "finish_reason": "length"}]}\n', 2.0)
    st.feed(b"\ndata: [DONE]\n\n", 3.0)
    assert st.token_times == [1.0, 2.0] and st.done and st.finish_reason == "length"
    for bad in (b"garbage line\n", b"data: [1, 2]\n", b"data: {oops\n"):
        with pytest.raises(StreamError) as exc:
            StreamState().feed(bad, 0.0)
        assert exc.value.kind == "malformed_stream"
    split = StreamState()
    split.feed(b'data: {"choices": [{"te', 1.0)  # a line split across reads counts when it completes
    split.feed(b'xt": "a"}]}\n', 1.5)
    assert split.token_times == [1.5]
