"""Served-step calibration: what the engine's own step trace says a step costs when it serves.

Operator profiles time each op alone on ideal inputs (contiguous K/V, launch overhead stripped);
the engine serving traffic runs the same ops over its real KV layout, inside CUDA graphs, with the
host's scheduling, input building, page mapping and output handling around them. The step trace
(`CADENCE_STEP_TRACE`, one row per step) measures the whole thing, so a profile can carry three more
operators fitted from it:

- `served_decode`: a decode-only step's execute time (forward + sampling, GPU-bound), keyed by its
  batch, mean context per request (`context`) and longest context (`tokens`; 0 in older profiles:
  the mean). Fitted as t = a + b*batch + c*sum(context) + d*longest: the sum term is K/V bandwidth,
  the longest term the serial walk of one request's context by its thread blocks, which dominates
  when few long requests leave most of the GPU idle.
- `served_host`: the step's host time outside the GPU wait (schedule + input building incl. page
  mapping + update and outputs + the serving loop's gap before the next step), keyed by requests
  and new prefill tokens: t = a + b*requests + c*prefill tokens.
- `served_eager`: the execute time of eager steps that carry a few prefill tokens (engines run
  with `--no-piecewise-graphs`, or older traces; with piecewise graphs such steps are graphed and
  give no points). Eagerly, the host's launch of ~30 kernels a layer takes longer than the device's
  work: the step cannot be shorter than this floor, whatever the op sum says. The predictor takes
  the median as the floor of every step with prefill tokens.
- `served_prefill`: a piecewise-graphed prefill step's execute time less its attention (the
  operator profile's prefill attention for its one chunk), keyed by the token bucket it ran at
  (`padded_tokens`): the dense layers, norms, LM head and sampler of a step of that bucket as
  replayed. From one-request prefill-only steps (the served sweep's prefill phase).
- `served_request_in`, `served_request_out` (`request_path_points`, from a served probe: `cadence
  serve` + `cadence bench` at a low rate): the time from the client's send to the engine's
  scheduling of a request on an idle engine (HTTP, tokenization, the pipe to the engine process),
  and from the end of its first step to the client's first token (outputs back through the pipe,
  detokenization, the SSE chunk), beyond the step itself.

Calibrate from traces of a *different* workload than the one a fidelity check then predicts.
"""

from __future__ import annotations

import csv
import gzip
import math
import statistics
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path

from cadence.sim.errors import SimInputError
from cadence.sim.fits import fit_linear
from cadence.sim.profile_data import Profile
from cadence.sim.shapes import model_config

TRACE_COLUMNS = ("start", "schedule_s", "prepare_s", "execute_s", "update_s", "num_seqs", "num_decodes",
                 "num_prefill_tokens", "num_context_tokens")
MAX_LOOP_GAP_S = 0.02  # a longer gap between steps is an idle engine waiting for requests, not overhead
# Eager steps with prefill tokens (without piecewise graphs, only decode-only steps replay CUDA graphs): up to this many
# prefill tokens the H100 finishes its part before the host has launched the whole forward, so the
# step's execute time is the host's eager launch time (the "eager floor"): ~20-25 ms on both shapes
# in the served sweep and the W2 fidelity runs, nearly flat from 2 to 1,000 tokens.
EAGER_FLOOR_MAX_TOKENS = 256


def read_step_trace(path: str | Path) -> list[dict[str, float]]:
    path = Path(path)
    if not path.is_file():
        raise SimInputError(f"step trace {path} does not exist (serve with CADENCE_STEP_TRACE=FILE)")
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise SimInputError(f"step trace {path} holds no steps")
    missing = [c for c in TRACE_COLUMNS if c not in rows[0]]
    if missing:
        raise SimInputError(f"step trace {path} lacks columns {', '.join(missing)}")
    try:
        return [{**{c: float(r[c]) for c in TRACE_COLUMNS}, "overlapped": float(r.get("overlapped") or 0),
                 "graphed": float(r.get("graphed") or 0), "max_context_tokens": float(r.get("max_context_tokens") or 0),
                 "padded_tokens": float(r.get("padded_tokens") or 0)}  # 0: an older trace without it
                for r in rows]
    except ValueError as exc:
        raise SimInputError(f"step trace {path}: {exc}") from None


def _bin(x: float) -> int:
    """Quarter-octave bins: steps of similar size share one median point."""
    return 0 if x <= 0 else round(2 ** (round(math.log2(x) * 4) / 4))


def _loop_gap(rows: list[dict[str, float]], i: int) -> float | None:
    """The serving loop's time between step i's end and the next step's start (None after the last)."""
    if i + 1 >= len(rows):
        return None
    r = rows[i]
    return rows[i + 1]["start"] - r["start"] - (r["schedule_s"] + r["prepare_s"] + r["execute_s"] + r["update_s"])


def add_served_points(profile: Profile, traces: Iterable[str | Path],
                      host_traces: Iterable[str | Path] = ()) -> dict[str, int]:
    """Append `served_decode`, `served_host`, `served_eager` and `served_prefill` points from step
    traces: the median of the steps in each (requests, quarter-octave of mean and longest context,
    or of prefill tokens) bin; `served_eager` is the execute time of eager steps with few prefill
    tokens (EAGER_FLOOR_MAX_TOKENS), binned by prefill tokens; `served_prefill` per token bucket.
    A graphed decode step is keyed by the batch bucket it ran at. `host_traces`: traces of a served
    engine (a loaded probe): `served_host` comes from them alone, since a bare engine (the sweep)
    has no front end to stream to between steps. Returns the steps used."""
    host_traces = list(host_traces)
    dec: dict[tuple[int, int, int], list[float]] = defaultdict(list)
    host_bins: dict[tuple[int, int], list[float]] = defaultdict(list)
    eager: dict[int, list[float]] = defaultdict(list)
    pre: dict[int, list[float]] = defaultdict(list)
    attn = _prefill_attention(profile)
    n_dec = n_host = n_eager = n_pre = 0
    for path in [*traces, *host_traces]:
        host_only = path in host_traces
        rows = read_step_trace(path)
        for i, r in enumerate(rows):
            b = int(r["num_seqs"])
            if b == 0 or r.get("overlapped"):  # an overlapped step's execute_s is its launch only
                continue
            gap = _loop_gap(rows, i)
            if gap is None or gap > MAX_LOOP_GAP_S or gap < 0:
                continue  # the last step, or the engine went idle after it
            host = r["schedule_s"] + r["prepare_s"] + r["update_s"] + gap
            prefill = int(r["num_prefill_tokens"])
            if host_only or not host_traces:
                host_bins[(b, _bin(prefill))].append(host)
                n_host += 1
            if host_only:
                continue
            padded = int(r["padded_tokens"]) if r["graphed"] and r["padded_tokens"] else 0
            if prefill == 0 and int(r["num_decodes"]) == b:
                longest = r["max_context_tokens"] or r["num_context_tokens"] / b
                b = max(b, padded)  # a decode graph's padded rows run the dense layers too
                dec[(b, _bin(r["num_context_tokens"] / b), _bin(longest))].append(r["execute_s"])
                n_dec += 1
            elif 0 < prefill <= EAGER_FLOOR_MAX_TOKENS and not r.get("graphed"):
                eager[_bin(prefill)].append(r["execute_s"])
                n_eager += 1
            if padded and prefill and b == 1 and attn is not None:  # one chunk: its attention is known
                pre[padded].append(r["execute_s"] - attn(prefill, int(r["num_context_tokens"])))
                n_pre += 1
    if not n_dec:
        raise SimInputError("the step traces hold no decode-only steps to calibrate from")
    for (b, ctx, longest), ts in sorted(dec.items()):
        profile.add("served_decode", statistics.median(ts), batch=b, context=ctx, tokens=max(longest, ctx))
    for (b, prefill), ts in sorted(host_bins.items()):
        profile.add("served_host", statistics.median(ts), tokens=prefill, batch=b)
    for prefill, ts in sorted(eager.items()):
        profile.add("served_eager", statistics.median(ts), tokens=prefill, batch=1)
    for padded, ts in sorted(pre.items()):
        profile.add("served_prefill", max(0.0, statistics.median(ts)), tokens=padded, batch=1)
    return {"served_decode": n_dec, "served_host": n_host, "served_eager": n_eager, "served_prefill": n_pre}


def _prefill_attention(profile: Profile):
    """(chunk tokens, keys after it) -> the whole model's prefill attention time, from the operator
    profile's fit (None without attention points)."""
    points = profile.by_op().get("attn_prefill")
    if not points:
        return None
    a, b, c, d = fit_linear("attn_prefill", points).coef
    layers = model_config(profile.model).num_layers
    return lambda q, kv: layers * (a + b * q + c * q * (kv - q / 2) + d * kv)


def request_path_points(profile: Profile, requests_csv: str | Path, trace: str | Path) -> dict[str, float]:
    """Add `served_request_in` and `served_request_out` from a served probe: the bench's requests
    (requests.csv) and the engine's step trace of the same run, on an idle engine (one request at a
    time). In: median of send -> first scheduled. Out: median of first scheduled -> first token,
    less the median first step as the simulator counts it (its start to the next step's start)."""
    path = Path(requests_csv)
    if not path.is_file():
        raise SimInputError(f"probe requests {path} do not exist (run the probe: benchmarks/sim_fidelity.py probe)")
    with open(path, newline="") as f:
        rows = [r for r in csv.DictReader(f) if not r.get("error") and r.get("first_scheduled_time")]
    if len(rows) < 5:
        raise SimInputError(f"probe requests {path} hold {len(rows)} answered requests with a scheduling time; "
                            "need at least 5")
    send_in = [float(r["first_scheduled_time"]) - float(r["send_time"]) for r in rows]
    to_first = [float(r["first_token_time"]) - float(r["first_scheduled_time"]) for r in rows]
    steps = read_step_trace(trace)
    first = [steps[i + 1]["start"] - r["start"] for i, r in enumerate(steps[:-1])
             if r["num_seqs"] == 1 and r["num_decodes"] == 0 and r["num_prefill_tokens"] > 0
             and _loop_gap(steps, i) <= MAX_LOOP_GAP_S]
    if not first:
        raise SimInputError(f"step trace {trace} holds no lone prefill step followed by another step")
    d_in = max(0.0, statistics.median(send_in))
    d_out = max(0.0, statistics.median(to_first) - statistics.median(first))
    profile.add("served_request_in", d_in)
    profile.add("served_request_out", d_out)
    return {"served_request_in": d_in, "served_request_out": d_out, "requests": len(rows), "first_steps": len(first)}
