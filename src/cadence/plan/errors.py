"""The one error the planner raises for bad input: the CLI prints it and exits 2."""

from __future__ import annotations


class PlanError(ValueError):
    """A cluster, model or option the planner cannot work with; the message names the problem."""
