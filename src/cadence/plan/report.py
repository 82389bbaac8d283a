"""What `cadence plan` prints and writes: a placement table, a summary dict, a PNG of the flow graph."""

from __future__ import annotations

from pathlib import Path

from cadence.plan.cluster import SINK, SOURCE, Cluster
from cadence.plan.placement import FlowSolution, Placement
from cadence.plan.throughput import ThroughputModel


def placement_table(cluster: Cluster, tm: ThroughputModel, placement: Placement, flow: FlowSolution) -> str:
    rows = [f"{'node':<12} {'gpu':<8} {'region':<12} {'layers':<10} {'#':>3} {'cap tok/s':>10} {'flow tok/s':>10}"]
    for node in cluster.nodes:
        rng = placement.ranges.get(node.name)
        if rng is None:
            rows.append(f"{node.name:<12} {node.label:<8} {node.region:<12} {'-':<10} {0:>3} {0:>10} {0:>10}")
            continue
        k = rng[1] - rng[0]
        rows.append(
            f"{node.name:<12} {node.label:<8} {node.region:<12} {f'{rng[0]}-{rng[1] - 1}':<10} {k:>3} "
            f"{tm.capacity(node, k):>10.0f} {flow.through(node.name):>10.0f}"
        )
    return "\n".join(rows)


def draw_flow(cluster: Cluster, placement: Placement, flow: FlowSolution, path: str | Path, title: str = "") -> None:
    """Nodes laid out by the layer they start at (x) and stacked (y); edge width ~ flow."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import networkx as nx

    L = placement.num_layers
    g = nx.DiGraph()
    pos: dict[str, tuple[float, float]] = {SOURCE: (-0.08 * L, 0.0), SINK: (1.08 * L, 0.0)}
    stack: dict[int, int] = {}
    for node in cluster.nodes:
        rng = placement.ranges.get(node.name)
        if rng is None or flow.through(node.name) <= 0:
            continue
        mid = (rng[0] + rng[1]) / 2
        level = stack.get(round(mid), 0)
        stack[round(mid)] = level + 1
        pos[node.name] = (mid, (level + 1) // 2 * (1 if level % 2 else -1))
        g.add_node(node.name, label=f"{node.name}\n{node.label} {rng[0]}-{rng[1] - 1}")
    g.add_nodes_from([SOURCE, SINK])
    top = max(flow.edges.values(), default=1.0)
    for (a, b), f in flow.edges.items():
        if a in pos and b in pos:
            g.add_edge(a, b, weight=f)
    fig, ax = plt.subplots(figsize=(max(8, L / 5), 6))
    colors = {"A100": "tab:red", "H100": "tab:purple", "L4": "tab:green", "T4": "tab:blue", "V100": "tab:orange"}
    node_colors = [
        "lightgray" if n in (SOURCE, SINK) else colors.get(cluster.node(n).gpu.name, "tab:gray") for n in g.nodes
    ]
    nx.draw_networkx_nodes(g, pos, ax=ax, node_color=node_colors, node_size=500, alpha=0.85)
    nx.draw_networkx_labels(g, pos, ax=ax, font_size=6,
                            labels={n: g.nodes[n].get("label", n) for n in g.nodes})
    widths = [0.5 + 5 * g.edges[e]["weight"] / top for e in g.edges]
    nx.draw_networkx_edges(g, pos, ax=ax, width=widths, alpha=0.5, arrows=True, arrowsize=8,
                           connectionstyle="arc3,rad=0.1")
    ax.set_title(title or f"{placement.method}: max flow {flow.value:.0f} tokens/s")
    ax.set_xlabel("layer")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
