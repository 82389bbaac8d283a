"""The on-disk result format, written by `cadence bench` and (later) the simulator, read by `bench report`.

A result directory holds:
- summary.json: {"schema", "created", "environment", "config", "workload", "notes", "summary"}
- requests.csv: one row per request with its timestamps and per-request metrics
- token_times.jsonl: one line per request, {"request_id", "token_times"} (seconds, run clock)
- plots/*.png (see plots.py), and capacity.json after a capacity search
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import math
import platform
import subprocess
from collections.abc import Sequence
from pathlib import Path

from cadence.core import metrics as m
from cadence.core.metrics import RequestRecord

SCHEMA = "cadence.bench/1"
CSV_FIELDS = (
    "request_id", "arrival_time", "send_time", "first_scheduled_time", "first_token_time", "last_token_time",
    "finish_time", "prompt_tokens", "output_tokens", "target_output_tokens", "ttft", "tpot", "max_tbt", "e2e",
    "normalized_latency", "scheduling_delay", "fluidity_index", "error", "error_detail",
)  # fmt: skip


def environment() -> dict:
    from cadence import __version__

    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, cwd=Path(__file__).parent
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return {
        "cadence_version": __version__,
        "git_commit": commit or None,
        "python": platform.python_version(),
        "host": platform.node(),
        "platform": platform.platform(),
    }


def _row(r: RequestRecord, deadlines: m.Deadlines) -> dict:
    tb = m.tbts(r)
    return {
        "request_id": r.request_id,
        "arrival_time": r.arrival_time,
        "send_time": r.send_time,
        "first_scheduled_time": r.first_scheduled_time,
        "first_token_time": r.token_times[0] if r.token_times else None,
        "last_token_time": r.token_times[-1] if r.token_times else None,
        "finish_time": r.finish_time,
        "prompt_tokens": r.prompt_tokens,
        "output_tokens": r.output_tokens,
        "target_output_tokens": r.target_output_tokens,
        "ttft": m.ttft(r),
        "tpot": m.tpot(r),
        "max_tbt": max(tb) if tb else None,
        "e2e": m.e2e(r),
        "normalized_latency": m.normalized_latency(r),
        "scheduling_delay": m.scheduling_delay(r),
        "fluidity_index": m.fluidity_index(r, deadlines.prefill_for(r), deadlines.decode),
        "error": r.error or "",
        "error_detail": r.error_detail,
    }


def _json_default(obj: object) -> object:
    return None if isinstance(obj, float) and not math.isfinite(obj) else str(obj)


def write_results(
    out_dir: str | Path,
    records: Sequence[RequestRecord],
    summary: dict,
    *,
    config: dict | None = None,
    workload: dict | None = None,
    notes: Sequence[str] = (),
    deadlines: m.Deadlines | None = None,
    source: str = "bench",
    plots: bool = True,
) -> Path:
    """Write everything a result directory holds; the simulator calls this with source="sim"."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    deadlines = deadlines or m.Deadlines()
    doc = {
        "schema": SCHEMA,
        "source": source,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "environment": environment(),
        "config": config or {},
        "workload": workload or {},
        "notes": list(notes),
        "summary": summary,
    }
    (out / "summary.json").write_text(json.dumps(doc, indent=2, default=_json_default) + "\n")
    with open(out / "requests.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_FIELDS)
        writer.writeheader()
        for r in records:
            writer.writerow({k: ("" if v is None else v) for k, v in _row(r, deadlines).items()})
    with open(out / "token_times.jsonl", "w") as f:
        for r in records:
            f.write(
                json.dumps({"request_id": r.request_id, "token_times": [round(t, 7) for t in r.token_times]})
                + "\n"
            )
    if plots:
        from cadence.bench.plots import draw_run

        draw_run(out / "plots", records)
    return out


def _opt_float(text: str) -> float | None:
    return float(text) if text not in ("", None) else None


def load_records(out_dir: str | Path) -> list[RequestRecord]:
    out = Path(out_dir)
    times: dict[str, tuple[float, ...]] = {}
    tt = out / "token_times.jsonl"
    if tt.exists():
        for line in tt.read_text().splitlines():
            if line.strip():
                obj = json.loads(line)
                times[str(obj["request_id"])] = tuple(obj["token_times"])
    records = []
    with open(out / "requests.csv", newline="") as f:
        for row in csv.DictReader(f):
            target = row.get("target_output_tokens", "")
            records.append(
                RequestRecord(
                    request_id=row["request_id"],
                    arrival_time=float(row["arrival_time"]),
                    prompt_tokens=int(row["prompt_tokens"]),
                    output_tokens=int(row["output_tokens"]),
                    token_times=times.get(row["request_id"], ()),
                    target_output_tokens=int(target) if target else None,
                    first_scheduled_time=_opt_float(row.get("first_scheduled_time", "")),
                    send_time=_opt_float(row.get("send_time", "")),
                    finish_time=_opt_float(row.get("finish_time", "")),
                    error=row.get("error") or None,
                    error_detail=row.get("error_detail", ""),
                )
            )
    return records


def load_summary(out_dir: str | Path) -> dict:
    return json.loads((Path(out_dir) / "summary.json").read_text())


def deadlines_from_summary(doc: dict) -> m.Deadlines:
    d = doc.get("summary", {}).get("deadlines", {})
    return m.Deadlines(
        d.get("decode_deadline_s", 0.05), d.get("prefill_slack_s", 0.3), d.get("prefill_per_token_s", 0.0)
    )
