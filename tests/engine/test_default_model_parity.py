"""Greedy generation of the built-in model matches HF transformers `generate` token for token, on
8 prompts x 32 tokens batched together, under every scheduler policy."""

from __future__ import annotations

import pytest
import torch

from cadence.core.sampling_params import SamplingParams
from cadence.core.scheduler import SCHEDULERS
from cadence.engine.llm import LLM
from cadence.models.default_model import default_model_path

QUESTIONS = [
    "What is the capital of France?",
    "Write a haiku about autumn leaves.",
    "Explain in one sentence what a hash table is.",
    "List three prime numbers.",
    "Translate 'good morning' into Spanish.",
    "Why is the sky blue? Answer briefly, like a physicist would explain it to a curious child.",
    "hi",
    "Give me a short recipe for pancakes, with the quantities of flour, milk and eggs.",
]
NEW_TOKENS = 32


@pytest.fixture(scope="module")
def reference():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = default_model_path()
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    prompts, outputs = [], []
    for q in QUESTIONS:
        ids = tok.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True, tokenize=True)
        ids = list(ids["input_ids"] if hasattr(ids, "keys") else ids)
        with torch.no_grad():
            out = model.generate(torch.tensor([ids]), max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS,
                                 do_sample=False)
        prompts.append(ids)
        outputs.append(out[0, len(ids):].tolist())
    return prompts, outputs


@pytest.mark.parametrize("policy", sorted(SCHEDULERS))
def test_greedy_matches_hf_generate(reference, policy):
    prompts, expected = reference
    # a small token budget makes sarathi chunk the prompts and mix chunks with decodes
    llm = LLM(dtype="float32", policy=policy, max_num_batched_tokens=48 if policy == "sarathi" else 512)
    params = SamplingParams(max_tokens=NEW_TOKENS, min_tokens=NEW_TOKENS, temperature=0.0)
    results = llm.generate(prompts, params)
    for q, res, want in zip(QUESTIONS, results, expected, strict=True):
        assert res.outputs[0].token_ids == want, f"{policy}: {q!r} diverged"
    llm.engine.kv.check_all_free()
