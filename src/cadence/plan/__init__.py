"""Helix-style placement of one model over a heterogeneous GPU cluster: max flow, MILP, IWRR routing."""

from __future__ import annotations

from cadence.plan.cluster import Cluster, load_cluster, parse_cluster
from cadence.plan.errors import PlanError
from cadence.plan.milp import MilpConfig, solve_milp
from cadence.plan.model import ModelSpec, get_model
from cadence.plan.placement import Placement, max_flow
from cadence.plan.planner import plan
from cadence.plan.simulator import SimConfig, simulate
from cadence.plan.throughput import ThroughputConfig, ThroughputModel

__all__ = [
    "Cluster", "MilpConfig", "ModelSpec", "Placement", "PlanError", "SimConfig", "ThroughputConfig",
    "ThroughputModel", "get_model", "load_cluster", "max_flow", "parse_cluster", "plan", "simulate", "solve_milp",
]
