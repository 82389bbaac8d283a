"""Node and link capacities in decode tokens per second: a roofline model, overridable by measurements.

The same physics the simulator runs (`iteration_time`), reduced to one table per node type:

- A node holding k of the model's L layers keeps R(k) requests resident: the KV cache (prompt +
  output) of R(k) requests fits in the memory its weights, the runtime reserve and the activations of
  its largest iteration (a full token budget, or a full decode batch where larger) leave.
- One decode iteration over a batch of b requests reads the k layers' weights and the batch's KV
  cache and does 2 FLOPs per parameter per token: T(b) = overhead + max(memory time, compute time).
  The overhead (`iteration_overhead_ms`) is paid per hop, however few layers the node holds.
- Compute-bound capacity: stall-free batching (Sarathi-Serve) fills every iteration of a busy node to
  the token budget with decode steps and the prompt chunks that feed them (prompt/output prompt tokens
  per decode token), so it serves b = budget / (1 + prompt/output) decode tokens per full iteration.
- Latency budget Lambda (`latency_budget_s`): decode is autoregressive, every output token walks the
  whole route and back to the coordinator before the next one starts, so a node with n requests in
  flight serves n/Lambda tokens/s if the round trip is Lambda (Little's law), n <= R(k).
- A token's hop at a node serving rate c (`node_hop`) is the node's iteration at that load (each
  iteration carries what arrived during the one before: tau = T(c tau), a full token-budget iteration
  once c reaches the compute-bound capacity) plus `hop_wait` of one. A node holding k layers gets the
  share Lambda k / L of the round trip and serves the largest c whose hop fits it and whose c Lambda
  requests fit R(k), so any route through all L layers fits Lambda (links aside) and neither max flow
  nor the MILP needs route-latency constraints.
- With Lambda <= 0 there is no latency budget: capacity is the compute-bound one (tests, unit tables).

Capacity(k) is an arbitrary table, so the MILP's "holds k layers" binaries keep it linear. Measured
numbers (tokens/s per layer count) replace the compute-bound capacity where given and scale it where
not (calibration: the median measured/roofline ratio of that node type).
"""

from __future__ import annotations

import csv
import statistics
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path

import yaml

from cadence.plan.cluster import SINK, SOURCE, Link, Node
from cadence.plan.errors import PlanError
from cadence.plan.model import ModelSpec

TOKEN_ID_BYTES = 4.0


@dataclass(frozen=True)
class ThroughputConfig:
    """Memory split, batch cap and the average request the capacities are computed for."""

    weight_share: float = field(default=0.9, metadata={"help": "most a node's weights may take of its memory"})
    reserve_share: float = field(default=0.05, metadata={"help": "memory kept for the runtime (CUDA context, workspaces)"})
    max_batch: int = field(default=256, metadata={"help": "most requests one node batches in a decode step"})
    token_budget: int = field(
        default=256, metadata={"help": "most tokens one node iteration runs: decode steps first, then prompt chunks "
                                       "(Sarathi-Serve's stall-free batching; sizes the activation memory too)"}
    )
    prompt_tokens: int = field(default=512, metadata={"help": "average prompt length the plan is made for"})
    output_tokens: int = field(default=128, metadata={"help": "average output length the plan is made for"})
    tp_efficiency: float = field(default=0.9, metadata={"help": "scaling of a multi-GPU node's cards"})
    iteration_overhead_ms: float = field(default=2.0, metadata={"help": "fixed cost of one iteration"})
    latency_budget_s: float = field(
        default=0.0, metadata={"help": "round-trip time per output token the plan allows (0: the planner picks; <0: none)"}
    )
    hop_wait: float = field(default=0.5, metadata={"help": "mean wait at a node for the iteration a token arrives during, in iterations"})

    def __post_init__(self) -> None:
        if not 0 < self.weight_share <= 1 or not 0 <= self.reserve_share < 1:
            raise PlanError("weight share must be in (0, 1] and reserve share in [0, 1)")
        if min(self.max_batch, self.prompt_tokens, self.output_tokens, self.token_budget) < 1:
            raise PlanError("max batch, token budget, prompt and output tokens must be positive")


def load_measured(path: str | Path) -> dict[tuple[str, int], float]:
    """Measured capacities: CSV with columns gpu,layers,tokens_per_s, or YAML {gpu: {layers: tokens_per_s}}.

    `gpu` is a node label as the planner prints it ("A100", "2xL4").
    """
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise PlanError(f"throughput table {path}: {exc.strerror or exc}") from None
    table: dict[tuple[str, int], float] = {}
    try:
        if p.suffix.lower() == ".csv":
            for row in csv.DictReader(text.splitlines()):
                table[(row["gpu"].strip().upper(), int(row["layers"]))] = float(row["tokens_per_s"])
        else:
            data = yaml.safe_load(text)
            for gpu, rows in data.items():
                for layers, tps in rows.items():
                    table[(str(gpu).upper(), int(layers))] = float(tps)
    except (KeyError, ValueError, TypeError, AttributeError, yaml.YAMLError) as exc:
        raise PlanError(
            f"throughput table {path}: expected CSV gpu,layers,tokens_per_s or YAML {{gpu: {{layers: tokens_per_s}}}} ({exc})"
        ) from None
    if any(v < 0 for v in table.values()):
        raise PlanError(f"throughput table {path}: tokens per second must not be negative")
    return table


class ThroughputModel:
    """Capacities for one model under one config; cached per (node type, layers)."""

    def __init__(self, model: ModelSpec, config: ThroughputConfig | None = None,
                 measured: dict[tuple[str, int], float] | None = None) -> None:
        self.model = model
        self.config = config or ThroughputConfig()
        self.measured = {(g.upper(), k): v for (g, k), v in (measured or {}).items()}
        self._capacity = lru_cache(maxsize=None)(self._capacity_uncached)
        self._op = lru_cache(maxsize=None)(self._operating_point_uncached)

    # -- memory --------------------------------------------------------------------------
    def max_layers(self, node: Node) -> int:
        fit = int(self.config.weight_share * node.memory_bytes // self.model.layer_bytes)
        return max(0, min(fit, self.model.num_layers))

    def activation_workspace_bytes(self) -> float:
        """Activations of the largest iteration a node runs: a full token budget, or a full decode batch where that is larger."""
        return max(self.config.token_budget, self.config.max_batch) * self.model.activation_peak_bytes_per_token

    def kv_budget_bytes(self, node: Node, layers: int) -> float:
        """Memory left for KV cache next to `layers` layers' weights, the runtime reserve and the activations."""
        if layers <= 0:
            return 0.0
        usable = node.memory_bytes * (1 - self.config.reserve_share) - self.activation_workspace_bytes()
        return max(0.0, usable - layers * self.model.layer_bytes)

    def kv_bytes_per_request(self, layers: int, tokens: int | None = None) -> float:
        c = self.config
        tokens = c.prompt_tokens + c.output_tokens if tokens is None else tokens
        return tokens * layers * self.model.kv_bytes_per_token_layer

    def resident(self, node: Node, layers: int) -> int:
        """Requests whose KV cache (full prompt + output) fits next to `layers` layers' weights."""
        if layers <= 0:
            return 0
        return int(self.kv_budget_bytes(node, layers) // self.kv_bytes_per_request(layers))

    # -- time ----------------------------------------------------------------------------
    def _peaks(self, node: Node) -> tuple[float, float]:
        scale = node.count * (self.config.tp_efficiency if node.count > 1 else 1.0)
        flops = node.gpu.tflops * 1e12 * node.gpu.mfu * scale
        bw = node.gpu.bandwidth_gbs * 1e9 * node.gpu.mbu * scale
        return flops, bw

    def iteration_time(self, node: Node, weight_layers: int, layer_tokens: float, layer_context: float) -> float:
        """Seconds for one iteration that reads `weight_layers` layers' weights, runs `layer_tokens`
        (tokens x layers) and attends over `layer_context` (decode tokens x context x layers) cached tokens."""
        m = self.model
        flops_s, bw = self._peaks(node)
        flops = 2.0 * m.params_per_layer * layer_tokens + 4.0 * m.num_heads * m.dim * layer_context
        bytes_ = weight_layers * m.layer_bytes + layer_context * m.kv_bytes_per_token_layer
        return max(flops / flops_s, bytes_ / bw) + self.config.iteration_overhead_ms / 1e3

    def roofline_capacity(self, node: Node, layers: int) -> float:
        """Compute-bound decode tokens/s under stall-free batching (no latency budget).

        A busy node runs full iterations of `token_budget` tokens: its decode steps and the prompt chunks
        that keep them coming, prompt_tokens / output_tokens prompt tokens per decode token, so b =
        budget / (1 + prompt/output) decode steps per iteration (at most max_batch and the requests its KV
        holds). A chunk's reads of its earlier chunks' KV are left out (under 1 % at these lengths).
        """
        b = self._full_steps(node, layers)
        if b <= 0:
            return 0.0
        return b / self._steps_time(node, layers, b)

    def _full_steps(self, node: Node, layers: int, least_resident: int = 0) -> float:
        """Decode steps of a full token-budget iteration: budget / (1 + prompt/output), at most max_batch
        and the requests the node's KV holds (counted as at least `least_resident`)."""
        c = self.config
        q = c.prompt_tokens / c.output_tokens
        return min(c.token_budget / (1 + q), float(c.max_batch), float(max(self.resident(node, layers), least_resident)))

    def _steps_time(self, node: Node, layers: int, steps: float) -> float:
        """One iteration of `steps` decode steps (at the planned average context) and their prompt chunks."""
        c = self.config
        q = c.prompt_tokens / c.output_tokens
        context = c.prompt_tokens + c.output_tokens / 2
        return self.iteration_time(node, layers, steps * (1 + q) * layers, steps * context * layers)

    def compute_capacity(self, node: Node, layers: int) -> float:
        if layers <= 0 or layers > self.max_layers(node):
            return 0.0
        label = node.label.upper()
        if (label, layers) in self.measured:
            return self.measured[(label, layers)]
        base = self.roofline_capacity(node, layers)
        ratios = [v / r for (g, k), v in self.measured.items() if g == label and (r := self.roofline_capacity(node, k)) > 0]
        return base * statistics.median(ratios) if ratios else base

    def iteration_at(self, node: Node, layers: int, rate: float) -> float:
        """Seconds of one iteration at a node serving `rate` decode tokens/s and their prompts.

        Each iteration carries what arrived during the one before (the decode steps of `rate` x tau and
        their prompt chunks), so tau = T(rate x tau), the least fixed point from an empty iteration
        (overhead and the weights read); from the compute-bound rate on, a full token-budget iteration.
        """
        full = self._full_steps(node, layers, least_resident=1)
        tau = self._steps_time(node, layers, 0.0)
        for _ in range(60):
            b = rate * tau
            if b >= full:
                return self._steps_time(node, layers, full)
            nxt = self._steps_time(node, layers, b)
            if nxt - tau < 1e-9 * tau:
                return nxt
            tau = nxt
        return tau

    def node_hop(self, node: Node, layers: int, rate: float) -> float:
        """Seconds a decode token spends at a node serving `rate` tokens/s: its iteration, plus a
        `hop_wait` share of one for the iteration it arrives during."""
        return (1.0 + self.config.hop_wait) * self.iteration_at(node, layers, rate)

    def _operating_point_uncached(self, node: Node, layers: int) -> tuple[float, float, float]:
        """(capacity tokens/s, requests in flight, hop time s) of `node` holding `layers` layers.

        With a latency budget Lambda, the node gets the layer-proportional share Lambda x k / L of every
        round trip (so any route through all L layers fits in Lambda, links aside): the largest rate c
        whose hop fits that share, with the c x Lambda requests a round trip of Lambda needs in flight
        within R(k) (Little's law) and c within the compute-bound capacity.
        """
        cap = self.compute_capacity(node, layers)
        if cap <= 0:
            return 0.0, 0.0, 0.0
        c = self.config
        R = self.resident(node, layers)
        lam = c.latency_budget_s
        if lam <= 0:
            return cap, float(R), self.node_hop(node, layers, cap)
        share = lam * layers / self.model.num_layers
        if R < 1 or self.node_hop(node, layers, 0.0) > share:
            return 0.0, 0.0, self.node_hop(node, layers, 0.0)
        hi = min(cap, R / lam)
        if self.node_hop(node, layers, hi) > share:
            lo = 0.0
            for _ in range(40):
                mid = (lo + hi) / 2
                lo, hi = (mid, hi) if self.node_hop(node, layers, mid) <= share else (lo, mid)
            hi = lo
        return hi, hi * lam, self.node_hop(node, layers, hi)

    def operating_point(self, node: Node, layers: int) -> tuple[float, float, float]:
        return self._op(node, layers)

    def hop_time(self, node: Node, layers: int) -> float:
        """Seconds a token spends at `node` holding `layers` layers (iteration + mean wait)."""
        return self._op(node, layers)[2]

    def _capacity_uncached(self, node: Node, layers: int) -> float:
        return self._op(node, layers)[0]

    def at_latency(self, latency_budget_s: float) -> ThroughputModel:
        """The same model with another round-trip latency budget."""
        return ThroughputModel(self.model, replace(self.config, latency_budget_s=latency_budget_s), self.measured)

    def capacity(self, node: Node, layers: int) -> float:
        """Decode tokens per second through `layers` layers held by `node` (0 if they do not fit)."""
        return self._capacity(node, layers)

    # -- links ---------------------------------------------------------------------------
    def link_capacity(self, src: str, dst: str, link: Link) -> float:
        """Decode tokens per second a link carries; each output token also carries its share of the prompt."""
        c = self.config
        per_token = (c.prompt_tokens + c.output_tokens) / c.output_tokens
        size = TOKEN_ID_BYTES if src == SOURCE or dst == SINK else self.model.activation_bytes
        return link.bandwidth_bps / (size * per_token)

    def link_time(self, src: str, dst: str, link: Link, batch: float = 1.0) -> float:
        """Seconds one token spends on a link: latency plus sending its iteration's batch."""
        size = TOKEN_ID_BYTES if src == SOURCE or dst == SINK else self.model.activation_bytes
        return link.latency_s + size * max(batch, 1.0) / link.bandwidth_bps
