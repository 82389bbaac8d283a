"""`cadence bench` flags (named as in `vllm bench serve` where the concept is the same) and what they build."""

from __future__ import annotations

import argparse
import math
import os

from cadence.bench.client import COMPLETIONS_ENDPOINT, EndpointConfig
from cadence.core import workload as wl
from cadence.core.metrics import Deadlines, RequestSLO, ServiceSLO


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", nargs="?", default="run", choices=("run", "capacity", "report"),
                   help="run: one load test (default); capacity: search the highest rate meeting the SLO; "
                        "report DIR: redraw plots and tables from a saved result directory")  # fmt: skip
    p.add_argument("dir", nargs="?", default=None, help="result directory (for report)")

    t = p.add_argument_group("target")
    t.add_argument(
        "--base-url", "--url", dest="base_url", default="http://127.0.0.1:8000", help="server root URL"
    )
    t.add_argument("--endpoint", default=COMPLETIONS_ENDPOINT, help="/v1/completions or /v1/chat/completions")
    t.add_argument(
        "--model", default=None, help="model name to send (default: the first one /v1/models lists)"
    )
    t.add_argument(
        "--api-key", default=os.environ.get("OPENAI_API_KEY"), help="bearer token (default $OPENAI_API_KEY)"
    )
    t.add_argument(
        "--header", action="append", default=[], metavar="KEY=VALUE", help="extra HTTP header (repeatable)"
    )
    t.add_argument("--no-exact-output", action="store_true",
                   help="do not send min_tokens/ignore_eos (for servers that reject them; outputs may end early)")  # fmt: skip
    t.add_argument("--no-stream-usage", action="store_true",
                   help="do not send stream_options (for servers that reject it; multi-token chunks are then estimated)")  # fmt: skip
    t.add_argument(
        "--request-timeout", type=float, default=600.0, help="seconds without data before a request fails"
    )
    t.add_argument("--temperature", type=float, default=0.0)

    w = p.add_argument_group("workload")
    w.add_argument(
        "--workload", choices=wl.NAMED_WORKLOADS, default=None, help="a named workload from WORKLOADS.md"
    )
    w.add_argument("--dataset-name", choices=("random", "sharegpt", "trace"), default="random")
    w.add_argument("--dataset-path", default=None, help="ShareGPT JSON or CSV trace file")
    w.add_argument("--input-len", "--random-input-len", dest="input_len", default="512",
                   help="prompt length distribution: N, uniform:LO:HI, lognormal:MEDIAN:SIGMA[:LO:HI], zipf:S[:LO:HI]")  # fmt: skip
    w.add_argument(
        "--output-len",
        "--random-output-len",
        dest="output_len",
        default="128",
        help="output length distribution",
    )
    w.add_argument(
        "--num-prompts", type=int, default=None, help="number of requests (default 200; W1 is always 256)"
    )
    w.add_argument("--seed", type=int, default=0)
    w.add_argument(
        "--tokenizer",
        default=None,
        help="local HF tokenizer folder or tokenizer.json for exact prompt lengths",
    )
    w.add_argument("--prompt-format", choices=("auto", "text", "ids"), default="auto",
                   help="ids sends token-id prompts (completions only; exact without a tokenizer); auto uses ids "
                        "only where the workload fixes them (W1)")  # fmt: skip

    a = p.add_argument_group("arrivals")
    a.add_argument("--request-rate", type=float, default=math.inf, help="requests/s (inf: all at once)")
    a.add_argument(
        "--burstiness",
        type=float,
        default=1.0,
        help="gamma shape as in vLLM: 1 is Poisson, lower is burstier",
    )
    a.add_argument("--arrival", choices=wl.ARRIVAL_KINDS, default=None,
                   help="poisson (default), gamma, constant, trace (timestamps of --dataset-path), closed")  # fmt: skip
    a.add_argument(
        "--arrival-cv", type=float, default=None, help="gamma inter-arrival CV (instead of --burstiness)"
    )
    a.add_argument("--clients", type=int, default=None, help="closed loop: this many concurrent clients")
    a.add_argument("--max-concurrency", type=int, default=None,
                   help="open loop: at most this many requests in flight; time queued here counts in the latency")  # fmt: skip

    m = p.add_argument_group("metrics")
    m.add_argument("--decode-deadline-ms", type=float, default=50.0, help="Metron D_d")
    m.add_argument(
        "--prefill-slack-ms", type=float, default=300.0, help="Metron's slack added to the predicted prefill"
    )
    m.add_argument(
        "--prefill-per-token-ms", type=float, default=0.0, help="predicted prefill time per prompt token"
    )
    m.add_argument("--goodput", nargs="+", default=None, metavar="KEY:MS",
                   help="per-request SLOs for goodput, as in vLLM: ttft:MS tpot:MS e2el:MS (and max_tbt:MS)")  # fmt: skip

    c = p.add_argument_group("capacity")
    c.add_argument("--slo-p99-tbt-ms", type=float, default=None)
    c.add_argument("--slo-p90-ttft-ms", type=float, default=None)
    c.add_argument("--slo-median-sched-delay-ms", type=float, default=2000.0,
                   help="from outside, TTFT stands in for scheduling delay (it is an upper bound)")  # fmt: skip
    c.add_argument("--slo-deadline-miss-rate", type=float, default=None)
    c.add_argument("--slo-max-error-rate", type=float, default=0.0)
    c.add_argument("--start-rate", type=float, default=1.0)
    c.add_argument("--max-rate", type=float, default=None)
    c.add_argument(
        "--precision", type=float, default=0.05, help="stop when the bracket is this fraction of the rate"
    )
    c.add_argument("--max-points", type=int, default=24)

    a.add_argument("--warmup-requests", type=int, default=0,
                   help="one-token requests sent concurrently before the clock starts, to open connections "
                        "and wake the server (TTFT then excludes TCP setup)")  # fmt: skip

    o = p.add_argument_group("output")
    o.add_argument("--result-dir", default=None, help="where results go (default results/bench-<time>)")
    o.add_argument("--no-plots", action="store_true")
    o.add_argument("--no-progress", action="store_true")


def endpoint_config(args: argparse.Namespace, model: str) -> EndpointConfig:
    headers = dict(h.split("=", 1) for h in args.header)
    return EndpointConfig(
        base_url=args.base_url,
        model=model,
        endpoint=args.endpoint,
        api_key=args.api_key,
        exact_output=not args.no_exact_output,
        stream_usage=not args.no_stream_usage,
        request_timeout=args.request_timeout,
        temperature=args.temperature,
        headers=headers,
    )


def arrivals(args: argparse.Namespace) -> wl.Arrivals:
    kind = args.arrival
    if kind is None:
        kind = (
            "closed"
            if args.clients
            else "gamma"
            if (args.burstiness != 1.0 or args.arrival_cv)
            else "poisson"
        )
    cv = args.arrival_cv if args.arrival_cv else 1.0 / math.sqrt(args.burstiness)
    return wl.Arrivals(kind, args.request_rate, cv, args.clients or 1)


def workload(args: argparse.Namespace, count_tokens=None) -> list[wl.RequestSpec]:
    arr = arrivals(args)
    n = args.num_prompts
    if args.workload:
        return wl.named(args.workload, n or 1000, args.request_rate, args.seed, arr)
    n = n or 200
    if args.dataset_name == "sharegpt":
        if not args.dataset_path:
            raise ValueError("--dataset-name sharegpt needs --dataset-path")
        specs = wl.load_sharegpt(args.dataset_path, n, count_tokens or wl.approx_token_count, args.seed)
        return wl.assign_arrivals(specs, arr, args.seed)
    if args.dataset_name == "trace":
        if not args.dataset_path:
            raise ValueError("--dataset-name trace needs --dataset-path")
        specs = wl.load_csv_trace(args.dataset_path, n)
        return wl.assign_arrivals(specs, arr, args.seed)
    prompt, output = wl.parse_length_dist(args.input_len), wl.parse_length_dist(args.output_len)
    return wl.synthetic(prompt, output, n, arr, args.seed)


def deadlines(args: argparse.Namespace) -> Deadlines:
    return Deadlines(
        args.decode_deadline_ms / 1e3, args.prefill_slack_ms / 1e3, args.prefill_per_token_ms / 1e3
    )


def request_slo(args: argparse.Namespace) -> RequestSLO:
    if not args.goodput:
        return RequestSLO()
    limits = {}
    for item in args.goodput:
        key, _, ms = item.partition(":")
        name = {"ttft": "ttft", "tpot": "tpot", "e2el": "e2e", "e2e": "e2e", "max_tbt": "max_tbt"}.get(key)
        if name is None:
            raise ValueError(f"unknown goodput key {key!r} (ttft, tpot, e2el, max_tbt)")
        limits[name] = float(ms) / 1e3
    return RequestSLO(**limits)


def service_slo(args: argparse.Namespace) -> ServiceSLO:
    def s(ms: float | None) -> float | None:
        return None if ms is None else ms / 1e3

    return ServiceSLO(
        p99_tbt=s(args.slo_p99_tbt_ms),
        p90_ttft=s(args.slo_p90_ttft_ms),
        median_scheduling_delay=s(args.slo_median_sched_delay_ms),
        deadline_miss_rate=args.slo_deadline_miss_rate,
        max_error_rate=args.slo_max_error_rate,
    )
