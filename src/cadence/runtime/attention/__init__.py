"""Attention backends, one file each, chosen by name."""

from __future__ import annotations

from cadence.runtime.attention.base import AttentionBackend
from cadence.runtime.attention.torch_ref import TorchAttentionBackend

BACKENDS: dict[str, type[AttentionBackend]] = {"torch": TorchAttentionBackend}


def backend_class(name: str) -> type[AttentionBackend]:
    if name not in BACKENDS:
        raise ValueError(f"unknown attention backend {name!r}; available here: {', '.join(BACKENDS)}")
    return BACKENDS[name]


__all__ = ["BACKENDS", "AttentionBackend", "TorchAttentionBackend", "backend_class"]
