"""Which blocks each request holds, prefix-cache lookups, and slot allocation for a step."""

from __future__ import annotations

from cadence.core.kv.block_pool import Block, BlockPool
from cadence.core.kv.prefix_hash import extend_block_hashes
from cadence.core.request import Request


class KVCacheManager:
    def __init__(self, num_blocks: int, block_size: int, enable_prefix_caching: bool = True,
                 hit_multiple: int = 1) -> None:
        """`hit_multiple`: prefix hits are cut to a multiple of this many blocks (a backend whose
        pages hold parts of two blocks shares only whole pages: vattention with token rows that
        do not divide its 2 MiB pages)."""
        if hit_multiple < 1:
            raise ValueError(f"hit_multiple must be at least 1, got {hit_multiple}")
        self.block_size = block_size
        self.enable_prefix_caching = enable_prefix_caching
        self.hit_multiple = hit_multiple
        self.pool = BlockPool(num_blocks, enable_prefix_caching)
        self.req_blocks: dict[str, list[Block]] = {}
        self._num_registered: dict[str, int] = {}  # leading blocks already offered to the cache
        self.prefix_queries = 0  # tokens looked up in the prefix cache
        self.prefix_hits = 0  # tokens found there

    @property
    def num_blocks(self) -> int:
        return self.pool.num_blocks

    @property
    def num_free_blocks(self) -> int:
        return self.pool.num_free_blocks

    @property
    def usage(self) -> float:
        return self.pool.usage

    def blocks_for(self, num_tokens: int) -> int:
        return -(-num_tokens // self.block_size)

    def block_ids(self, request_id: str) -> list[int]:
        return [b.block_id for b in self.req_blocks.get(request_id, ())]

    def get_computed_blocks(self, req: Request) -> tuple[list[Block], int]:
        """Longest run of cached full blocks at the start of the request's tokens. At least one
        token is always left to compute, so that the step produces logits for it."""
        if not self.enable_prefix_caching:
            return [], 0
        tokens = req.known_token_ids()
        extend_block_hashes(req.block_hashes, tokens, self.block_size)
        hits: list[Block] = []
        max_blocks = (len(tokens) - 1) // self.block_size
        for block_hash in req.block_hashes[:max_blocks]:
            block = self.pool.lookup(block_hash)
            if block is None:
                break
            hits.append(block)
        del hits[len(hits) - len(hits) % self.hit_multiple:]
        return hits, len(hits) * self.block_size

    def record_prefix_lookup(self, num_tokens: int, num_hit: int) -> None:
        self.prefix_queries += num_tokens
        self.prefix_hits += num_hit

    def allocate_slots(self, req: Request, num_new_tokens: int, new_computed: list[Block] | None = None) -> bool:
        """Reserve room for `num_new_tokens` more tokens after the computed ones (counting any
        cached blocks just found). False, with nothing changed, if the pool cannot hold them."""
        held = self.req_blocks.get(req.request_id)
        if held is not None and not new_computed:  # the common case: a running request's next tokens
            total = req.num_computed_tokens + num_new_tokens
            if total <= len(held) * self.block_size:  # no block missing
                if self.enable_prefix_caching and total // self.block_size > self._num_registered.get(req.request_id, 0):
                    self._register_full_blocks(req, held, total)
                return True
        new_computed = new_computed or []
        num_held = len(held) if held else 0
        total = req.num_computed_tokens + len(new_computed) * self.block_size + num_new_tokens
        need = self.blocks_for(total) - num_held - len(new_computed)
        reclaim = sum(1 for b in new_computed if b.ref_cnt == 0)  # cached but free: leaving the free list
        if need + reclaim > self.pool.num_free_blocks:
            return False
        if held is None:
            held = self.req_blocks[req.request_id] = []
        if new_computed:
            self.pool.touch(new_computed)
            held.extend(new_computed)
        if need > 0:
            held.extend(self.pool.allocate(need))
        self._register_full_blocks(req, held, total)
        return True

    def _register_full_blocks(self, req: Request, held: list[Block], num_tokens: int) -> None:
        """Full blocks whose tokens are all known become findable (their KV is written this step,
        layer by layer before any attention reads it). A block whose last token is still a
        placeholder (async scheduling) waits for a later call."""
        if not self.enable_prefix_caching:
            return
        full = num_tokens // self.block_size
        done = self._num_registered.get(req.request_id, 0)
        if full <= done:
            return
        if len(req.block_hashes) < full:
            extend_block_hashes(req.block_hashes, req.known_token_ids(), self.block_size)
        upto = min(full, len(req.block_hashes))
        for i in range(done, upto):
            self.pool.register(held[i], req.block_hashes[i])
        self._num_registered[req.request_id] = upto

    def register_known_blocks(self, req: Request) -> None:
        """Register the full computed blocks whose tokens became known since they were filled."""
        held = self.req_blocks.get(req.request_id)
        if held:
            self._register_full_blocks(req, held, req.num_computed_tokens)

    def free(self, req: Request) -> None:
        blocks = self.req_blocks.pop(req.request_id, None)
        self._num_registered.pop(req.request_id, None)
        if blocks:
            self.pool.free(list(reversed(blocks)))

    def reset_prefix_cache(self) -> None:
        self.pool.reset_cache()

    def check_all_free(self) -> None:
        """Every block is back in the pool: nothing is held by any request."""
        if self.req_blocks or self.pool.num_free_blocks != self.pool.num_blocks:
            raise AssertionError(
                f"{self.pool.num_blocks - self.pool.num_free_blocks} KV blocks still held by "
                f"{sorted(self.req_blocks)}"
            )
