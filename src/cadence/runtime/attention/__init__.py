"""Attention backends, one file each, chosen by name."""

from __future__ import annotations

from cadence.runtime.attention.base import AttentionBackend
from cadence.runtime.attention.paged import PagedAttentionBackend
from cadence.runtime.attention.torch_ref import TorchAttentionBackend
from cadence.runtime.attention.vattention import VAttentionBackend

BACKENDS: dict[str, type[AttentionBackend]] = {
    "torch": TorchAttentionBackend,
    "vattention": VAttentionBackend,
    "paged": PagedAttentionBackend,
}


def backend_class(name: str) -> type[AttentionBackend]:
    if name not in BACKENDS:
        raise ValueError(f"unknown attention backend {name!r}; available here: {', '.join(BACKENDS)}")
    return BACKENDS[name]


__all__ = ["BACKENDS", "AttentionBackend", "PagedAttentionBackend", "TorchAttentionBackend", "VAttentionBackend",
           "backend_class"]
