"""SIGTERM: stop accepting, end in-flight requests after the grace period, exit 0; access logs."""

from __future__ import annotations

import json
import signal
import threading
import time

import httpx

LONG = {"prompt": "Tell me a very long story.", "max_tokens": 400, "ignore_eos": True, "temperature": 0}


def test_sigterm_ends_streams_with_an_error_event_and_exits_0(launch) -> None:
    srv = launch("--shutdown-timeout", "1", "--log-level", "info").wait_ready()
    httpx.post(srv.v1 + "/completions", json={"prompt": "Hello", "max_tokens": 3}, timeout=60)  # an access line
    got: dict = {}
    streaming = threading.Event()

    def stream() -> None:
        events = []
        with httpx.stream("POST", srv.v1 + "/completions", json={**LONG, "stream": True}, timeout=60) as r:
            for line in r.iter_lines():
                if line.startswith("data: "):
                    events.append(line[6:])
                    if len(events) == 3:
                        streaming.set()
        got["events"] = events

    def whole() -> None:
        got["whole"] = httpx.post(srv.v1 + "/chat/completions", timeout=60,
                                  json={"messages": [{"role": "user", "content": "Talk."}], **LONG})

    threads = [threading.Thread(target=stream), threading.Thread(target=whole)]
    for t in threads:
        t.start()
    assert streaming.wait(60)
    srv.proc.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    try:  # no longer accepting: refused, or 503 while the socket closes
        refused = httpx.post(srv.v1 + "/completions", json={"prompt": "hi"}, timeout=5).status_code == 503
    except httpx.TransportError:
        refused = True
    assert refused
    for t in threads:
        t.join(30)
    assert srv.proc.wait(30) == 0

    events = got["events"]
    assert events[-1] == "[DONE]"
    last = json.loads(events[-2])
    assert last["error"]["code"] == "engine_unavailable" and "shutting down" in last["error"]["message"]
    assert len(events) < 400  # cut short, not run to the end
    r = got["whole"]
    assert r.status_code == 503 and r.json()["error"]["code"] == "engine_unavailable"

    access = [json.loads(line.split("cadence.access: ", 1)[1]) for line in srv.log().splitlines()
              if "cadence.access: " in line]
    assert len(access) == 3
    first = access[0]
    for key in ("request_id", "prompt_tokens", "output_tokens", "ttft_s", "e2e_s", "status"):
        assert key in first
    assert first["status"] == 200 and first["output_tokens"] == 3 and first["ttft_s"] <= first["e2e_s"]
    assert {a["status"] for a in access[1:]} == {503}
