"""Torch side of the engine: building a step's tensors, attention backends, sampling."""
