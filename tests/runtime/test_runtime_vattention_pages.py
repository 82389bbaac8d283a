"""vattention's page bookkeeping on the CPU: the driver is replaced by a fake with the same physical
page semantics (a page's bytes live in its own storage; a mapping shows them at an offset; writes
reach the page), and flash attention by SDPA over the same strided view. The real scheduler
drives chunked prefills, prefix hits, preemption and slot reuse; logits must equal the torch
backend's, and every page must be accounted for at the end."""

from __future__ import annotations

import random

import pytest
import torch
from torch.nn import functional as F

from cadence.core.config import SchedulerConfig
from cadence.core.kv.kv_cache_manager import KVCacheManager
from cadence.core.request import Request
from cadence.core.sampling_params import SamplingParams
from cadence.core.scheduler import make_scheduler
from cadence.models.config import ModelConfig
from cadence.models.loader import load_model
from cadence.runtime.attention import decode, flash, triton_decode
from cadence.runtime.attention import slot_pages as sp
from cadence.runtime.attention import vattention as va
from cadence.runtime.attention.torch_ref import TorchAttentionBackend
from cadence.runtime.step_batch import build_step_batch
from cadence.runtime.vmm import PAGE_SIZE, VMMError, VMMStats

MAX_LEN = 512


class FakeVM:
    """Pages are separate tensors; the 'range' shows a page's bytes where it is mapped. Writes go
    to the range, so `flush` copies the pages a K/V write touched back to storage and to the other
    offsets that show them (`exact_write`, after every layer's write: a request may read, in the
    same step, a cached block whose last tokens another request writes)."""

    live: list[FakeVM] = []

    def __init__(self, num_bytes: int) -> None:
        FakeVM.live.append(self)
        self.range_bytes = num_bytes
        self.range = torch.zeros(num_bytes, dtype=torch.uint8)
        self.pages: list[torch.Tensor] = []
        self._mapped: dict[int, int] = {}
        self.stats = VMMStats()

    def create_pages(self, n: int) -> list[int]:
        first = len(self.pages)
        self.pages += [torch.full((PAGE_SIZE,), 7, dtype=torch.uint8) for _ in range(n)]  # garbage, not zeros
        self.stats.pages_created += n
        return list(range(first, first + n))

    @property
    def num_pages(self) -> int:
        return len(self.pages)

    @property
    def num_mappings(self) -> int:
        return len(self._mapped)

    def map(self, offset: int, page: int) -> None:
        if offset in self._mapped:
            raise VMMError("already mapped")
        self.range[offset:offset + PAGE_SIZE] = self.pages[page]
        self._mapped[offset] = page
        self.stats.maps += 1

    def map_many(self, pairs: list[tuple[int, int]]) -> None:
        for offset, page in pairs:
            self.map(offset, page)

    def unmap(self, offset: int) -> None:
        if offset not in self._mapped:
            raise VMMError("not mapped")
        self.range[offset:offset + PAGE_SIZE] = 0xFF  # unmapped memory must never be read
        del self._mapped[offset]
        self.stats.unmaps += 1

    def mapped_page(self, offset: int) -> int | None:
        return self._mapped.get(offset)

    def tensor(self) -> torch.Tensor:
        return self.range

    def flush(self, offsets: set[int]) -> None:
        for off in offsets:
            page = self._mapped[off]
            self.pages[page].copy_(self.range[off:off + PAGE_SIZE])
            for other, p in self._mapped.items():  # other live views of the same page see the write
                if p == page and other != off:
                    self.range[other:other + PAGE_SIZE] = self.pages[page]

    def close(self) -> None:
        self._mapped.clear()
        self.stats.pages_released = self.stats.pages_created


def sdpa_varlen(q, k, v, cu_q, cu_k, max_q, max_k, seqused, scale, block_table=None, causal=True):
    out = torch.empty_like(q)
    rep = q.shape[1] // k.shape[1]
    for b in range(len(seqused)):
        qs, qe, ks, n = int(cu_q[b]), int(cu_q[b + 1]), int(cu_k[b]), int(seqused[b])
        keys = k[ks:ks + n].transpose(0, 1).repeat_interleave(rep, 0)
        vals = v[ks:ks + n].transpose(0, 1).repeat_interleave(rep, 0)
        qq = q[qs:qe].transpose(0, 1)
        mask = torch.arange(n)[None, :] <= torch.arange(n - (qe - qs), n)[:, None]
        if not causal:
            mask = torch.ones_like(mask)
        out[qs:qe] = F.scaled_dot_product_attention(qq, keys, vals, attn_mask=mask, scale=scale).transpose(0, 1)
    return out


def exact_write(write):
    """vattention's K/V write, then the written pages flushed to every view of them (FakeVM)."""

    def wrapped(k, v, k_rows, v_rows, idx):
        write(k, v, k_rows, v_rows, idx)
        vm = FakeVM.live[-1]
        base, touched = vm.range.data_ptr(), set()
        for rows in (k_rows, v_rows):
            start, row, width = rows.data_ptr() - base, rows.stride(0) * rows.element_size(), rows[0].nbytes
            for r in idx.tolist():
                first = start + r * row
                touched.update({first // PAGE_SIZE * PAGE_SIZE, (first + width - 1) // PAGE_SIZE * PAGE_SIZE})
        vm.flush(touched)

    return wrapped


@pytest.fixture
def fake_backend(monkeypatch):
    monkeypatch.setattr(FakeVM, "live", [])
    monkeypatch.setattr(va, "_write", exact_write(va._write))
    monkeypatch.setattr(va.VAttentionBackend, "_check_device", staticmethod(lambda device: None))
    monkeypatch.setattr(va.VAttentionBackend, "_reserve", lambda self, n: FakeVM(n))
    monkeypatch.setattr(va, "flash_varlen", sdpa_varlen)
    monkeypatch.setattr(flash, "flash_varlen", sdpa_varlen)  # under flash_decode
    monkeypatch.setattr(sp, "NUM_SPARES", 3)  # few spares: exercise running out of them
    monkeypatch.setattr(sp, "NUM_PREMAP", 4)


def config(layers: int = 4) -> ModelConfig:
    # 4 layers x 8 KV heads x 64 dims x K,V x fp32 = 16 KiB a token: 128 tokens a page, block 128;
    # 6 layers: 24 KiB a token, a page holds parts of two blocks (64 tokens: 1.5 MiB, 128: 3 MiB);
    # 16 query heads on 8 KV heads (decodes of 32 requests or more take flash_decode's packing)
    return ModelConfig.from_dict({
        "architectures": ["Qwen3ForCausalLM"], "hidden_size": 128, "intermediate_size": 256,
        "num_hidden_layers": layers, "num_attention_heads": 16, "num_key_value_heads": 8, "head_dim": 64,
        "vocab_size": 300, "max_position_embeddings": MAX_LEN,
    })


def run(backend, model, prompts, script, *, budget, num_blocks, block, stagger, hit_multiple=1, max_seqs=4):
    """`hit_multiple`: prefix hits cut as for vattention's layout, for the reference too (same steps)."""
    kv = KVCacheManager(num_blocks, block, enable_prefix_caching=True, hit_multiple=hit_multiple)
    sched = make_scheduler(SchedulerConfig(policy="sarathi", max_num_batched_tokens=budget, max_num_seqs=max_seqs),
                           kv, MAX_LEN)
    reqs = [Request(f"r{i}", list(p), SamplingParams(max_tokens=len(script[i]), temperature=0, ignore_eos=True))
            for i, p in enumerate(prompts)]
    logits: dict[str, dict[int, torch.Tensor]] = {r.request_id: {} for r in reqs}
    pending, step = list(reqs), 0
    with torch.no_grad():
        while pending or sched.has_unfinished():
            if pending and step % (stagger + 1) == 0:
                sched.add_request(pending.pop(0))
            out = sched.schedule(float(step))
            step += 1
            backend.free_requests(list(out.finished_ids) + [r.request_id for r in out.preempted])
            if out.is_empty():
                continue
            batch = build_step_batch(out, kv, torch.device("cpu"))
            all_logits = model.compute_logits(model(batch.input_ids, batch.positions, backend.bind(batch)))
            if isinstance(backend, va.VAttentionBackend):
                if backend.wants_idle_time():  # the GPU "runs" for one look: IDLE_BATCH pages mapped ahead
                    backend.idle_work(busy_for(1))
                backend.after_launch(batch)
            row, sampled = 0, {}
            for s in out.scheduled:
                rid = s.request.request_id
                for j in range(s.num_new_tokens):
                    logits[rid][s.num_computed_tokens + j] = all_logits[row + j]
                row += s.num_new_tokens
                if s.samples:
                    sampled[rid] = script[int(rid[1:])][s.request.num_output_tokens]
            sched.update_from_output(out, sampled, float(step))
        backend.free_requests(sched.schedule().finished_ids)
    kv.check_all_free()
    return logits, sched.num_preemptions, kv.prefix_hits


@pytest.mark.parametrize("budget,num_blocks,stagger,split,layers,block,hit_multiple", [
    (100, 40, 1, True, 4, 128, 1), (300, 5, 1, True, 4, 128, 1), (64, 12, 2, True, 4, 128, 1),
    (100, 40, 1, False, 4, 128, 1),
    (100, 40, 1, True, 6, 128, 2), (300, 5, 1, True, 6, 128, 2), (100, 40, 1, False, 6, 64, 4),
    (64, 12, 2, True, 6, 64, 4)])
def test_vattention_pages_match_torch_on_cpu(fake_backend, budget, num_blocks, stagger, split, layers, block,
                                             hit_multiple):
    """`split`: mixed steps attend decodes apart from the chunks (a large model's rule); otherwise
    in one varlen call (a small model's, for decodes shorter than its split_min_context). Rows of 6
    layers do not divide a page: pages hold parts of two blocks, prefix hits are cut to whole pages."""
    cfg = config(layers)
    num_blocks = num_blocks * 128 // block
    assert va.layout(cfg, block, torch.float32)[2] == hit_multiple
    model = load_model(cfg, None, dtype=torch.float32, device="cpu", load_format="dummy")
    with torch.no_grad():
        for name, p in model.named_parameters():
            if not name.endswith("norm.weight"):
                p.normal_(0, 0.1)
    rng = random.Random(budget)
    shared = [rng.randrange(300) for _ in range(hit_multiple * block + 5)]
    prompts = [shared + [rng.randrange(300) for _ in range(rng.randint(3, 150))] for _ in range(6)]
    script = [[rng.randrange(300) for _ in range(rng.randint(20, 60))] for _ in range(6)]
    kw = dict(budget=budget, num_blocks=num_blocks, block=block, stagger=stagger, hit_multiple=hit_multiple)
    dev = torch.device("cpu")
    ref = TorchAttentionBackend(cfg, num_blocks, block, torch.float32, dev)
    want, pre_ref, hits_ref = run(ref, model, prompts, script, **kw)
    backend = va.VAttentionBackend(cfg, num_blocks, block, torch.float32, dev, max_num_seqs=4, max_model_len=MAX_LEN)
    mixed = backend._mixed_attention
    split_steps: list[int] = []  # decodes attended apart from the prefills they shared a step with

    def spy(write_idx, d, *args):
        split_steps.append(d)
        return mixed(write_idx, d, *args)

    backend._mixed_attention = spy
    assert backend.split_min_context == va.SMALL_MODEL_SPLIT_MIN_CONTEXT["flash"]  # hidden 128: a small model
    if split:
        backend.split_min_context = 0
    got, pre, hits = run(backend, model, prompts, script, **kw)
    if split:
        assert split_steps, "no step mixed decodes with prefills"
    else:
        assert not split_steps  # every decode here is far shorter than 2,048 tokens
    assert (pre, hits) == (pre_ref, hits_ref) and hits > 0
    if num_blocks < 10:
        assert pre > 0
    for rid in want:
        assert sorted(got[rid]) == sorted(want[rid])
        a = torch.stack([got[rid][p] for p in sorted(want[rid])])
        b = torch.stack([want[rid][p] for p in sorted(want[rid])])
        assert float((a - b).abs().max() / b.abs().max()) < 1e-4, rid
    assert backend.num_swaps > 0  # pages mapped ahead were used
    backend.trim()
    acc = backend.page_accounting()
    assert acc["accounted"] == acc["distinct"] == acc["pages"] and acc["refs_match"], acc
    assert acc["mappings"] == 1, acc


def busy_for(n: int):
    """A step that is still running for the first n looks."""
    left = [n]

    def busy() -> bool:
        left[0] -= 1
        return left[0] >= 0

    return busy


def test_new_requests_first_chunk_takes_pages_mapped_ahead(fake_backend, monkeypatch):
    """While the host waits for a step, the next free slots get spare pages mapped (IDLE_BATCH pages
    between looks at the step); a new request's first chunk then swaps them into its fresh blocks
    with no driver call on its step, while a prefix hit still maps the cached block's own page.
    Slots are handed out first-in, first-out, so the slot a request leaves is the last to be reused."""
    monkeypatch.setattr(sp, "NUM_SPARES", 8)
    monkeypatch.setattr(sp, "NUM_PREMAP", 6)
    cfg, block = config(), 128
    kv = KVCacheManager(16, block, enable_prefix_caching=True)  # blocks of one page: any hit length
    sched = make_scheduler(SchedulerConfig(policy="sarathi", max_num_batched_tokens=512, max_num_seqs=4), kv, MAX_LEN)
    backend = va.VAttentionBackend(cfg, 16, block, torch.float32, torch.device("cpu"), max_num_seqs=4,
                                   max_model_len=MAX_LEN)
    assert backend.premap_pages == 3 and sp.IDLE_BATCH == 2
    assert backend.wants_idle_time()
    assert backend.idle_work(busy_for(0)) == 0  # the step is done already: nothing mapped
    for _ in range(3):  # two slots x 3 blocks, two pages a look
        assert backend.idle_work(busy_for(1)) == 2
    assert not backend.wants_idle_time() and backend.idle_work(busy_for(5)) == 0
    rng = random.Random(0)
    prompt = [rng.randrange(300) for _ in range(300)]  # 3 blocks of 128 tokens
    sched.add_request(Request("a", prompt, SamplingParams(max_tokens=2, temperature=0, ignore_eos=True)))
    out = sched.schedule(1.0)
    maps, swaps = backend.vm.stats.maps, backend.num_swaps
    backend.bind(build_step_batch(out, kv, torch.device("cpu")))
    assert backend.vm.stats.maps == maps and backend.num_swaps == swaps + 3
    slot_a = backend.slot_of["a"]
    # a second request shares the first's two full blocks: those pages are mapped into its slot on
    # its step (a prefix hit), its fresh third block takes the page mapped ahead
    sched.update_from_output(out, {"a": 1}, 1.0)
    sched.add_request(Request("b", prompt[:256] + [1, 2, 3], SamplingParams(max_tokens=2, temperature=0,
                                                                             ignore_eos=True)))
    out = sched.schedule(2.0)
    maps, swaps = backend.vm.stats.maps, backend.num_swaps
    backend.bind(build_step_batch(out, kv, torch.device("cpu")))
    assert backend.slot_of["b"] != slot_a and kv.prefix_hits > 0
    assert backend.vm.stats.maps == maps + 2 and backend.num_swaps == swaps + 1
    backend.free_requests(["a"])
    assert backend.free_slots[0] == slot_a  # back of the queue
    backend.free_requests(["b"])
    backend.trim()
    acc = backend.page_accounting()
    assert acc["accounted"] == acc["distinct"] == acc["pages"], acc


def test_leading_decodes():
    assert va.leading_decodes([1, 1, 40, 1]) == 2
    assert va.leading_decodes([1, 1, 1]) == 0  # decode-only steps take the decode path
    assert va.leading_decodes([5, 1]) == 0


@pytest.mark.parametrize("heads,kv_heads", [(16, 8), (32, 8), (8, 8), (14, 2)])
def test_flash_decode_packing_equals_per_head_attention(monkeypatch, heads, kv_heads):
    """flash_decode's grouped-query packing (query heads as rows, non-causal) against plain
    causal varlen attention of one query token per request, on strided keys like vattention's."""
    monkeypatch.setattr(flash, "flash_varlen", sdpa_varlen)
    gen = torch.Generator().manual_seed(heads * 100 + kv_heads)
    B, D, slot = 5, 16, 40
    ctx = torch.tensor([1, 7, 40, 23, 2], dtype=torch.int32)
    rows = torch.randn(B * slot, 2, kv_heads, D, generator=gen)  # K and V of a token side by side
    k, v = rows[:, 0], rows[:, 1]
    q = torch.randn(B, heads, D, generator=gen)
    cu_k = torch.arange(B + 1, dtype=torch.int32) * slot
    plain = sdpa_varlen(q, k, v, torch.arange(B + 1, dtype=torch.int32), cu_k, 1, slot, ctx, 0.25)
    packed = flash.flash_decode(q, k, v, flash.packed_cu_q(B, heads // kv_heads, torch.device("cpu")), cu_k,
                                slot, ctx, 0.25)
    assert packed.shape == plain.shape
    torch.testing.assert_close(packed, plain, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("num_blocks", [40, 5])
def test_async_engine_on_emulated_vattention_matches_serial(fake_backend, tmp_path, num_blocks):
    """The whole engine with async scheduling over the vattention page logic (emulated driver): slots
    rest a step after their request ends, pages are mapped while a step is in flight, and the tokens
    equal those of serial steps (with preemption when the pool is small)."""
    import json

    from cadence.core.config import CacheConfig
    from cadence.engine.config import EngineConfig, ModelLoadConfig
    from cadence.engine.llm_engine import LLMEngine

    cfg = {"architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3", "hidden_size": 128,
           "intermediate_size": 256, "num_hidden_layers": 4, "num_attention_heads": 16, "num_key_value_heads": 8,
           "head_dim": 64, "vocab_size": 300, "max_position_embeddings": MAX_LEN}
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    rng = random.Random(num_blocks)
    work = [([rng.randrange(300) for _ in range(rng.randint(5, 200))], rng.randint(1, 60)) for _ in range(10)]
    results = {}
    for overlapped in (False, True):
        engine = LLMEngine(EngineConfig(
            load=ModelLoadConfig(model=str(tmp_path), load_format="dummy", device="cpu", dtype="float32",
                                 attention_backend="vattention", seed=5),
            scheduler=SchedulerConfig(max_num_seqs=4, max_num_batched_tokens=96, max_model_len=MAX_LEN,
                                      async_scheduling=overlapped),
            cache=CacheConfig(block_size=128, num_blocks=num_blocks, enable_prefix_caching=False)))
        backend = engine.runner.attention
        assert backend.name == "vattention" and backend.num_slots == (8 if overlapped else 4)
        got: dict[str, list[int]] = {}
        pending, step = list(enumerate(work)), 0
        while pending or engine.has_unfinished():
            if pending and step % 2 == 0:
                i, (prompt, n) = pending.pop(0)
                engine.add_request(f"r{i}", prompt, SamplingParams(max_tokens=n, temperature=0, ignore_eos=True))
            for o in engine.step():
                got.setdefault(o.request_id, []).extend(o.new_token_ids)
            step += 1
        assert engine.kv.num_free_blocks == num_blocks
        assert engine.step() == []  # an idle step hands the last ended requests to the backend
        assert not backend.slot_of and len(backend.free_slots) + len(backend._resting) == backend.num_slots
        results[overlapped] = (got, engine.scheduler.num_preemptions)
    assert results[True][0] == results[False][0]
    assert all(len(v) == work[int(k[1:])][1] for k, v in results[True][0].items())
    if num_blocks == 5:
        assert results[False][1] > 0


@pytest.mark.parametrize("rows", [1, 5, 31, 32, 64])
def test_decode_kernel_packs_heads_only_for_large_batches(monkeypatch, rows):
    """vattention's decode kernel: one query row a request below 256 (request, KV head) tiles (the
    flash kernel then splits long contexts itself), grouped heads packed from there; both equal
    per-request attention, over slots handed out of order."""
    calls = []

    def spy(q, k, v, cu_q, cu_k, max_q, max_k, used, scale, **kw):
        calls.append(max_q)
        return sdpa_varlen(q, k, v, cu_q, cu_k, max_q, max_k, used, scale, **kw)

    monkeypatch.setattr(flash, "flash_varlen", spy)
    gen = torch.Generator().manual_seed(rows)
    heads, kv_heads, D, slot = 16, 8, 16, 24
    ctx = torch.randint(1, slot + 1, (rows,), generator=gen, dtype=torch.int32)
    data = torch.randn(rows * slot, 2, kv_heads, D, generator=gen)
    k, v = data[:, 0], data[:, 1]
    q = torch.randn(rows, heads, D, generator=gen)
    cu_k = torch.cat([torch.randperm(rows, generator=gen) * slot, torch.tensor([rows * slot])]).to(torch.int32)
    kernel = decode.decode_kernel(rows, heads, kv_heads, 0.25, torch.device("cpu"), slot)
    got = kernel(q, k, v, cu_k, ctx, slot)
    assert calls == [2 if rows * kv_heads >= decode.PACKED_MIN_TILES else 1]
    want = sdpa_varlen(q, k, v, torch.arange(rows + 1, dtype=torch.int32), cu_k, 1, slot, ctx, 0.25)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert not decode.packs_query_heads(1000, 8, 8)  # no groups to pack


def test_decode_kernel_choice_and_errors():
    cpu = torch.device("cpu")
    assert decode.resolve("auto", cpu) == "flash"  # no CUDA: PyTorch's kernel
    assert decode.resolve("flash", cpu) == "flash"
    with pytest.raises(ValueError, match="needs a CUDA device"):
        decode.resolve("triton", cpu)
    with pytest.raises(ValueError, match="one of auto, triton, flash"):
        decode.resolve("fast", cpu)


@pytest.mark.parametrize("rows,kv_heads,max_ctx,want", [
    (256, 8, 2048, 1), (33, 8, 2048, 1), (32, 8, 2048, 2), (16, 8, 2048, 2), (8, 8, 2048, 4), (4, 8, 2048, 8),
    (1, 8, 2048, 8), (1, 8, 16384, 32), (1, 2, 100000, 64), (2, 8, 100, 1), (3, 8, 17408, 8)])
def test_triton_decode_splits(rows, kv_heads, max_ctx, want):
    """Splits give two waves of programs over 132 SMs, none shorter than four 64-token tiles, a power of two."""
    assert triton_decode.num_splits(rows, kv_heads, max_ctx, 132, 64) == want


def test_free_blocks_give_pages_back_when_none_is_free(fake_backend, monkeypatch):
    """Rows that do not divide a page, no spare pages: ended requests' blocks keep their pages (a
    cached first block, an uncached partial second one, two pages for what the core counts as 1.5),
    so new requests find no free page and take them back from free blocks, uncached ones first, then
    cached ones, which leave the prefix cache. Logits still equal the torch backend's."""
    monkeypatch.setattr(sp, "NUM_SPARES", 0)
    monkeypatch.setattr(sp, "NUM_PREMAP", 0)
    cfg, block, num_blocks = config(6), 64, 8  # 1.5 MiB blocks: 8 blocks in 6 pages
    model = load_model(cfg, None, dtype=torch.float32, device="cpu", load_format="dummy")
    rng = random.Random(7)
    # partial last blocks (uncached) first, then prompts of two whole blocks (both cached)
    prompts = [[rng.randrange(300) for _ in range(rng.randint(65, 100) if i < 5 else 128)] for i in range(10)]
    script = [[rng.randrange(300)] for _ in range(10)]
    kw = dict(budget=512, num_blocks=num_blocks, block=block, stagger=3, hit_multiple=4, max_seqs=1)
    dev = torch.device("cpu")
    want, _, _ = run(TorchAttentionBackend(cfg, num_blocks, block, torch.float32, dev), model, prompts, script, **kw)
    backend = va.VAttentionBackend(cfg, num_blocks, block, torch.float32, dev, max_num_seqs=1, max_model_len=MAX_LEN)
    assert backend.vm.num_pages == 6 + 1 + 1  # the blocks' 6 pages, one for the request, the scratch page
    got, _, _ = run(backend, model, prompts, script, **kw)
    assert backend.num_reclaimed > 0 and backend.num_evicted > 0
    for rid in want:
        a = torch.stack([got[rid][p] for p in sorted(want[rid])])
        b = torch.stack([want[rid][p] for p in sorted(want[rid])])
        assert float((a - b).abs().max() / b.abs().max()) < 1e-4, rid
    acc = backend.page_accounting()
    assert acc["accounted"] == acc["distinct"] == acc["pages"] and acc["refs_match"], acc


def test_layout_rows_pages_and_hit_multiple():
    """The model's own row size (no padding); prefix hits cut to the blocks that fill whole pages;
    the pool's extra pages (one a request where a page holds parts of two blocks)."""
    from cadence.models.config import NAMED_SHAPES

    qwen, llama = (ModelConfig.from_dict(NAMED_SHAPES[n]) for n in ("qwen3-0.6b", "llama3-8b"))
    assert va.layout(qwen, 16, torch.bfloat16) == (112 * 1024, 16 * 112 * 1024, 8)  # 8 blocks = 7 pages
    assert va.layout(llama, 16, torch.bfloat16) == (128 * 1024, PAGE_SIZE, 1)
    assert va.layout(llama, 64, torch.bfloat16)[2] == 1  # four pages a block
    extra = sp.spare_pages() + 1
    assert va.VAttentionBackend.fixed_overhead_bytes(llama, 16, torch.bfloat16, 256) == extra * PAGE_SIZE
    assert va.VAttentionBackend.fixed_overhead_bytes(qwen, 16, torch.bfloat16, 256) == (extra + 256) * PAGE_SIZE
