"""Node and link capacities in decode tokens per second: a roofline model, overridable by measurements.

A node holding k of the model's L layers keeps as many requests resident as the memory left after the
weights holds in KV cache. A resident request sits at this node only part of its time (it also waits
on the other stages of its path), about k/L of it in a balanced pipeline, so a decode iteration here
batches about resident x k/L requests (capped at `max_batch`): the pipeline-bubble effect every
pipeline-parallel engine has, and what the simulator reproduces. One iteration reads the k layers'
weights and the batch's KV cache and does 2 FLOPs per parameter per token, so it takes the longer of
memory time and compute time. A request's prompt is charged as compute (prefill runs at a batch where
weights are read once for many tokens). Capacity = output tokens per second the node pushes through its
k layers. Measured numbers (tokens/s per layer count) replace the roofline where given and scale it
where not (calibration: the median measured/roofline ratio of that node type).
"""

from __future__ import annotations

import csv
import statistics
from dataclasses import dataclass, field
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
    reserve_share: float = field(default=0.05, metadata={"help": "memory kept for activations and runtime"})
    max_batch: int = field(default=256, metadata={"help": "most requests one node batches in a decode step"})
    prompt_tokens: int = field(default=512, metadata={"help": "average prompt length the plan is made for"})
    output_tokens: int = field(default=128, metadata={"help": "average output length the plan is made for"})
    tp_efficiency: float = field(default=0.9, metadata={"help": "scaling of a multi-GPU node's cards"})
    iteration_overhead_ms: float = field(default=2.0, metadata={"help": "fixed cost of one iteration"})

    def __post_init__(self) -> None:
        if not 0 < self.weight_share <= 1 or not 0 <= self.reserve_share < 1:
            raise PlanError("weight share must be in (0, 1] and reserve share in [0, 1)")
        if self.max_batch < 1 or self.prompt_tokens < 1 or self.output_tokens < 1:
            raise PlanError("max batch, prompt and output tokens must be positive")


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

    # -- memory --------------------------------------------------------------------------
    def max_layers(self, node: Node) -> int:
        fit = int(self.config.weight_share * node.memory_bytes // self.model.layer_bytes)
        return max(0, min(fit, self.model.num_layers))

    def kv_budget_bytes(self, node: Node, layers: int) -> float:
        usable = node.memory_bytes * (1 - self.config.reserve_share)
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

    def batch(self, node: Node, layers: int) -> float:
        """Decode batch of one iteration: the resident requests that are at this stage right now."""
        return min(self.resident(node, layers) * layers / self.model.num_layers, float(self.config.max_batch))

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
        if self.resident(node, layers) < 1:
            return 0.0
        b = max(self.batch(node, layers), 1.0)
        c = self.config
        context = c.prompt_tokens + c.output_tokens / 2
        decode = self.iteration_time(node, layers, b * layers, b * context * layers) / b
        flops_s, _ = self._peaks(node)
        prefill = 2.0 * self.model.params_per_layer * layers * c.prompt_tokens / flops_s
        return c.output_tokens / (c.output_tokens * decode + prefill)

    def _capacity_uncached(self, node: Node, layers: int) -> float:
        if layers <= 0 or layers > self.max_layers(node):
            return 0.0
        label = node.label.upper()
        if (label, layers) in self.measured:
            return self.measured[(label, layers)]
        base = self.roofline_capacity(node, layers)
        ratios = [v / r for (g, k), v in self.measured.items() if g == label and (r := self.roofline_capacity(node, k)) > 0]
        return base * statistics.median(ratios) if ratios else base

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
