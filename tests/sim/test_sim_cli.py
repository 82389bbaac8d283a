"""The command lines: sim output that `cadence bench report` reads, bad input as exit 2 with a
message naming what is missing, the CPU profiler on a toy shape, and a search over a tiny space."""

from __future__ import annotations

import json

import pytest

from cadence.cli import main


def test_sim_writes_what_bench_report_reads(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["sim", "--num-requests", "40", "--rate", "4", "--out", str(out)]) == 0
    doc = json.loads((out / "summary.json").read_text())
    assert doc["source"] == "sim"
    assert doc["summary"]["requests"]["completed"] == 40
    assert doc["summary"]["scheduling_delay"]["count"] == 40  # first_scheduled_time is recorded
    capsys.readouterr()
    assert main(["bench", "report", str(out), "--no-plots"]) == 0
    assert "40/40 completed" in capsys.readouterr().out


@pytest.mark.parametrize(("argv", "needle"), [
    (["sim", "--model", "llama2-70b", "--tp", "1"], "does not fit"),
    (["sim", "--profile", "/nonexistent/p.csv"], "does not exist"),
    (["sim", "--tp", "3"], "do not split"),
])
def test_bad_input_exits_2_with_a_reason(argv, needle, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert needle in err
    assert "Traceback" not in err


def test_empty_trace(tmp_path, capsys):
    trace = tmp_path / "empty.csv"
    trace.write_text("num_prefill_tokens,num_decode_tokens,arrived_at\n")
    assert main(["sim", "--trace", str(trace), "--arrivals", "trace"]) == 2
    assert "no requests" in capsys.readouterr().err


def test_profile_not_covering_the_shapes(tmp_path, capsys):
    prof = tmp_path / "p.csv"
    assert main(["profile", "--analytic", "--model", "llama3-8b", "--out", str(prof)]) == 0
    capsys.readouterr()
    assert main(["sim", "--profile", str(prof), "--model", "qwen3-0.6b"]) == 2
    assert "not the requested" in capsys.readouterr().err


def test_cpu_profiler_smoke_then_simulate_from_it(tmp_path, capsys):
    prof = tmp_path / "tiny.csv"
    assert main(["profile", "--model", "sim-tiny", "--device", "cpu", "--out", str(prof), "--max-seconds", "30",
                 "--repeats", "3"]) == 0
    rows = prof.read_text().splitlines()
    ops = {r.split(",")[0] for r in rows[1:]}
    assert {"attn_prefill", "attn_decode", "qkv_proj", "mlp_down", "norm", "sampler", "embed", "lm_head",
            "cpu_step"} <= ops
    assert all(r.endswith(",measured") for r in rows[1:])
    # The CPU grid stops at 256 tokens: a budget of 2048 is not covered, and the error says so.
    capsys.readouterr()
    assert main(["sim", "--model", "sim-tiny", "--profile", str(prof), "--num-requests", "10"]) == 2
    assert "covers steps of up to 256 tokens" in capsys.readouterr().err
    trace = tmp_path / "t.csv"
    trace.write_text("num_prefill_tokens,num_decode_tokens,arrived_at\n" +
                     "".join(f"{20 + i},{5 + i % 7},{0.01 * i}\n" for i in range(30)))
    out = tmp_path / "run"
    assert main(["sim", "--model", "sim-tiny", "--profile", str(prof), "--trace", str(trace), "--arrivals", "trace",
                 "--max-num-batched-tokens", "128", "--max-num-seqs", "8", "--out", str(out)]) == 0
    doc = json.loads((out / "summary.json").read_text())
    assert doc["summary"]["requests"]["completed"] == 30


def test_search_on_a_tiny_space(tmp_path, capsys):
    out = tmp_path / "search"
    rc = main(["search", "--model", "llama3-8b", "--max-gpus", "2", "--tp", "1,2", "--pp", "1", "--replicas", "1",
               "--policies", "sarathi", "--budgets", "512", "--max-batch", "64", "--num-requests", "60",
               "--min-duration", "8", "--precision", "0.25", "--processes", "2", "--out", str(out)])
    assert rc == 0
    res = json.loads((out / "search.json").read_text())
    assert res["configs"] == 2
    assert res["best"] is not None and res["best"]["capacity_rps"] > 0
    assert res["pareto_front"]
    assert (out / "pareto.png").exists()
    assert "best:" in capsys.readouterr().out
