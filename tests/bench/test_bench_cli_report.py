"""`cadence bench` end to end through the CLI dispatcher, then `cadence bench report DIR` redraws."""

from __future__ import annotations

import json

import pytest

from cadence.bench.results import load_records, load_summary, write_results
from cadence.bench.scripted_server import Script, serve_in_subprocess
from cadence.cli import main
from cadence.core import metrics as m


@pytest.mark.timeout(120)
def test_run_then_report(tmp_path, capsys):
    out = tmp_path / "run"
    with serve_in_subprocess(Script(ttft=0.02, tbt=0.01)) as url:
        rc = main(["bench", "--url", url, "--num-prompts", "20", "--request-rate", "40", "--input-len", "uniform:5:30",
                   "--output-len", "8", "--result-dir", str(out), "--goodput", "ttft:500", "--no-progress"])  # fmt: skip
        assert rc == 0
        cap = tmp_path / "cap"
        rc = main(["bench", "capacity", "--url", url, "--num-prompts", "10", "--input-len", "4", "--output-len", "4",
                   "--slo-p99-tbt-ms", "500", "--start-rate", "20", "--max-rate", "40", "--result-dir", str(cap),
                   "--no-progress"])  # fmt: skip
        assert rc == 0
    text = capsys.readouterr().out
    assert "TTFT" in text and "goodput" in text and "approximate" in text
    doc = load_summary(out)
    assert doc["schema"] == "cadence.bench/1" and doc["summary"]["requests"]["completed"] == 20
    assert doc["config"]["model"] == "scripted" and doc["workload"]["num_requests"] == 20
    records = load_records(out)
    assert len(records) == 20 and all(len(r.token_times) == 8 for r in records)
    assert m.summarize(records)["ttft"] == pytest.approx(
        doc["summary"]["ttft"], abs=1e-6
    )  # times kept to 0.1 us
    for png in ("latency_cdf.png", "tokens_over_time.png", "ttft_vs_prompt.png"):
        (out / "plots" / png).unlink()
    assert main(["bench", "report", str(out)]) == 0
    assert (out / "plots" / "latency_cdf.png").stat().st_size > 1000
    assert "cadence bench report" in capsys.readouterr().out
    state = json.loads((cap / "capacity.json").read_text())
    assert state["result"]["bound"] == "at_least" and state["result"]["capacity"] == 40.0
    (cap / "plots" / "capacity_curve.png").unlink()
    assert main(["bench", "report", str(cap)]) == 0
    assert (cap / "plots" / "capacity_curve.png").exists()
    assert "capacity: at least 40" in capsys.readouterr().out


def test_results_writer_is_usable_without_http(tmp_path):
    # What the simulator will do: records from simulated timestamps, the same writer, the same report.
    recs = [
        m.RequestRecord(
            str(i),
            i * 0.5,
            100,
            3,
            (i * 0.5 + 0.2, i * 0.5 + 0.3, i * 0.5 + 0.4),
            first_scheduled_time=i * 0.5 + 0.1,
        )
        for i in range(4)
    ]
    write_results(tmp_path, recs, m.summarize(recs), source="sim", plots=False)
    back = load_records(tmp_path)
    assert back == recs
    assert load_summary(tmp_path)["source"] == "sim"
    assert main(["bench", "report", str(tmp_path), "--no-plots"]) == 0


def test_bad_arguments_exit_cleanly(tmp_path):
    assert main(["bench", "report", str(tmp_path)]) == 2
    assert main(["bench", "--model", "x", "--url", "http://127.0.0.1:9", "--dataset-name", "sharegpt"]) == 2
