"""`cadence profile`: time the model's operators on this machine (or write the analytic stand-in)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from cadence.sim.hardware import SKUS, gpu_spec
from cadence.sim.shapes import SIM_SHAPES


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="llama3-8b", choices=sorted(SIM_SHAPES), help="model shape (dummy weights)")
    parser.add_argument("--tp", type=int, default=1, help="tensor-parallel degree (one GPU's share is timed)")
    parser.add_argument("--out", required=True, help="CSV file to write")
    parser.add_argument("--device", default="auto", help="auto, cuda, cuda:N or cpu")
    parser.add_argument("--grid", default="auto", choices=("auto", "gpu", "cpu"),
                        help="grid of shapes (auto: gpu on CUDA, the small cpu grid otherwise)")
    parser.add_argument("--max-seconds", type=float, default=150.0, help="time budget of the whole profile")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per point (median kept)")
    parser.add_argument("--gpu", default="H100", choices=sorted(SKUS),
                        help="SKU for the all-reduce bandwidth model and for --analytic")
    parser.add_argument("--analytic", action="store_true",
                        help="write the analytic roofline profile of --gpu instead of measuring (labelled so)")
    parser.add_argument("--errors", action="store_true", help="print held-out error of the fits per operator")
    parser.add_argument("--step-trace", action="append", default=[], metavar="CSV",
                        help="calibrate instead of measuring: add served-step points fitted from this engine step "
                             "trace (CADENCE_STEP_TRACE; .csv or .csv.gz, repeatable) to --from-profile")
    parser.add_argument("--from-profile", default=None, help="the operator profile that --step-trace calibrates")
    parser.add_argument("--host-trace", action="append", default=[], metavar="CSV",
                        help="with --step-trace: a served engine's step trace (benchmarks/sim_fidelity.py probe, "
                             "loaded run) whose host time per step replaces the bare sweep's (repeatable)")
    parser.add_argument("--request-probe", default=None, metavar="RUN_DIR",
                        help="with --step-trace: also add the request's way in and out from a served probe's bench "
                             "results (RUN_DIR/requests.csv) and step trace (RUN_DIR.steps.csv), made by "
                             "benchmarks/sim_fidelity.py probe")
    parser.add_argument("--served-sweep", action="store_true",
                        help="run the engine itself over a grid of batch x context decodes (GPU), keep its step "
                             "trace beside --out, and calibrate --from-profile from it")


def run(args: argparse.Namespace) -> int:
    from cadence.sim.errors import SimInputError

    try:
        gpu = gpu_spec(args.gpu)
        if args.served_sweep:
            prof, notes = _served_sweep(args)
        elif args.step_trace or args.from_profile:
            prof, notes = _calibrate(args)
        elif args.analytic:
            from cadence.sim.roofline import analytic_profile

            prof, notes = analytic_profile(args.model, args.tp, gpu), ["analytic roofline, not measured"]
        else:
            prof, notes = _measure(args, gpu)
        path = prof.save(args.out)
    except (SimInputError, ValueError) as exc:
        print(f"cadence profile: {exc}", file=sys.stderr)
        return 2
    for n in notes:
        print(f"note: {n}", file=sys.stderr)
    print(f"{len(prof.points)} points of {prof.model} tp={prof.tp} ({prof.source}) in {path}")
    if args.errors:
        from cadence.sim.fits import heldout_errors

        errs = heldout_errors(prof)
        print(json.dumps(errs, indent=1))
        Path(str(path) + ".errors.json").write_text(json.dumps(errs, indent=1) + "\n")
    return 0


def _served_sweep(args: argparse.Namespace):
    import torch

    from cadence.sim.errors import SimInputError
    from cadence.sim.served_sweep import CPU_SWEEP, run_served_sweep

    if not args.from_profile:
        raise SimInputError("--served-sweep calibrates an operator profile: give it with --from-profile")
    if args.tp != 1:
        raise SimInputError("--served-sweep runs one GPU's engine: use --tp 1")
    trace = Path(str(args.out) + ".steps.csv")
    cuda = args.device != "cpu" and torch.cuda.is_available()
    kw = {} if cuda else {"batches": CPU_SWEEP[0], "contexts": CPU_SWEEP[1], "decode_steps": 4, "prefills": (8, 30)}
    ran = run_served_sweep(args.model, trace, device=args.device, max_seconds=args.max_seconds,
                           log=lambda msg: print(msg, file=sys.stderr), **kw)
    args.step_trace = [str(trace)]
    prof, notes = _calibrate(args)
    return prof, [f"served sweep: {ran}, trace {trace}", *notes]


def _calibrate(args: argparse.Namespace):
    from cadence.sim.calibration import add_served_points
    from cadence.sim.errors import SimInputError
    from cadence.sim.profile_data import load_profile

    if not (args.step_trace and args.from_profile):
        raise SimInputError("calibration needs both --from-profile and at least one --step-trace")
    prof = load_profile(args.from_profile)
    if any(p.op.startswith("served_") for p in prof.points):
        raise SimInputError(f"{args.from_profile} is calibrated already; calibrate the operator profile itself")
    host = getattr(args, "host_trace", [])
    counts = add_served_points(prof, args.step_trace, host)
    notes = [f"served-step calibration from {len(args.step_trace)} trace(s)"
             + (f", host time from {len(host)} served trace(s)" if host else "") + f": {counts}"]
    if getattr(args, "request_probe", None):
        from cadence.sim.calibration import request_path_points

        run_dir = Path(args.request_probe)
        trace = Path(str(run_dir) + ".steps.csv")
        notes.append(f"request path from {run_dir}: {request_path_points(prof, run_dir / 'requests.csv', trace)}")
    return prof, notes


def _measure(args: argparse.Namespace, gpu):
    import torch

    from cadence.sim.profiler import CPU_GRID, GPU_GRID, profile_model

    dev = args.device
    if dev == "auto":
        dev = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(dev)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for, but no CUDA GPU is visible")
    if device.type == "cpu":
        torch.set_num_threads(1)  # steadier timings on a shared host; the CPU grid is for tests
    grid = {"gpu": GPU_GRID, "cpu": CPU_GRID}.get(args.grid, GPU_GRID if device.type == "cuda" else CPU_GRID)
    log = (lambda msg: print(msg, file=sys.stderr))  # noqa: E731
    return profile_model(args.model, args.tp, device, gpu, grid, args.max_seconds, args.repeats, log)
