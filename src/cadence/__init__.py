"""Cadence: serve large language models fast, measure them honestly, plan deployments."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["LLM", "SamplingParams", "__version__"]


def __getattr__(name: str):
    # Lazy: `import cadence` must stay cheap (and torch-free) for the core, bench and plan tools.
    if name == "LLM":
        from cadence.engine.llm import LLM

        return LLM
    if name == "SamplingParams":
        from cadence.core.sampling_params import SamplingParams

        return SamplingParams
    raise AttributeError(name)
