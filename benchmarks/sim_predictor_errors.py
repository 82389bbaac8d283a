"""Held-out error of the step-time predictor's per-operator fits (and of a random forest beside them).

Until H100 profiles exist this runs on the analytic roofline profile with multiplicative noise
(default 3%, standing in for run-to-run jitter), so it checks the fitting machinery, not fidelity.
With --profile it reports a measured profile's errors. Writes benchmarks/results/sim_predictor_errors.json.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

from cadence.bench.results import environment
from cadence.sim.fits import heldout_errors
from cadence.sim.hardware import gpu_spec
from cadence.sim.profile_data import Profile, load_profile
from cadence.sim.roofline import analytic_profile


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--profile", action="append", default=[])
    ap.add_argument("--noise", type=float, default=0.03)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "sim_predictor_errors.json"))
    args = ap.parse_args()
    profiles = [load_profile(p) for p in args.profile]
    if not profiles:
        rng = random.Random(0)
        for model, tp in (("qwen3-0.6b", 1), ("llama3-8b", 1), ("llama3-70b", 4)):
            clean = analytic_profile(model, tp, gpu_spec("H100"))
            noisy = Profile(model, tp, clean.device, f"analytic-roofline + {args.noise:.0%} noise")
            for p in clean.points:
                noisy.add(p.op, p.time_s * (1 + rng.uniform(-args.noise, args.noise)), p.tokens, p.batch, p.context)
            profiles.append(noisy)
    doc = {"benchmark": "sim_predictor_errors", "environment": environment(), "profiles": []}
    for prof in profiles:
        errs = heldout_errors(prof)
        doc["profiles"].append({"model": prof.model, "tp": prof.tp, "source": prof.source, "errors": errs})
        print(f"{prof.model} tp={prof.tp} ({prof.source})")
        for op, e in errs.items():
            rf = e.get("random_forest_mape")
            print(f"  {op:13s} fit {e['fit_mape']:6.1%}  random forest {rf:6.1%}" if rf is not None else
                  f"  {op:13s} fit {e['fit_mape']:6.1%}")
    Path(args.out).write_text(json.dumps(doc, indent=1) + "\n")


if __name__ == "__main__":
    main()
