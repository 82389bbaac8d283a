"""Tiny random Hugging Face checkpoints of every supported architecture, for parity tests."""

from __future__ import annotations

from pathlib import Path

import torch

COMMON = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2, vocab_size=256, max_position_embeddings=512, rms_norm_eps=1e-5,
              tie_word_embeddings=False)


def hf_config(arch: str):
    import transformers as tf

    if arch == "llama":
        return tf.LlamaConfig(**COMMON, rope_theta=10000.0)
    if arch == "llama3":  # llama 3.1-style rope scaling
        return tf.LlamaConfig(**COMMON, rope_theta=500000.0, rope_scaling={
            "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
            "original_max_position_embeddings": 64})
    if arch == "mistral":
        return tf.MistralConfig(**COMMON, sliding_window=None, rope_theta=1000000.0)
    if arch == "qwen2":
        return tf.Qwen2Config(**{**COMMON, "tie_word_embeddings": True}, rope_theta=1000000.0)
    if arch == "qwen3":
        return tf.Qwen3Config(**COMMON, head_dim=32, rope_theta=1000000.0)
    raise KeyError(arch)


ARCHS = ("llama", "llama3", "mistral", "qwen2", "qwen3")


def make_checkpoint(arch: str, folder: Path, seed: int = 0):
    """Save a random HF model of `arch` into `folder`; return the HF model (fp32, eval)."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(hf_config(arch), dtype=torch.float32, attn_implementation="eager")
    with torch.no_grad():  # larger than HF's init so that errors show in the logits
        for name, p in model.named_parameters():
            if "norm" in name:
                p.uniform_(0.5, 1.5)
            elif name.endswith("bias"):
                p.normal_(0, 0.5)
            else:
                p.normal_(0, 0.08)
    model.eval()
    model.save_pretrained(folder)
    return model
