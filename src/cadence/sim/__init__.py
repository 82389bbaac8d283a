"""Simulator: profile a model's operators once on a GPU, then predict any deployment on a CPU by
driving the engine's own scheduler and KV accounting with a predicted clock."""
