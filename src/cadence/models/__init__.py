"""Models: one decoder for the Llama family, its loader, and the built-in default model."""
