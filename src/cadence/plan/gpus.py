"""GPU spec table: peak compute, memory bandwidth and memory per card, loaded from configs/gpus.yaml."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path

import yaml

from cadence.plan.errors import PlanError


@dataclass(frozen=True)
class GpuSpec:
    """One card: dense bf16 TFLOP/s, bandwidth (GB/s), memory (GB), achievable shares of each peak."""

    name: str
    tflops: float
    bandwidth_gbs: float
    memory_gb: float
    mfu: float = 0.5
    mbu: float = 0.7


def _parse(data: object, source: str) -> dict[str, GpuSpec]:
    if not isinstance(data, dict) or not isinstance(data.get("gpus"), dict):
        raise PlanError(f"{source}: expected a mapping with a 'gpus' table")
    table: dict[str, GpuSpec] = {}
    for name, row in data["gpus"].items():
        if not isinstance(row, dict):
            raise PlanError(f"{source}: GPU {name!r} must be a mapping of specs")
        try:
            spec = GpuSpec(name=str(name), **{k: float(v) for k, v in row.items()})
        except (TypeError, ValueError) as exc:
            raise PlanError(f"{source}: GPU {name!r}: {exc}") from None
        if min(spec.tflops, spec.bandwidth_gbs, spec.memory_gb) <= 0 or not 0 < spec.mfu <= 1 or not 0 < spec.mbu <= 1:
            raise PlanError(f"{source}: GPU {name!r} needs positive specs and mfu/mbu in (0, 1]")
        table[spec.name.upper()] = spec
    return table


@cache
def builtin_gpus() -> dict[str, GpuSpec]:
    text = resources.files("cadence").joinpath("configs/gpus.yaml").read_text()
    return _parse(yaml.safe_load(text), "configs/gpus.yaml")


def load_gpus(path: str | Path | None = None) -> dict[str, GpuSpec]:
    """The built-in table, with entries from `path` (same format) added or replacing built-ins."""
    table = dict(builtin_gpus())
    if path is not None:
        try:
            data = yaml.safe_load(Path(path).read_text())
        except (OSError, yaml.YAMLError) as exc:
            raise PlanError(f"GPU table {path}: {exc}") from None
        table.update(_parse(data, str(path)))
    return table


def lookup_gpu(name: str, table: dict[str, GpuSpec]) -> GpuSpec:
    try:
        return table[name.upper()]
    except KeyError:
        known = ", ".join(sorted(s.name for s in table.values()))
        raise PlanError(f"unknown GPU type {name!r} (known: {known}; add it with --gpus FILE)") from None
