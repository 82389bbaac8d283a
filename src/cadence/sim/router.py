"""The global router: which replica a new request goes to."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

ROUTERS = ("round_robin", "least_outstanding", "least_kv")


class RoutedReplica(Protocol):
    outstanding: int

    def kv_usage(self) -> float: ...


class Router:
    def __init__(self, policy: str) -> None:
        if policy not in ROUTERS:
            raise ValueError(f"unknown router {policy!r}; choose one of {', '.join(ROUTERS)}")
        self.policy = policy
        self._next = 0

    @property
    def state_dependent(self) -> bool:
        """Whether a decision reads replica state (the simulator must then have it exact at arrivals)."""
        return self.policy != "round_robin"

    def pick(self, replicas: Sequence[RoutedReplica]) -> int:
        if self.policy == "round_robin":
            i = self._next % len(replicas)
            self._next += 1
            return i
        if self.policy == "least_outstanding":
            return min(range(len(replicas)), key=lambda i: (replicas[i].outstanding, i))
        return min(range(len(replicas)), key=lambda i: (replicas[i].kv_usage(), replicas[i].outstanding, i))
