"""The operator profile on disk: one CSV row per measured point.

Columns: op, tokens, batch, context, time_s, model, tp, device, source. `tokens` is the step's tokens
(for attn_prefill: the chunk's new tokens), `batch` the requests (attn_decode, sampler, cpu_step),
`context` the keys attended per request (attention only; for served_decode the mean, with the
longest in `tokens`). source is "measured" (cadence profile on a
GPU) or "analytic-roofline" (generated, never to be mistaken for a measurement).
"""

from __future__ import annotations

import csv
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from cadence.sim.errors import SimInputError
from cadence.sim.operators import ALL_OPS, SERVED_OPS

FIELDS = ("op", "tokens", "batch", "context", "time_s", "model", "tp", "device", "source")


@dataclass(frozen=True)
class Point:
    op: str
    tokens: int
    batch: int
    context: int
    time_s: float


@dataclass
class Profile:
    model: str
    tp: int
    device: str
    source: str
    points: list[Point] = field(default_factory=list)

    def by_op(self) -> dict[str, list[Point]]:
        out: dict[str, list[Point]] = defaultdict(list)
        for p in self.points:
            out[p.op].append(p)
        return out

    def add(self, op: str, time_s: float, tokens: int = 0, batch: int = 0, context: int = 0) -> None:
        self.points.append(Point(op, tokens, batch, context, time_s))

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(FIELDS)
            for p in self.points:
                w.writerow((p.op, p.tokens, p.batch, p.context, f"{p.time_s:.9g}", self.model, self.tp,
                            self.device, self.source))
        return path


def load_profile(path: str | Path) -> Profile:
    path = Path(path)
    if not path.is_file():
        raise SimInputError(f"profile {path} does not exist (make one with `cadence profile`, or "
                            f"`cadence profile --analytic` for a roofline stand-in)")
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise SimInputError(f"profile {path} holds no rows")
    missing = set(FIELDS) - set(rows[0])
    if missing:
        raise SimInputError(f"profile {path} lacks columns {', '.join(sorted(missing))}")
    head = rows[0]
    prof = Profile(head["model"], int(head["tp"]), head["device"], head["source"])
    for r in rows:
        if r["op"] not in ALL_OPS and r["op"] not in SERVED_OPS:
            raise SimInputError(f"profile {path}: unknown operator {r['op']!r}")
        if (r["model"], int(r["tp"])) != (prof.model, prof.tp):
            raise SimInputError(f"profile {path} mixes models or TP degrees ({r['model']} tp={r['tp']})")
        prof.add(r["op"], float(r["time_s"]), int(r["tokens"]), int(r["batch"]), int(r["context"]))
    return prof
