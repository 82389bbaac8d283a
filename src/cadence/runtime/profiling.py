"""The profiling pass that sizes the KV cache: run the largest step the scheduler may build, with
attention stubbed out, and read the allocator's peak. What is left under gpu_memory_utilization
after weights, that peak and the CUDA-graph outputs becomes KV cache."""

from __future__ import annotations

import torch

from cadence.models.llama import LlamaForCausalLM


@torch.inference_mode()
def peak_step_bytes(model: LlamaForCausalLM, num_tokens: int, num_sampled: int, device: torch.device) -> int:
    """Peak device bytes a forward of `num_tokens` tokens (and logits of `num_sampled`) allocates."""
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    ids = torch.randint(0, model.config.vocab_size, (num_tokens,), device=device)
    pos = torch.arange(num_tokens, device=device) % model.config.max_model_len

    def attn(layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return torch.empty_like(q)  # what a flash kernel allocates; its workspace is small

    hidden = model(ids, pos, attn)
    logits = model.compute_logits(hidden[: max(1, min(num_sampled, num_tokens))])
    logits.argmax(-1)
    torch.cuda.synchronize(device)
    peak = torch.cuda.max_memory_allocated(device) - before
    del hidden, logits
    torch.cuda.empty_cache()
    return peak


def graph_reserve_bytes(vocab_size: int, hidden_size: int, max_batch: int) -> int:
    """Static outputs of the decode graphs (logits in bf16 and fp32, activations) plus slack."""
    return max_batch * vocab_size * 6 + max_batch * hidden_size * 64 + (256 << 20)
