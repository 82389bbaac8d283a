"""`cadence serve --engine-process`: the engine steps in its own process behind the HTTP front end;
the same answers as in-process serving, a clean SIGTERM, and the engine's step trace on shutdown."""

from __future__ import annotations

import csv

import openai


def test_engine_process_serves_like_in_process_and_writes_its_step_trace(launch, server, tmp_path) -> None:
    trace = tmp_path / "steps.csv"
    srv = launch("--engine-process", env={"CADENCE_STEP_TRACE": str(trace)}).wait_ready()
    ask = {"model": "SmolLM2-135M-Instruct", "prompt": "The capital of France is", "max_tokens": 12,
           "temperature": 0}
    here = openai.OpenAI(base_url=srv.v1, api_key="x")
    chunks = list(here.completions.create(**ask, stream=True))
    streamed = "".join(c.choices[0].text for c in chunks if c.choices)
    whole = openai.OpenAI(base_url=server.v1, api_key="x").completions.create(**ask)  # in-process server
    assert streamed == whole.choices[0].text and whole.usage.completion_tokens == 12

    assert srv.stop() == 0
    with open(trace) as f:
        rows = list(csv.DictReader(f))
    assert rows, "no step trace was written"
    assert int(rows[0]["num_prefill_tokens"]) > 0 and int(rows[0]["num_decodes"]) == 0
    decode_rows = [r for r in rows if int(r["num_decodes"]) == 1 and int(r["num_prefill_tokens"]) == 0]
    assert len(decode_rows) >= 10  # 11 decode steps after the prompt's first token (warm-up may add more)
    starts = [float(r["start"]) for r in rows]
    assert starts == sorted(starts)
    assert all(float(r[k]) >= 0 for r in rows for k in ("schedule_s", "prepare_s", "execute_s", "update_s"))
