"""`cadence bench`: load-test any OpenAI-compatible endpoint; `bench capacity`; `bench report DIR`."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from cadence.bench import options
from cadence.bench.options import add_arguments as _add_arguments
from cadence.core import metrics as m
from cadence.core import workload as wl


def add_arguments(parser: argparse.ArgumentParser) -> None:
    _add_arguments(parser)


def run(args: argparse.Namespace) -> int:
    try:
        if args.action == "report":
            return _report(args)
        if args.action == "capacity":
            return _capacity(args)
        return _run(args)
    except (ValueError, FileNotFoundError) as exc:
        print(f"cadence bench: {exc}", file=sys.stderr)
        return 2


# ---- one run -------------------------------------------------------------------------------------


class PreparedRun:
    """Everything built before the clock starts: the workload, the prompts, the endpoint."""

    def __init__(self, args: argparse.Namespace) -> None:
        from cadence.bench.prompts import PromptFactory, load_tokenizer

        self.args = args
        self.tokenizer = load_tokenizer(args.tokenizer)
        count = self.tokenizer.count if self.tokenizer else None
        self.specs = options.workload(args, count)
        if not self.specs:
            raise ValueError("the workload has no requests")
        chat = "chat" in args.endpoint
        if args.prompt_format == "ids" and chat:
            raise ValueError("--prompt-format ids needs the completions endpoint")
        fixed_ids = any(s.prompt_token_ids is not None for s in self.specs)
        send_ids = args.prompt_format == "ids" or (args.prompt_format == "auto" and fixed_ids and not chat)
        self._factory = lambda seed: PromptFactory(self.tokenizer, seed, send_ids)
        self.prompts = self._build_prompts(args.seed)
        model = args.model or _discover_model(args.base_url, args.api_key)
        self.endpoint = options.endpoint_config(args, model)
        self.summary_options = m.SummaryOptions(options.deadlines(args), options.request_slo(args))

    def _build_prompts(self, seed: int | str) -> list:
        factory = self._factory(seed)
        return [factory.build(s) for s in sorted(self.specs, key=lambda s: s.request_id)]

    def fresh_prompts(self, point: int) -> None:
        """New prompt contents with the same lengths for the `point`-th run against one server, so
        that a server with prefix caching cannot serve a later point's prompts from an earlier
        point's cache (that would fake a short prefill). Workloads that fix their prompts (W1 ids,
        ShareGPT text) keep them."""
        self.prompts = self._build_prompts(self.args.seed if point == 0 else f"{self.args.seed}/point{point}")

    def config(self) -> dict:
        cfg = {k: v for k, v in vars(self.args).items() if k not in ("api_key", "dir")}
        cfg["model"] = self.endpoint.model
        cfg["header"] = [h.split("=", 1)[0] + "=..." for h in self.args.header]  # values may be secrets
        return cfg

    def execute(self, specs: Sequence[wl.RequestSpec], label: str):
        from cadence.bench.progress import Progress
        from cadence.bench.runner import Runner, run_workload

        progress = Progress(len(specs), label, enabled=not self.args.no_progress)
        count = self.tokenizer.count if self.tokenizer else None
        runner = Runner(self.endpoint, self.prompts, count, progress, self.args.warmup_requests)
        arr = options.arrivals(self.args)
        closed = arr.clients if arr.kind == "closed" else None
        interrupted = False
        try:
            run_workload(self.endpoint, specs, self.prompts, max_concurrency=self.args.max_concurrency,
                         closed_clients=closed, runner=runner)  # fmt: skip
        except KeyboardInterrupt:
            interrupted = True
            runner.finalize_notes(all(p.exact for p in self.prompts))
        result = runner.result
        if interrupted:
            done = {r.request_id for r in result.records}
            missing = [s for s in specs if str(s.request_id) not in done]
            result.notes.append(f"interrupted: {len(missing)} requests unfinished (recorded as 'cancelled')")
            result.records += [
                m.RequestRecord(
                    str(s.request_id),
                    s.arrival_time,
                    s.prompt_tokens,
                    0,
                    target_output_tokens=s.output_tokens,
                    error="cancelled",
                )
                for s in missing
            ]
        result.notes.append(
            f"client CPU {result.cpu_s:.2f} s over {result.wall_s:.1f} s wall ({result.cpu_s / max(1, len(specs)) * 1e3:.2f} ms/request)"
        )
        return result, interrupted


def _discover_model(base_url: str, api_key: str | None) -> str:
    import httpx

    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        data = httpx.get(base_url.rstrip("/") + "/v1/models", headers=headers, timeout=10).json()
        return data["data"][0]["id"]
    except (httpx.HTTPError, ValueError, KeyError, IndexError, TypeError) as exc:
        raise ValueError(
            f"no --model given and {base_url}/v1/models did not name one ({type(exc).__name__}: {exc})"
        ) from exc


def _default_dir(kind: str) -> Path:
    return Path("results") / f"{kind}-{dt.datetime.now().strftime('%Y%m%d-%H%M%S')}"


def _run(args: argparse.Namespace) -> int:
    from cadence.bench.results import write_results
    from cadence.bench.table import render

    prep = PreparedRun(args)
    result, interrupted = prep.execute(prep.specs, "bench")
    summary = m.summarize(result.records, prep.summary_options)
    out = Path(args.result_dir) if args.result_dir else _default_dir("bench")
    write_results(out, result.records, summary, config=prep.config(), workload=_workload_doc(prep),
                  notes=result.notes, deadlines=prep.summary_options.deadlines, plots=not args.no_plots)  # fmt: skip
    print(render(summary, result.notes))
    print(f"\nresults in {out}")
    return 130 if interrupted else 0


def _workload_doc(prep: PreparedRun) -> dict:
    args = prep.args
    doc = wl.describe(prep.specs)
    doc.update(
        name=args.workload or args.dataset_name,
        arrivals=asdict(options.arrivals(args)),
        seed=args.seed,
        tokenizer=args.tokenizer,
        prompts_exact=all(p.exact for p in prep.prompts),
        prompt_format="ids" if any(p.token_ids is not None for p in prep.prompts) else "text",
    )
    if args.workload is None and args.dataset_name == "random":
        doc.update(input_len=args.input_len, output_len=args.output_len)
    return doc


# ---- capacity search -----------------------------------------------------------------------------


def _capacity(args: argparse.Namespace) -> int:
    from cadence.bench.capacity import CapacityConfig, search_capacity
    from cadence.bench.plots import draw_capacity
    from cadence.bench.results import write_results

    prep = PreparedRun(args)
    arr = options.arrivals(args)
    if arr.kind in ("closed", "trace"):
        raise ValueError("capacity search varies the arrival rate: use poisson, gamma or constant arrivals")
    slo = options.service_slo(args)
    cfg = CapacityConfig(
        slo, args.start_rate, args.max_rate, precision=args.precision, max_points=args.max_points
    )
    out = Path(args.result_dir) if args.result_dir else _default_dir("capacity")
    out.mkdir(parents=True, exist_ok=True)
    state_file = out / "capacity.json"
    fingerprint = {"workload": _workload_doc(prep), "model": prep.endpoint.model, "url": args.base_url,
                   "endpoint": args.endpoint, "slo": asdict(slo)}  # fmt: skip
    fingerprint["workload"].pop("arrivals", None)
    fingerprint["workload"].pop("last_arrival_s", None)
    cache: dict[float, dict] = {}
    if state_file.exists():
        old = json.loads(state_file.read_text())
        if old.get("fingerprint") == json.loads(json.dumps(fingerprint)):
            cache = {float(p["rate"]): p for p in old["result"]["points"]}
            print(f"reusing {len(cache)} cached points from {state_file}", file=sys.stderr)

    def evaluate(rate: float) -> dict:
        prep.fresh_prompts(len(cache))  # a prefix cache must not carry one point's prompts into the next
        specs = wl.assign_arrivals(prep.specs, arr.with_rate(rate), args.seed)
        result, interrupted = prep.execute(specs, f"rate {rate:.4g}/s")
        if interrupted:
            raise KeyboardInterrupt
        summary = m.summarize(result.records, prep.summary_options)
        write_results(out / "points" / f"rate_{rate:.6g}", result.records, summary, config=prep.config(),
                      workload=_workload_doc(prep) | {"rate": rate}, notes=result.notes,
                      deadlines=prep.summary_options.deadlines, plots=False)  # fmt: skip
        return summary

    def save(res: dict) -> None:
        state_file.write_text(
            json.dumps({"fingerprint": fingerprint, "result": res}, indent=2, default=str) + "\n"
        )

    def on_point(p: dict) -> None:
        verdict = "meets SLO" if p["ok"] else "violates: " + "; ".join(p["reasons"])
        print(f"rate {p['rate']:.4g} req/s: {verdict}", file=sys.stderr)
        save({"points": sorted(cache.values(), key=lambda q: q["rate"])})

    try:
        res = search_capacity(evaluate, cfg, cache, on_point)
    except KeyboardInterrupt:
        print(f"interrupted; {len(cache)} points kept in {state_file} (rerun to resume)", file=sys.stderr)
        return 130
    save(res)
    if not args.no_plots:
        draw_capacity(out / "plots" / "capacity_curve.png", res["points"], res["slo"])
    print(_capacity_text(res))
    print(f"\nresults in {out}")
    return 0


def _capacity_text(res: dict) -> str:
    lines = [
        f"{'rate req/s':>11} {'ok':>3} {'P99 TBT ms':>11} {'P90 TTFT ms':>12} {'med sched ms':>13}  reasons"
    ]
    for p in res["points"]:

        def ms(x):
            return f"{x * 1e3:.1f}" if x is not None else "-"

        lines.append(f"{p['rate']:>11.4g} {'yes' if p['ok'] else 'no':>3} {ms(p['p99_tbt']):>11} {ms(p['p90_ttft']):>12} "
                     f"{ms(p['median_sched']):>13}  {'; '.join(p['reasons'])}")  # fmt: skip
    cap, bound = res["capacity"], res["bound"]
    if bound == "below_min" or cap is None:
        lines.append("capacity: below the smallest rate tried")
    elif bound == "at_least":
        lines.append(f"capacity: at least {cap:.4g} req/s (the highest rate tried met the SLO)")
    else:
        upper = f", fails at {res['upper']:.4g}" if res["upper"] is not None else ""
        tag = "" if res["converged"] else " (not converged: point budget spent)"
        lines.append(f"capacity: {cap:.4g} req/s{upper} (precision {res['precision']:.0%}){tag}")
    if any(p.get("sched_source") == "ttft_upper_bound" for p in res["points"]):
        lines.append(
            "note: scheduling delay is not visible from outside the server; TTFT (its upper bound) was used"
        )
    return "\n".join(lines)


# ---- report --------------------------------------------------------------------------------------


def _report(args: argparse.Namespace) -> int:
    from cadence.bench.plots import draw_capacity, draw_run
    from cadence.bench.results import deadlines_from_summary, load_records, load_summary
    from cadence.bench.table import render

    if not args.dir:
        raise ValueError("usage: cadence bench report DIR")
    out = Path(args.dir)
    if (out / "summary.json").exists():
        doc = load_summary(out)
        records = load_records(out)
        dl = deadlines_from_summary(doc)
        summary = m.summarize(records, m.SummaryOptions(dl, options.request_slo(args)))
        if not args.no_plots:
            draw_run(out / "plots", records)
        print(render(summary, doc.get("notes", []), title=f"cadence bench report {out}"))
    cap_file = out / "capacity.json"
    if cap_file.exists():
        res = json.loads(cap_file.read_text())["result"]
        if "capacity" in res:
            if not args.no_plots:
                draw_capacity(out / "plots" / "capacity_curve.png", res["points"], res["slo"])
            print(_capacity_text(res))
    if not (out / "summary.json").exists() and not cap_file.exists():
        raise FileNotFoundError(f"{out} holds no summary.json or capacity.json")
    return 0
