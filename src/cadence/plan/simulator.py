"""A small discrete-event simulation of one placement serving a request trace.

Requests enter at the coordinator, get a route from the IWRR router (which reserves their KV cache on
every node of the route), and each token walks the route: a node runs one iteration at a time over
what is queued there, timed by the same roofline the planner uses: every decode step (up to the batch
cap), then prompt chunks within the token budget (Sarathi-Serve's stall-free batching: a prompt is cut
into chunks at its first node and each chunk walks the route on its own, so no iteration is stalled by a
whole prompt). A link sends one iteration's activations as one message (serial, bandwidth plus latency).
When a token reaches the coordinator the next decode step starts from it.
Offline mode keeps a backlog at the coordinator (throughput); online mode follows arrival times.
"""

from __future__ import annotations

import heapq
import random
import statistics
from dataclasses import dataclass, field
from typing import NamedTuple

from cadence.plan.cluster import SINK, SOURCE, Cluster
from cadence.plan.placement import FlowSolution, Placement
from cadence.plan.router import Hop, IwrrRouter, SwarmRouter
from cadence.plan.throughput import TOKEN_ID_BYTES, ThroughputModel


@dataclass(frozen=True)
class SimConfig:
    """Trace and length of one simulation."""

    duration_s: float = field(default=60.0, metadata={"help": "simulated seconds"})
    warmup_s: float = field(default=10.0, metadata={"help": "seconds left out of the measurement"})
    arrival_rate: float = field(default=0.0, metadata={"help": "requests/s (Poisson); 0 = offline backlog"})
    seed: int = field(default=0, metadata={"help": "trace seed"})
    min_share: float = field(default=0.02, metadata={"help": "IWRR masks successors under this flow share"})
    max_in_flight: int = field(
        default=0, metadata={"help": "most requests admitted and unfinished at once (0: as many as KV caches hold)"}
    )


@dataclass
class Request:
    rid: int
    arrival: float
    prompt: int
    output: int
    route: list[Hop] = field(default_factory=list)
    generated: int = 0
    first_token: float = -1.0
    last_token: float = -1.0
    finished: float = -1.0
    sent: float = 0.0  # when the current hop's message left the previous node
    cut: int = 0  # prompt tokens cut into chunks so far


@dataclass(frozen=True)
class SimResult:
    throughput: float  # output tokens/s in the measured window
    requests_done: int
    ttft_p50: float
    ttft_p95: float
    tpot_p50: float  # seconds between output tokens
    tpot_p95: float
    mean_hops: float
    node_busy: dict[str, float] = field(default_factory=dict)  # busy share of each node in the window
    node_batch: dict[str, float] = field(default_factory=dict)  # mean decode batch per iteration
    node_hop_s: dict[str, float] = field(default_factory=dict)  # mean decode time per hop: link + wait + iteration
    node_tokens_s: dict[str, float] = field(default_factory=dict)  # decode tokens/s each node served
    node_prompt_tokens_s: dict[str, float] = field(default_factory=dict)  # prompt tokens/s each node ran


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1] if len(values) > 1 else values[0]


ROUTINGS = ("iwrr", "swarm")


class Item(NamedTuple):
    """One request's work at one hop: a decode step (`chunk` 0) or a prompt chunk of `chunk` tokens starting
    at prompt token `offset`; `last` marks the step or chunk that yields a token at the end of the route.
    At a route's first node a prompt waits whole (`chunk` None) and is cut into chunks there."""

    r: Request
    hop: int
    chunk: int | None = 0
    last: bool = True
    offset: int = 0


def pick_batch(queued: list[Item], token_budget: int, max_batch: int) -> tuple[list[Item], list[Item]]:
    """(this iteration, still queued), Sarathi-Serve's stall-free batching: every queued decode step up to
    `max_batch`, then prompt chunks in queue order while the iteration stays within `token_budget` tokens.
    A whole prompt, or a chunk cut upstream, is cut to the room left and its rest stays queued in its place,
    so a request's chunks run in order at every node (its last chunk, the one that yields the first token,
    never overtakes an earlier one)."""
    items, rest, used, decodes = [], [], 0, 0
    for it in queued:
        if it.chunk == 0:
            if decodes < max_batch:
                items.append(it)
                decodes += 1
                used += 1
            else:
                rest.append(it)
    for it in queued:
        if it.chunk == 0:
            continue
        room = token_budget - used
        if room <= 0:
            rest.append(it)
        elif it.chunk is None:
            take = min(it.r.prompt - it.r.cut, room)
            items.append(Item(it.r, it.hop, take, it.r.cut + take == it.r.prompt, it.r.cut))
            it.r.cut += take
            used += take
            if it.r.cut < it.r.prompt:
                rest.append(it)
        else:
            take = min(it.chunk, room)
            items.append(Item(it.r, it.hop, take, it.last and take == it.chunk, it.offset))
            used += take
            if take < it.chunk:
                rest.append(Item(it.r, it.hop, it.chunk - take, it.last, it.offset + take))
    return items, rest


def default_routing(placement: Placement) -> str:
    """The Swarm baseline runs SWARM's own scheduler (as in the Helix paper); everything else IWRR over the flow."""
    return "swarm" if placement.method == "swarm" else "iwrr"


def simulate(cluster: Cluster, tm: ThroughputModel, placement: Placement, flow: FlowSolution,
             config: SimConfig | None = None, routing: str | None = None) -> SimResult:
    cfg = config or SimConfig()
    rng = random.Random(cfg.seed)
    wc = tm.config
    routing = routing or default_routing(placement)
    if routing not in ROUTINGS:
        raise ValueError(f"routing must be one of {ROUTINGS}, not {routing!r}")
    router = SwarmRouter(placement) if routing == "swarm" else IwrrRouter(placement, flow, cfg.min_share)
    kv_free = {n: tm.kv_budget_bytes(cluster.node(n), placement.layers(n)) for n in placement.ranges}
    queue: dict[str, list[Item]] = {n: [] for n in placement.ranges}
    busy = dict.fromkeys(placement.ranges, False)
    link_free: dict[tuple[str, str], float] = {}
    events: list[tuple[float, int, str, object]] = []
    seq = [0]
    waiting: list[Request] = []
    done: list[Request] = []
    tokens_in_window = [0]
    hops: list[int] = []
    busy_s = dict.fromkeys(placement.ranges, 0.0)
    iters = dict.fromkeys(placement.ranges, 0)
    dec_tokens = dict.fromkeys(placement.ranges, 0)
    prompt_tokens = dict.fromkeys(placement.ranges, 0)
    hop_s = dict.fromkeys(placement.ranges, 0.0)

    def push(t: float, kind: str, payload: object) -> None:
        seq[0] += 1
        heapq.heappush(events, (t, seq[0], kind, payload))

    def new_request(now: float) -> Request:
        # lengths spread +-50% around the planned averages
        p = max(1, int(wc.prompt_tokens * rng.uniform(0.5, 1.5)))
        o = max(1, int(wc.output_tokens * rng.uniform(0.5, 1.5)))
        return Request(rid=seq[0], arrival=now, prompt=p, output=o)

    def kv_need(r: Request, layers: int) -> float:
        return tm.kv_bytes_per_request(layers, r.prompt + r.output)

    def send(now: float, src: str, dst: str, nbytes: float, kind: str, payload: object) -> None:
        link = cluster.links[(src, dst)]
        start = max(now, link_free.get((src, dst), 0.0))
        link_free[(src, dst)] = start + nbytes / link.bandwidth_bps
        if kind == "node":
            for it in payload if isinstance(payload, list) else [payload]:
                it.r.sent = now
        push(start + nbytes / link.bandwidth_bps + link.latency_s, kind, payload)

    def admit(now: float) -> None:
        while True:
            if cfg.max_in_flight and len(hops) - len(done) >= cfg.max_in_flight:
                return
            if not waiting:
                if cfg.arrival_rate > 0:
                    return
                waiting.append(new_request(now))
            r = waiting[0]
            route = router.route(lambda n, k, r=r: kv_free[n] >= kv_need(r, k))
            if route is None:
                return
            waiting.pop(0)
            r.route = route
            hops.append(len(route))
            for n, s, e in route:
                kv_free[n] -= kv_need(r, e - s)
            send(now, SOURCE, route[0][0], TOKEN_ID_BYTES * r.prompt, "node", Item(r, 0, None, False))

    def start_iteration(now: float, name: str) -> None:
        items, queue[name] = pick_batch(queue[name], wc.token_budget, wc.max_batch)
        layer_tokens = layer_ctx = 0.0
        for it in items:
            _, s, e = it.r.route[it.hop]
            layer_tokens += (it.chunk or 1) * (e - s)
            # cached tokens read: a decode step's whole context, a chunk's earlier chunks
            layer_ctx += (it.offset if it.chunk else it.r.prompt + it.r.generated) * (e - s)
        t = tm.iteration_time(cluster.node(name), placement.layers(name), layer_tokens, layer_ctx)
        busy[name] = True
        if now >= cfg.warmup_s:
            busy_s[name] += max(0.0, min(now + t, cfg.duration_s) - now)
            iters[name] += 1
            dec_tokens[name] += sum(1 for it in items if not it.chunk)
            prompt_tokens[name] += sum(it.chunk or 0 for it in items)
        push(now + t, "done", (name, items))

    def finish_iteration(now: float, name: str, items: list[Item]) -> None:
        busy[name] = False
        if now >= cfg.warmup_s:
            hop_s[name] += sum(now - it.r.sent for it in items if not it.chunk)
        if isinstance(router, SwarmRouter):  # SWARM learns each server's delay from prompt passes
            for it in items:
                if it.chunk and it.last:
                    router.observe(it.r.route[it.hop - 1][0] if it.hop else SOURCE, name, now - it.r.sent)
        by_dst: dict[str, list[Item]] = {}
        for it in items:
            dst = it.r.route[it.hop + 1][0] if it.hop + 1 < len(it.r.route) else SINK
            by_dst.setdefault(dst, []).append(Item(it.r, it.hop + 1, it.chunk, it.last, it.offset))  # not _replace: hot
        for dst, batch in by_dst.items():
            size = TOKEN_ID_BYTES if dst == SINK else tm.model.activation_bytes
            nbytes = sum(size * (it.chunk or 1) for it in batch)
            send(now, name, dst, nbytes, "sink" if dst == SINK else "node", batch)
        if queue[name]:
            start_iteration(now, name)

    def token_out(now: float, r: Request) -> None:
        r.generated += 1
        if r.first_token < 0:
            r.first_token = now
        r.last_token = now
        if cfg.warmup_s <= now <= cfg.duration_s:
            tokens_in_window[0] += 1
        if r.generated >= r.output:
            r.finished = now
            done.append(r)
            for n, s, e in r.route:
                kv_free[n] += kv_need(r, e - s)
            admit(now)
        else:
            send(now, SOURCE, r.route[0][0], TOKEN_ID_BYTES, "node", Item(r, 0))

    if cfg.arrival_rate > 0:
        t = 0.0
        while t < cfg.duration_s:
            t += rng.expovariate(cfg.arrival_rate)
            push(t, "arrive", None)
    admit(0.0)
    while events:
        now, _, kind, payload = heapq.heappop(events)
        if now > cfg.duration_s:
            break
        if kind == "arrive":
            waiting.append(new_request(now))
            admit(now)
        elif kind == "node":
            batch = payload if isinstance(payload, list) else [payload]
            for it in batch:
                queue[it.r.route[it.hop][0]].append(it)
            name = batch[0].r.route[batch[0].hop][0]
            if not busy[name]:
                start_iteration(now, name)
        elif kind == "done":
            finish_iteration(now, *payload)
        elif kind == "sink":
            for it in payload:
                if it.last:  # a prompt's earlier chunks end at the sink without a token
                    token_out(now, it.r)
    window = max(cfg.duration_s - cfg.warmup_s, 1e-9)
    measured = [r for r in done if r.arrival >= cfg.warmup_s] or done
    ttft = [r.first_token - r.arrival for r in measured]
    tpot = [(r.last_token - r.first_token) / (r.generated - 1) for r in measured if r.generated > 1]
    return SimResult(
        throughput=tokens_in_window[0] / max(cfg.duration_s - cfg.warmup_s, 1e-9),
        requests_done=len(done),
        ttft_p50=_pct(ttft, 50), ttft_p95=_pct(ttft, 95), tpot_p50=_pct(tpot, 50), tpot_p95=_pct(tpot, 95),
        mean_hops=statistics.fmean(hops) if hops else 0.0,
        node_busy={n: round(v / window, 3) for n, v in busy_s.items()},
        node_batch={n: round(dec_tokens[n] / iters[n], 1) for n in iters if iters[n]},
        node_hop_s={n: round(hop_s[n] / dec_tokens[n], 4) for n in iters if dec_tokens[n]},
        node_tokens_s={n: round(dec_tokens[n] / window, 2) for n in iters},
        node_prompt_tokens_s={n: round(prompt_tokens[n] / window, 2) for n in iters},
    )
