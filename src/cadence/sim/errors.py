"""The one error kind the simulator raises for bad input; the CLIs turn it into exit code 2."""

from __future__ import annotations


class SimInputError(ValueError):
    """A profile that does not cover what is asked, a model that does not fit, an empty trace..."""
