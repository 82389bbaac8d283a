"""Per-request routes along the flow solution by interleaved weighted round robin (IWRR), as in Helix.

Each node (and the coordinator) cycles through its successors in proportion to the flow the max-flow
solution sends them, interleaved (round r visits every successor whose weight is at least r), so a
successor with twice the flow gets every other request rather than two in a row. Successors carrying
under `min_share` of a node's outflow are masked (a sliver of flow is not worth a slow path), and so
are nodes whose KV cache cannot hold one more request; a dead end backtracks to the next choice.
"""

from __future__ import annotations

from collections.abc import Callable

from cadence.plan.cluster import SINK, SOURCE
from cadence.plan.placement import FlowSolution, Placement

Hop = tuple[str, int, int]  # node, first layer run there, end layer (exclusive)


def iwrr_schedule(weights: dict[str, int]) -> list[str]:
    order = list(weights)
    return [n for r in range(1, max(weights.values(), default=0) + 1) for n in order if weights[n] >= r]


class IwrrRouter:
    def __init__(self, placement: Placement, flow: FlowSolution, min_share: float = 0.02, resolution: int = 16):
        self.placement = placement
        self.schedule: dict[str, list[str]] = {}
        self.pointer: dict[str, int] = {}
        out: dict[str, dict[str, float]] = {}
        for (a, b), f in flow.edges.items():
            out.setdefault(a, {})[b] = f
        for a, succ in out.items():
            total = sum(succ.values())
            kept = {b: f for b, f in succ.items() if f >= min_share * total}
            top = max(kept.values(), default=0.0)
            weights = {b: max(1, round(resolution * f / top)) for b, f in sorted(kept.items())}
            self.schedule[a] = iwrr_schedule(weights)
            self.pointer[a] = 0

    def _candidates(self, node: str) -> list[tuple[str, int]]:
        sched, start = self.schedule.get(node, []), self.pointer.get(node, 0)
        seen: dict[str, int] = {}
        for i in range(len(sched)):
            pos = (start + i) % len(sched)
            seen.setdefault(sched[pos], pos)
        return list(seen.items())

    def route(self, fits: Callable[[str, int], bool]) -> list[Hop] | None:
        """A path from the coordinator through all layers back to it, or None if every path is masked."""
        L = self.placement.num_layers
        chosen: list[tuple[str, int]] = []
        budget = [256]  # backtracking steps; a cluster that is that full just waits for a finish

        def walk(node: str, layer: int, path: list[Hop]) -> list[Hop] | None:
            budget[0] -= 1
            if budget[0] < 0:
                return None
            for nxt, pos in self._candidates(node):
                if nxt == SINK:
                    if layer == L:
                        chosen.append((node, pos))
                        return path
                    continue
                s, e = self.placement.ranges[nxt]
                entry = layer if self.placement.partial_inference else s
                if not (s <= layer < e) or entry != layer or any(h[0] == nxt for h in path):
                    continue
                if not fits(nxt, e - entry):
                    continue
                found = walk(nxt, e, [*path, (nxt, entry, e)])
                if found is not None:
                    chosen.append((node, pos))
                    return found
            return None

        path = walk(SOURCE, 0, [])
        if path is not None:
            for node, pos in chosen:  # advance each IWRR pointer past the successor it gave
                self.pointer[node] = (pos + 1) % len(self.schedule[node])
        return path


class SwarmRouter:
    """SWARM's own scheduler (Ryabinin et al., 2023, appendix C), as the Helix paper runs its Swarm baseline.

    Each node (and the coordinator) knows every node of the next stage (a node whose range starts where
    its own ends) and picks one by stride scheduling: the successor with the lowest priority wins and its
    priority grows by an exponential moving average of the time it took to serve earlier requests
    (observed once per request, on its prompt pass: send to finished there). No max-flow solution is used.
    The Helix artifact's settings: initial priority 0.05 s, smoothing 0.8.
    """

    def __init__(self, placement: Placement, initial_s: float = 0.05, smoothing: float = 0.8) -> None:
        self.placement = placement
        self.smoothing = smoothing
        L = placement.num_layers
        by_start: dict[int, list[str]] = {}
        for n, (s, _) in sorted(placement.ranges.items()):
            by_start.setdefault(s, []).append(n)
        self.next: dict[str, list[str]] = {SOURCE: by_start.get(0, [])}
        for n, (_, e) in placement.ranges.items():
            self.next[n] = [SINK] if e == L else by_start.get(e, [])
        # no backtracking: drop successors from which the model's end cannot be reached
        alive = {SINK}
        for n in sorted(placement.ranges, key=lambda n: -placement.ranges[n][0]):
            if any(b in alive for b in self.next[n]):
                alive.add(n)
        self.next = {a: [b for b in succ if b in alive] for a, succ in self.next.items()}
        self.ema = {(a, b): initial_s for a, succ in self.next.items() for b in succ}
        self.priority = dict.fromkeys(self.ema, 0.0)

    def route(self, fits: Callable[[str, int], bool]) -> list[Hop] | None:
        path: list[Hop] = []
        node, layer = SOURCE, 0
        while layer < self.placement.num_layers:
            options = [b for b in self.next.get(node, []) if b != SINK and fits(b, self.placement.layers(b))]
            if not options:
                return None
            nxt = min(options, key=lambda b: (self.priority[(node, b)], b))
            path.append((nxt, layer, self.placement.ranges[nxt][1]))
            node, layer = nxt, self.placement.ranges[nxt][1]
        for (a, _, _), (b, _, _) in zip([(SOURCE, 0, 0), *path], path, strict=False):
            self.priority[(a, b)] += self.ema[(a, b)]
        return path

    def observe(self, src: str, dst: str, seconds: float) -> None:
        """A request sent from `src` was served by `dst` `seconds` later."""
        key = (src, dst)
        if key in self.ema:
            self.ema[key] = self.smoothing * seconds + (1 - self.smoothing) * self.ema[key]
