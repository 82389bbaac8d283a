"""CPU benchmark: the built-in model in bf16 on 2 threads, 16 prompts x 64 tokens, Cadence against
HF transformers `generate` on the same prompts (batched, left-padded). Not a test: run by hand.

    python benchmarks/cpu_generate.py [--threads 2] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_result  # noqa: E402

PROMPTS = [
    "Write a short poem about the ocean.", "What is the capital of France?", "Explain recursion simply.",
    "Give three tips for better sleep.", "Summarize the plot of Romeo and Juliet.", "What is 17 times 23?",
    "Describe a cat to someone who has never seen one.", "Why do leaves change color in autumn?",
    "Name five programming languages.", "How does a bicycle stay upright?", "Tell me a fun fact about space.",
    "What is the difference between weather and climate?", "Write a haiku about coffee.",
    "How do vaccines work?", "Suggest a name for a bakery.", "What causes the tides?",
]
NEW_TOKENS = 64


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from transformers import AutoModelForCausalLM, AutoTokenizer

    from cadence.core.sampling_params import SamplingParams
    from cadence.engine.llm import LLM
    from cadence.models.default_model import default_model_path

    path = default_model_path()
    tok = AutoTokenizer.from_pretrained(path)
    chats = [tok.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True, tokenize=True)
             for p in PROMPTS]
    chats = [list(c["input_ids"] if hasattr(c, "keys") else c) for c in chats]

    llm = LLM(dtype="bfloat16", device="cpu")
    params = SamplingParams(max_tokens=NEW_TOKENS, min_tokens=NEW_TOKENS, temperature=0.0)
    # Warm-up at full size: a fresh VM process pays for first-touch memory (seconds here), which
    # whichever system ran first would otherwise carry alone.
    llm.generate(chats, params)

    hf = AutoModelForCausalLM.from_pretrained(path, dtype=torch.bfloat16).eval()
    tok.padding_side = "left"
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    width = max(len(c) for c in chats)
    input_ids = torch.tensor([[pad] * (width - len(c)) + c for c in chats])
    mask = torch.tensor([[0] * (width - len(c)) + [1] * len(c) for c in chats])
    with torch.no_grad():
        hf.generate(input_ids, attention_mask=mask, max_new_tokens=NEW_TOKENS, do_sample=False, pad_token_id=pad)

    cadence_s, hf_s = [], []
    for _ in range(args.repeats):  # interleaved, so both see the same machine state
        t = time.perf_counter()
        res = llm.generate(chats, params)
        cadence_s.append(time.perf_counter() - t)
        assert all(len(r.outputs[0].token_ids) == NEW_TOKENS for r in res)
        t = time.perf_counter()
        with torch.no_grad():
            out = hf.generate(input_ids, attention_mask=mask, max_new_tokens=NEW_TOKENS,
                              min_new_tokens=NEW_TOKENS, do_sample=False, pad_token_id=pad)
        hf_s.append(time.perf_counter() - t)
        assert out.shape[1] - width == NEW_TOKENS

    tokens = len(chats) * NEW_TOKENS
    c, h = statistics.median(cadence_s), statistics.median(hf_s)
    payload = {
        "benchmark": "cpu_generate",
        "workload": {"model": "SmolLM2-135M-Instruct (built-in)", "dtype": "bfloat16", "threads": args.threads,
                     "prompts": len(chats), "new_tokens_each": NEW_TOKENS, "greedy": True,
                     "prompt_tokens": [len(x) for x in chats]},
        "cadence_s": cadence_s, "hf_generate_s": hf_s,
        "cadence_tok_s": tokens / c, "hf_generate_tok_s": tokens / h, "speedup_vs_hf": h / c,
    }
    path = write_result("cpu_generate", payload, args.out)
    print(f"Cadence {tokens / c:.1f} tok/s, HF generate {tokens / h:.1f} tok/s, ratio {h / c:.2f}x -> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
