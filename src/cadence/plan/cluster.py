"""Cluster files: GPU nodes in regions, links with bandwidth and latency, a coordinator (source/sink)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml

from cadence.plan.errors import PlanError
from cadence.plan.gpus import GpuSpec, load_gpus, lookup_gpu

SOURCE = "source"
SINK = "sink"


@dataclass(frozen=True)
class Node:
    """One machine: `count` cards of one GPU type working as one tensor-parallel stage."""

    name: str
    gpu: GpuSpec
    count: int
    region: str
    memory_gb: float  # per card

    @property
    def label(self) -> str:
        return f"{self.count}x{self.gpu.name}" if self.count > 1 else self.gpu.name

    @property
    def memory_bytes(self) -> float:
        return self.memory_gb * self.count * 1e9


@dataclass(frozen=True)
class Link:
    bandwidth_bps: float  # bytes per second
    latency_s: float


@dataclass(frozen=True)
class Cluster:
    """Nodes plus directed links; SOURCE and SINK stand for the coordinator that takes and returns requests."""

    name: str
    nodes: tuple[Node, ...]
    links: dict[tuple[str, str], Link] = field(hash=False)
    coordinator_region: str = ""

    def node(self, name: str) -> Node:
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(name)

    @property
    def names(self) -> list[str]:
        return [n.name for n in self.nodes]


def _link_spec(row: object, where: str) -> Link:
    if not isinstance(row, dict) or "bandwidth_gbps" not in row:
        raise PlanError(f"{where}: needs bandwidth_gbps (and latency_ms)")
    try:
        gbps, ms = float(row["bandwidth_gbps"]), float(row.get("latency_ms", 0.0))
    except (TypeError, ValueError):
        raise PlanError(f"{where}: bandwidth_gbps and latency_ms must be numbers") from None
    if gbps < 0 or ms < 0:
        raise PlanError(f"{where}: bandwidth and latency must not be negative")
    return Link(bandwidth_bps=gbps * 1e9 / 8, latency_s=ms / 1e3)


def _expand_nodes(rows: object, gpus: dict[str, GpuSpec], source: str) -> list[Node]:
    if not isinstance(rows, list) or not rows:
        raise PlanError(f"{source}: 'nodes' must be a non-empty list")
    nodes: list[Node] = []
    for i, row in enumerate(rows):
        where = f"{source}: nodes[{i}]"
        if not isinstance(row, dict) or "gpu" not in row:
            raise PlanError(f"{where}: each node needs at least 'gpu'")
        gpu = lookup_gpu(str(row["gpu"]), gpus)
        try:
            count, replicas = int(row.get("count", 1)), int(row.get("replicas", 1))
            memory = float(row.get("memory_gb", gpu.memory_gb))
        except (TypeError, ValueError):
            raise PlanError(f"{where}: count, replicas and memory_gb must be numbers") from None
        if count < 1 or replicas < 1 or memory <= 0:
            raise PlanError(f"{where}: count, replicas and memory_gb must be positive")
        region = str(row.get("region", "default"))
        base = str(row.get("name", f"{count}x{gpu.name}" if count > 1 else gpu.name)).lower()
        for r in range(replicas):
            name = f"{base}-{r}" if replicas > 1 or "name" not in row else base
            nodes.append(Node(name=name, gpu=gpu, count=count, region=region, memory_gb=memory))
    names = [n.name for n in nodes]
    dup = {n for n in names if names.count(n) > 1}
    if dup or SOURCE in names or SINK in names:
        raise PlanError(f"{source}: node names must be unique and not 'source'/'sink' (clash: {sorted(dup)})")
    return nodes


def parse_cluster(data: object, source: str = "<cluster>", gpus: dict[str, GpuSpec] | None = None) -> Cluster:
    if not isinstance(data, dict):
        raise PlanError(f"{source}: a cluster file is a YAML mapping with 'nodes' and 'defaults'")
    gpus = gpus if gpus is not None else load_gpus()
    nodes = _expand_nodes(data.get("nodes"), gpus, source)
    defaults = data.get("defaults") or {}
    if not isinstance(defaults, dict):
        raise PlanError(f"{source}: 'defaults' must be a mapping")
    intra = _link_spec(defaults.get("intra_region", {"bandwidth_gbps": 10, "latency_ms": 1}), f"{source}: defaults.intra_region")
    inter = _link_spec(defaults.get("inter_region", {"bandwidth_gbps": 0.1, "latency_ms": 50}), f"{source}: defaults.inter_region")
    coordinator = str(data.get("coordinator", nodes[0].region))
    pair: dict[frozenset[str], Link] = {}
    for i, row in enumerate(data.get("region_links") or []):
        regions = row.get("regions") if isinstance(row, dict) else None
        if not isinstance(regions, list) or len(regions) != 2:
            raise PlanError(f"{source}: region_links[{i}] needs 'regions: [a, b]'")
        pair[frozenset(map(str, regions))] = _link_spec(row, f"{source}: region_links[{i}]")

    def default(a: str, b: str) -> Link:
        return pair.get(frozenset((a, b)), intra if a == b else inter)

    regions = {n.name: n.region for n in nodes}
    regions[SOURCE] = regions[SINK] = coordinator
    links: dict[tuple[str, str], Link] = {}
    for a in nodes:
        links[(SOURCE, a.name)] = default(coordinator, a.region)
        links[(a.name, SINK)] = default(a.region, coordinator)
        for b in nodes:
            if a.name != b.name:
                links[(a.name, b.name)] = default(a.region, b.region)
    for i, row in enumerate(data.get("links") or []):
        ends = row.get("nodes") if isinstance(row, dict) else None
        if not isinstance(ends, list) or len(ends) != 2 or not all(str(e) in regions for e in ends):
            raise PlanError(f"{source}: links[{i}] needs 'nodes: [a, b]' naming nodes of this cluster (or source/sink)")
        a, b = (str(e) for e in ends)
        spec = _link_spec(row, f"{source}: links[{i}]")
        for key in ((a, b), (b, a)):
            if key[0] != SINK and key[1] != SOURCE:
                links[key] = spec
    links = {k: v for k, v in links.items() if v.bandwidth_bps > 0}
    cluster = Cluster(name=str(data.get("name", Path(source).stem)), nodes=tuple(nodes), links=links,
                      coordinator_region=coordinator)
    check_connected(cluster)
    return cluster


def check_connected(cluster: Cluster) -> None:
    """Every node must be reachable from the coordinator and reach it back; else name the stranded ones."""
    def reach(start: str, forward: bool) -> set[str]:
        seen, todo = {start}, [start]
        while todo:
            cur = todo.pop()
            for a, b in cluster.links:
                nxt = b if forward and a == cur else a if not forward and b == cur else None
                if nxt is not None and nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return seen

    fwd, back = reach(SOURCE, True), reach(SINK, False)
    stranded = [n for n in cluster.names if n not in fwd or n not in back]
    if stranded:
        raise PlanError(f"cluster {cluster.name!r} is disconnected: {', '.join(stranded)} cannot reach the coordinator")


def load_cluster(path: str | Path, gpus: dict[str, GpuSpec] | None = None) -> Cluster:
    """Load a cluster file; a bare name (e.g. 'helix-24') resolves to the shipped configs/clusters/."""
    p = Path(path)
    if not p.exists() and not p.suffix:
        from importlib import resources

        shipped = resources.files("cadence").joinpath(f"configs/clusters/{p.name}.yaml")
        if shipped.is_file():
            return parse_cluster(yaml.safe_load(shipped.read_text()), f"{p.name}.yaml", gpus)
    try:
        data = yaml.safe_load(p.read_text())
    except OSError as exc:
        raise PlanError(f"cluster file {path}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise PlanError(f"cluster file {path} is not valid YAML: {exc}") from None
    return parse_cluster(data, str(path), gpus)
