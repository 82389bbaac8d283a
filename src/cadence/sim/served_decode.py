"""The served decode step: a linear fit, corrected by the sweep's own residuals.

A decode-only step's time on the GPU is not linear in its batch and contexts: PyTorch's flash
kernel takes a split-KV route for few requests and the engine packs grouped heads for many
(`runtime/attention/flash.py`), and the split route's time follows the longest context in steps
(the H100 served sweep, qwen3-0.6b: 8 requests of 1,024 tokens 2.57 ms, of 128..2,048 tokens 3.02
ms, of 2,048 tokens 3.30 ms, and 32 requests of 4,096 tokens 7.4 ms against 16 of them 4.9 ms). A
linear fit t = a + b*batch + c*sum + d*longest (`fits.served_decode_features`) gets the trend;
the ratio of each swept point to it is interpolated over (log2 batch, log2 longest context,
mean/longest context) and multiplies the fit. A batch more spread than the sweep's widest takes
that spread's ratio; outside the swept batches and contexts the nearest point's ratio holds, so the
linear fit extrapolates (longer contexts, larger batches) with the edge's correction.

Queries are memoized on a grid (batch; quarter-octave of the longest context; mean/longest in
steps of 1/32): a simulation asks for the same few thousand cells millions of times.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy.interpolate import LinearNDInterpolator, NearestNDInterpolator
from scipy.spatial import QhullError

from cadence.sim.fits import fit_linear, served_decode_features
from cadence.sim.profile_data import Point


def _coords(batch: float, longest: float, mean: float) -> list[float]:
    return [math.log2(max(batch, 1.0)), math.log2(max(longest, 1.0)), min(1.0, mean / longest) if longest else 1.0]


class ServedDecodeModel:
    def __init__(self, points: Sequence[Point]) -> None:
        self._fit = fit_linear("served_decode", points)
        self.coef = self._fit.coef
        xs = np.array([_coords(p.batch, p.tokens or p.context, p.context) for p in points], dtype=float)
        ratio = np.array([p.time_s / max(self._linear(p.batch, p.batch * p.context, p.tokens or p.context), 1e-9)
                          for p in points])
        self._dims = 3 if np.ptp(xs[:, 2]) > 1e-6 else 2  # older profiles: equal contexts only
        self._rho = (float(xs[:, 2].min()), float(xs[:, 2].max()))
        xs = xs[:, :self._dims]
        self._near = NearestNDInterpolator(xs, ratio)
        try:
            self._lin: LinearNDInterpolator | None = LinearNDInterpolator(xs, ratio)
        except (QhullError, ValueError):  # too few or degenerate points: nearest only
            self._lin = None
        self._cache: dict[tuple[int, int, int], float] = {}

    def _linear(self, batch: float, ctx_sum: float, longest: float) -> float:
        return float(self._fit(served_decode_features(batch, ctx_sum, longest)))

    def ratio(self, batch: int, ctx_sum: int, longest: int) -> float:
        mean = ctx_sum / batch if batch else 0.0
        key = (batch, round(4 * math.log2(max(longest, 1))), round(32 * (mean / longest if longest else 1.0)))
        r = self._cache.get(key)
        if r is None:
            c = _coords(batch, 2 ** (key[1] / 4), key[2] / 32 * 2 ** (key[1] / 4))
            c[2] = min(max(c[2], self._rho[0]), self._rho[1])  # more spread than swept: the widest spread's
            q = np.array([c[:self._dims]])
            v = float(self._lin(q)[0]) if self._lin is not None else math.nan
            r = self._cache[key] = v if math.isfinite(v) else float(self._near(q)[0])
        return r

    def __call__(self, batch: int, ctx_sum: int, longest: int | None = None) -> float:
        """Seconds of a decode-only step; `longest` unknown: the mean."""
        if longest is None:
            longest = max(1, round(ctx_sum / batch)) if batch else 1
        return self._linear(batch, ctx_sum, longest) * self.ratio(batch, ctx_sum, longest)

    def slope(self, batch: int, ctx_sum: int, longest: int, requests: int | None = None) -> float:
        """Growth a step when every request gains one key (the fit's, times the local ratio);
        `requests`: those that gain one (fewer than `batch` when the batch is a padded bucket)."""
        _, _, e2, e3 = self.coef
        return (e2 * (batch if requests is None else requests) + e3) * self.ratio(batch, ctx_sum, longest)
