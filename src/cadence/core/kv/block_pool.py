"""The pool of physical KV blocks: reference counts, an LRU free list, and the prefix-cache map."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass


@dataclass
class Block:
    block_id: int
    ref_cnt: int = 0
    block_hash: int | None = None  # set once the block is full and registered in the cache


class BlockPool:
    """Free blocks wait in LRU order; a free block that still holds a cached prefix stays findable
    by its hash until it is reallocated (evicted only when needed)."""

    def __init__(self, num_blocks: int, enable_caching: bool = True) -> None:
        if num_blocks < 1:
            raise ValueError(f"the KV cache needs at least one block, got {num_blocks}")
        self.num_blocks = num_blocks
        self.enable_caching = enable_caching
        self.blocks = [Block(i) for i in range(num_blocks)]
        self._free: OrderedDict[int, Block] = OrderedDict((b.block_id, b) for b in self.blocks)
        self._cached: dict[int, Block] = {}
        self.num_evictions = 0

    @property
    def num_free_blocks(self) -> int:
        return len(self._free)

    @property
    def usage(self) -> float:
        return 1.0 - len(self._free) / self.num_blocks

    def lookup(self, block_hash: int) -> Block | None:
        return self._cached.get(block_hash)

    def allocate(self, n: int) -> list[Block]:
        if n > len(self._free):
            raise RuntimeError(f"asked for {n} KV blocks with {len(self._free)} free")
        out = []
        for _ in range(n):
            _, block = self._free.popitem(last=False)  # least recently freed first
            if block.block_hash is not None:
                del self._cached[block.block_hash]
                block.block_hash = None
                self.num_evictions += 1
            block.ref_cnt = 1
            out.append(block)
        return out

    def free_blocks(self) -> Iterator[Block]:
        """The free blocks, least recently freed first (the order `allocate` reuses them in); the
        caller may `evict` them while iterating, not allocate or free."""
        return iter(self._free.values())

    def evict(self, block: Block) -> None:
        """Forget a free block's cached prefix (its memory is taken back before it is reallocated)."""
        if block.ref_cnt:
            raise RuntimeError(f"KV block {block.block_id} is in use and cannot be evicted")
        if block.block_hash is not None:
            del self._cached[block.block_hash]
            block.block_hash = None
            self.num_evictions += 1

    def touch(self, blocks: list[Block]) -> None:
        """Take a reference on cached blocks found by hash (they may be sitting in the free list)."""
        for block in blocks:
            if block.ref_cnt == 0:
                del self._free[block.block_id]
            block.ref_cnt += 1

    def free(self, blocks: list[Block]) -> None:
        """Drop one reference each. Blocks are passed tail first so that a request's last blocks,
        the least likely to be shared, are evicted first."""
        for block in blocks:
            block.ref_cnt -= 1
            if block.ref_cnt < 0:
                raise RuntimeError(f"KV block {block.block_id} freed twice")
            if block.ref_cnt == 0:
                self._free[block.block_id] = block

    def register(self, block: Block, block_hash: int) -> None:
        """Make a full block findable by its chained hash (first writer wins)."""
        if not self.enable_caching or block.block_hash is not None:
            return
        if block_hash in self._cached:
            return
        block.block_hash = block_hash
        self._cached[block_hash] = block

    def reset_cache(self) -> None:
        for block in self._cached.values():
            block.block_hash = None
        self._cached.clear()
