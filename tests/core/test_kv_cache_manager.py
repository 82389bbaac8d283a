"""The KV manager's prefix hits cut to a multiple of blocks, and the pool's eviction of a free
cached block (what vattention uses when pages hold parts of two blocks)."""

from __future__ import annotations

import pytest

from cadence.core.kv.kv_cache_manager import KVCacheManager
from cadence.core.request import Request
from cadence.core.sampling_params import SamplingParams


def finished_request(kv: KVCacheManager, rid: str, tokens: list[int]) -> None:
    """Computes `tokens` as one request, then frees it: its full blocks stay cached."""
    req = Request(rid, tokens, SamplingParams(max_tokens=1))
    assert kv.allocate_slots(req, len(tokens))
    req.num_computed_tokens = len(tokens)
    kv.free(req)


@pytest.mark.parametrize("multiple,want_blocks", [(1, 5), (2, 4), (4, 4), (3, 3), (8, 0)])
def test_prefix_hits_are_cut_to_a_multiple_of_blocks(multiple, want_blocks):
    kv = KVCacheManager(32, 4, hit_multiple=multiple)
    prompt = list(range(100, 123))  # 5 full blocks of 4 and 3 tokens
    finished_request(kv, "a", prompt)
    hits, tokens = kv.get_computed_blocks(Request("b", prompt + [7, 8], SamplingParams(max_tokens=1)))
    assert len(hits) == want_blocks and tokens == 4 * want_blocks


def test_hit_multiple_must_be_positive():
    with pytest.raises(ValueError, match="hit_multiple"):
        KVCacheManager(4, 4, hit_multiple=0)


def test_evict_forgets_a_free_cached_block():
    kv = KVCacheManager(8, 4)
    prompt = list(range(9))
    finished_request(kv, "a", prompt)
    free = list(kv.pool.free_blocks())
    assert len(free) == 8
    cached = [b for b in free if b.block_hash is not None]
    assert len(cached) == 2
    first = min(cached, key=lambda b: b.block_id)  # allocated first: the prompt's first block
    kv.pool.evict(first)  # the whole prefix is gone with it
    assert kv.pool.num_evictions == 1 and first.block_hash is None
    hits, _ = kv.get_computed_blocks(Request("b", prompt, SamplingParams(max_tokens=1)))
    assert hits == [] and kv.num_free_blocks == 8
    req = Request("c", prompt, SamplingParams(max_tokens=1))
    assert kv.allocate_slots(req, 9)
    with pytest.raises(RuntimeError, match="in use"):
        kv.pool.evict(kv.req_blocks["c"][0])
