"""KV-cache accounting: fixed-size blocks, reference counts, prefix caching. No tensors here."""

from cadence.core.kv.block_pool import Block, BlockPool
from cadence.core.kv.kv_cache_manager import KVCacheManager
from cadence.core.kv.prefix_hash import hash_block_tokens

__all__ = ["Block", "BlockPool", "KVCacheManager", "hash_block_tokens"]
