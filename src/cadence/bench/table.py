"""A readable terminal table of a summary."""

from __future__ import annotations

from collections.abc import Sequence

_ROWS = (
    ("TTFT", "ttft", 1e3, "ms"),
    ("TBT", "tbt", 1e3, "ms"),
    ("TPOT", "tpot", 1e3, "ms"),
    ("E2E", "e2e", 1.0, "s"),
    ("normalized latency", "normalized_latency", 1e3, "ms/tok"),
    ("scheduling delay", "scheduling_delay", 1e3, "ms"),
    ("client dispatch lag", "dispatch_lag", 1e3, "ms"),
    ("prompt tokens", "prompt_tokens", 1.0, "tok"),
    ("output tokens", "output_tokens", 1.0, "tok"),
)
_COLS = ("mean", "p50", "p90", "p95", "p99", "max")


def _fmt(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{x:,.0f}" if abs(x) >= 1000 else f"{x:.3g}" if abs(x) < 10 else f"{x:.1f}"


def render(summary: dict, notes: Sequence[str] = (), title: str = "cadence bench") -> str:
    req, thr, dl = summary["requests"], summary["throughput"], summary["deadlines"]
    lines = [f"== {title} ==", ""]
    lines.append(
        f"requests {req['completed']}/{req['total']} completed, {req['failed']} failed"
        + (f" {req['errors_by_kind']}" if req["errors_by_kind"] else "")
        + f"; duration {summary['duration_s']:.2f} s"
    )
    lines.append(
        f"throughput {thr['requests_per_s']:.3g} req/s, input {thr['input_tokens_per_s']:,.1f} tok/s, "
        f"output {thr['output_tokens_per_s']:,.1f} tok/s"
    )
    if summary.get("goodput"):
        g = summary["goodput"]
        lines.append(f"goodput {g['requests_per_s']:.3g} req/s ({g['requests']} requests met {g['slo']})")
    lines.append("")
    head = f"{'metric':<22}{'unit':<8}" + "".join(f"{c:>10}" for c in _COLS)
    lines += [head, "-" * len(head)]
    for label, key, scale, unit in _ROWS:
        dist = summary.get(key) or {}
        if not dist.get("count"):
            continue
        cells = "".join(f"{_fmt(dist[c] * scale if c in dist else None):>10}" for c in _COLS)
        lines.append(f"{label:<22}{unit:<8}{cells}")
    if not summary.get("scheduling_delay", {}).get("count"):
        lines.append(
            f"{'scheduling delay':<22}not observable from outside the server; TTFT is its upper bound"
        )
    fi = dl["fluidity_index"]
    lines.append("")
    rate = dl["fluent_token_rate"]
    lines.append(
        f"deadlines D_d={dl['decode_deadline_s'] * 1e3:g} ms, D_p={dl['prefill_slack_s']:g} s"
        + (f" + {dl['prefill_per_token_s'] * 1e3:g} ms/prompt tok" if dl["prefill_per_token_s"] else "")
        + f": missed {dl['missed']}/{dl['total']}"
        + (f" ({dl['miss_rate']:.2%})" if dl["miss_rate"] is not None else "")
        + (f", fluidity-index p50 {fi['p50']:.3f} min {fi['min']:.3f}" if fi.get("count") else "")
    )
    lines.append(
        f"fluent token generation rate: {f'{rate:.1f} tok/s' if rate else 'none (fails at every rate)'}"
    )
    for note in notes:
        lines.append(f"note: {note}")
    return "\n".join(lines)
