"""Per-operator fits from profile points, with physically shaped features, and their held-out error.

- Token-keyed ops (GEMMs, norms, embed, lm_head, sampler, all-reduce): piecewise-linear interpolation
  of the profile over tokens; exact on the grid, linear in between (a GEMM's time is linear in tokens
  once compute-bound, flat while weight-bound; both shapes survive interpolation).
- Decode attention: t = a + b*batch + c*sum(context): it streams every request's K/V once.
- Prefill attention (per request chunk of q tokens over kv keys): t = a + b*q + c*q*(kv - q/2) + d*kv:
  causal attention FLOPs plus reading the keys.
- Engine CPU per step: t = a + b*requests.
Linear fits use non-negative least squares, so no term can go negative when extrapolating.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.optimize import nnls

from cadence.sim.profile_data import Point, Profile


def decode_features(batch: float, ctx_sum: float) -> list[float]:
    return [1.0, batch, ctx_sum]


def prefill_features(q: float, kv: float) -> list[float]:
    return [1.0, q, q * (kv - q / 2), kv]


def cpu_features(batch: float) -> list[float]:
    return [1.0, batch]


def served_decode_features(batch: float, ctx_sum: float, ctx_max: float | None = None) -> list[float]:
    """[1, batch, sum of contexts, longest context] (longest unknown: the mean)."""
    return [1.0, batch, ctx_sum, ctx_max if ctx_max else (ctx_sum / batch if batch else 0.0)]


def served_host_features(batch: float, prefill_tokens: float) -> list[float]:
    return [1.0, batch, prefill_tokens]


LINEAR_OPS = ("attn_decode", "attn_prefill", "cpu_step", "served_decode", "served_host")


def point_features(op: str, p: Point) -> list[float]:
    if op == "served_decode":
        return served_decode_features(p.batch, p.batch * p.context, p.tokens or None)  # tokens: longest context
    if op == "served_host":
        return served_host_features(p.batch, p.tokens)
    if op == "attn_decode":
        return decode_features(p.batch, p.batch * p.context)
    if op == "attn_prefill":
        return prefill_features(p.tokens, p.context)
    if op == "cpu_step":
        return cpu_features(p.batch)
    raise KeyError(op)


def point_key(op: str, p: Point) -> int:
    """The one coordinate a token-keyed op depends on."""
    return p.batch if op == "sampler" else p.tokens


@dataclass(frozen=True)
class LinearFit:
    coef: tuple[float, ...]

    def __call__(self, feats: Sequence[float]) -> float:
        return sum(c * f for c, f in zip(self.coef, feats, strict=True))


@dataclass(frozen=True)
class InterpFit:
    xs: tuple[float, ...]
    ys: tuple[float, ...]

    def __call__(self, x: float) -> float:
        return float(np.interp(x, self.xs, self.ys))

    def table(self, n: int) -> list[float]:
        """Values at 0..n-1, for O(1) lookups in the step loop (0 tokens costs nothing)."""
        out = np.interp(np.arange(n, dtype=float), self.xs, self.ys)
        out[0] = 0.0
        return out.tolist()


def fit_linear(op: str, points: Sequence[Point]) -> LinearFit:
    x = np.array([point_features(op, p) for p in points], dtype=float)
    y = np.array([p.time_s for p in points], dtype=float)
    # Relative error matters (small ops as much as big ones): weight rows by 1/y.
    w = 1.0 / np.maximum(y, 1e-9)
    coef, _ = nnls(x * w[:, None], y * w)
    return LinearFit(tuple(float(c) for c in coef))


def fit_interp(op: str, points: Sequence[Point]) -> InterpFit:
    by_x: dict[int, list[float]] = {}
    for p in points:
        by_x.setdefault(point_key(op, p), []).append(p.time_s)
    xs = sorted(by_x)
    return InterpFit(tuple(float(x) for x in xs), tuple(float(np.median(by_x[x])) for x in xs))


def fit_op(op: str, points: Sequence[Point]) -> Callable[[Point], float]:
    """A predictor of one point of `op`, by the model this module uses for it."""
    if op in LINEAR_OPS:
        f = fit_linear(op, points)
        return lambda p: f(point_features(op, p))
    g = fit_interp(op, points)
    return lambda p: g(point_key(op, p))


def _mape(pred: Sequence[float], true: Sequence[float]) -> float:
    return float(np.mean([abs(a - b) / b for a, b in zip(pred, true, strict=True) if b > 0]))


def heldout_errors(profile: Profile, test_share: float = 0.2, seed: int = 0) -> dict[str, dict]:
    """Per operator: mean absolute percentage error on held-out points of this module's fit and of
    a random forest (scikit-learn, when installed) over the raw coordinates, trained on the same split."""
    try:
        from sklearn.ensemble import RandomForestRegressor
    except ImportError:  # the GPU machine may lack it; the fits need only numpy and scipy
        RandomForestRegressor = None  # noqa: N806

    out = {}
    for op, pts in sorted(profile.by_op().items()):
        if len(pts) < 5 or not any(p.time_s > 0 for p in pts):  # e.g. all-reduce at tp=1
            continue
        rng = random.Random(f"{seed}-{op}")
        idx = list(range(len(pts)))
        rng.shuffle(idx)
        n_test = max(1, int(len(pts) * test_share))
        test = [pts[i] for i in idx[:n_test]]
        train = [pts[i] for i in idx[n_test:]]
        if op not in LINEAR_OPS:
            # Interpolation cannot extrapolate: keep the grid's two ends in the training set.
            keys = [point_key(op, p) for p in pts]
            ends = {min(keys), max(keys)}
            train += [p for p in test if point_key(op, p) in ends]
            test = [p for p in test if point_key(op, p) not in ends]
            if not test:
                continue
        f = fit_op(op, train)
        truth = [p.time_s for p in test]
        out[op] = {"points": len(pts), "test_points": len(test), "fit_mape": _mape([f(p) for p in test], truth)}
        if RandomForestRegressor is not None:
            coords = lambda p: [p.tokens, p.batch, p.context]  # noqa: E731
            rf = RandomForestRegressor(n_estimators=100, random_state=seed)
            rf.fit([coords(p) for p in train], [p.time_s for p in train])
            out[op]["random_forest_mape"] = _mape(rf.predict([coords(p) for p in test]).tolist(), truth)
    return out
