"""Cadence's decoder against HF transformers on the same weights (fp32): whole prefills, chunked
prefills of 1, 7 and 64 tokens, decodes, mixed batches and prefix-cache hits."""

from __future__ import annotations

import pytest
import torch

from cadence.core.config import SchedulerConfig
from cadence.core.kv.kv_cache_manager import KVCacheManager
from cadence.core.request import Request
from cadence.core.sampling_params import SamplingParams
from cadence.core.scheduler import make_scheduler
from cadence.models.config import ModelConfig
from cadence.models.loader import load_model
from cadence.runtime.attention.torch_ref import TorchAttentionBackend
from cadence.runtime.step_batch import build_step_batch
from tiny_models import ARCHS, make_checkpoint

BLOCK = 16


@pytest.fixture(scope="module", params=ARCHS)
def pair(request, tmp_path_factory):
    folder = tmp_path_factory.mktemp(request.param)
    hf = make_checkpoint(request.param, folder)
    cfg = ModelConfig.from_path(folder)
    ours = load_model(cfg, folder, dtype=torch.float32, device="cpu")
    return hf, ours, cfg


def hf_logits(hf, ids: list[int]) -> torch.Tensor:
    with torch.no_grad():
        return hf(torch.tensor([ids])).logits[0].float()


def run_engine_collecting_logits(ours, cfg, prompts, budget, max_tokens, stagger=0):
    """Drive the real scheduler; keep the logits of every computed position of every request."""
    kv = KVCacheManager(num_blocks=256, block_size=BLOCK, enable_prefix_caching=True)
    sched = make_scheduler(SchedulerConfig(policy="sarathi", max_num_batched_tokens=budget), kv, 512)
    backend = TorchAttentionBackend(cfg, 256, BLOCK, torch.float32, torch.device("cpu"))
    reqs = [Request(f"r{i}", list(p), SamplingParams(max_tokens=max_tokens, temperature=0, ignore_eos=True))
            for i, p in enumerate(prompts)]
    logits: dict[str, dict[int, torch.Tensor]] = {r.request_id: {} for r in reqs}
    pending = list(reqs)
    step = 0
    cached_at_admission = {}
    while pending or sched.has_unfinished():
        if pending and step % (stagger + 1) == 0:
            sched.add_request(pending.pop(0))
        out = sched.schedule(float(step))
        step += 1
        if out.is_empty():
            continue
        batch = build_step_batch(out, kv, torch.device("cpu"))
        with torch.no_grad():
            hidden = ours(batch.input_ids, batch.positions, backend.bind(batch))
            all_logits = ours.compute_logits(hidden)
        row, sampled = 0, {}
        for s in out.scheduled:
            rid = s.request.request_id
            cached_at_admission.setdefault(rid, s.num_computed_tokens)
            for j in range(s.num_new_tokens):
                logits[rid][s.num_computed_tokens + j] = all_logits[row + j]
            row += s.num_new_tokens
            if s.samples:
                sampled[rid] = int(all_logits[row - 1].argmax())
        sched.update_from_output(out, sampled, float(step))
    kv.check_all_free()
    return reqs, logits, cached_at_admission


def assert_matches(hf, req, logits):
    ids = req.all_token_ids()
    ref = hf_logits(hf, ids[:-1])
    positions = sorted(logits)
    got = torch.stack([logits[p] for p in positions])
    want = ref[positions]
    rel = float((got - want).abs().max() / want.abs().max())
    assert rel <= 1e-4, f"{req.request_id}: max relative error {rel:.2e}"
    # greedy tokens chosen from our logits equal HF's argmax at the same positions
    n_prompt = req.num_prompt_tokens
    assert req.output_token_ids == ref[n_prompt - 1 :].argmax(-1).tolist()


@pytest.mark.parametrize("budget", [1, 7, 64, 512])
def test_chunked_prefill_decode_and_mixed_batches(pair, budget):
    hf, ours, cfg = pair
    g = torch.Generator().manual_seed(budget)
    prompts = [torch.randint(0, cfg.vocab_size, (n,), generator=g).tolist() for n in (37, 100, 5, 64)]
    reqs, logits, _ = run_engine_collecting_logits(ours, cfg, prompts, budget, max_tokens=6, stagger=2)
    for req in reqs:
        assert len(logits[req.request_id]) == req.num_tokens - 1  # every position computed exactly once
        assert_matches(hf, req, logits[req.request_id])


def test_prefix_cache_hits_keep_logits_exact(pair):
    hf, ours, cfg = pair
    g = torch.Generator().manual_seed(7)
    shared = torch.randint(0, cfg.vocab_size, (3 * BLOCK + 5,), generator=g).tolist()
    prompts = [shared + torch.randint(0, cfg.vocab_size, (n,), generator=g).tolist() for n in (10, 30)]
    # the second request arrives after the first has computed its prompt: it must hit 3 blocks
    reqs, logits, cached = run_engine_collecting_logits(ours, cfg, prompts, budget=256, max_tokens=4, stagger=3)
    assert cached["r0"] == 0 and cached["r1"] == 3 * BLOCK
    for req in reqs:
        assert_matches(hf, req, logits[req.request_id])
