"""Which replica gets the next request. Pure Python (no torch): the policies see only the load the
front end tracks per replica, so a simulator or another transport (Ray) can reuse them."""

from __future__ import annotations

import abc
import itertools
from dataclasses import dataclass


@dataclass
class ReplicaLoad:
    """What the front end knows about one replica."""

    outstanding: int = 0  # sequences sent and not finished
    waiting_tokens: int = 0  # prompt tokens of sequences sent that have not produced a token yet
    kv_free_tokens: int = 0  # free KV cache, as the replica last reported it
    alive: bool = True

    @property
    def kv_headroom(self) -> int:
        """Free KV tokens once the prompts already on their way are admitted."""
        return self.kv_free_tokens - self.waiting_tokens


class Router(abc.ABC):
    name = "base"

    def choose(self, loads: list[ReplicaLoad], num_prompt_tokens: int) -> int:
        """Index of the replica for a request of `num_prompt_tokens`; ValueError if none is alive."""
        alive = [i for i, load in enumerate(loads) if load.alive]
        if not alive:
            raise ValueError("no replica is alive")
        return self._choose(loads, alive, num_prompt_tokens)

    @abc.abstractmethod
    def _choose(self, loads: list[ReplicaLoad], alive: list[int], num_prompt_tokens: int) -> int: ...


class RoundRobinRouter(Router):
    name = "round_robin"

    def __init__(self) -> None:
        self._turn = itertools.count()

    def _choose(self, loads: list[ReplicaLoad], alive: list[int], num_prompt_tokens: int) -> int:
        return alive[next(self._turn) % len(alive)]


class LeastOutstandingRouter(Router):
    """Fewest sequences in flight (ties: the lowest index), which follows the replicas' real speed."""

    name = "least_outstanding"

    def _choose(self, loads: list[ReplicaLoad], alive: list[int], num_prompt_tokens: int) -> int:
        return min(alive, key=lambda i: (loads[i].outstanding, i))


class KVAwareRouter(Router):
    """Most free KV cache after the prompts already sent to it (ties: fewest in flight), so that a
    long prompt goes where it is admitted at once instead of queueing or preempting."""

    name = "kv_aware"

    def _choose(self, loads: list[ReplicaLoad], alive: list[int], num_prompt_tokens: int) -> int:
        return max(alive, key=lambda i: (loads[i].kv_headroom, -loads[i].outstanding, -i))


ROUTERS: dict[str, type[Router]] = {r.name: r for r in (RoundRobinRouter, LeastOutstandingRouter, KVAwareRouter)}


def make_router(name: str) -> Router:
    if name not in ROUTERS:
        raise ValueError(f"unknown router {name!r}; choose one of {', '.join(ROUTERS)}")
    return ROUTERS[name]()
