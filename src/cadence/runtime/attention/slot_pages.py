"""The physical pages behind vattention's request slots (vattention.py holds the layout and the
attention calls): which 2 MiB page shows at which page position of which slot, pages mapped ahead
where requests' next tokens and the next free slots' first chunks will go, the order free slots are
handed out in, and the page accounting the tests check.

Token rows have the model's own size, so a page may hold the end of one core KV block and the
start of the next (qwen3-0.6b: 112 KiB rows, 16-token blocks of 1.75 MiB, 8 blocks to 7 pages).
Every block references the pages its bytes lie in (`block_refs`, one or two for such rows; exactly
its own for rows that divide a page), each page counts the blocks referencing it, and a page no
block references is free. A fresh block shares the page it starts in with the block before it (the
same request wrote both) and takes free pages for the rest; a block found in the prefix cache keeps
its pages, mapped into the new slot at the same positions. The core cuts prefix hits to whole pages
(`prefix_hit_multiple`), so a request never writes into a page that another request's block uses.

A free page may already show where a fresh block needs one: mapped ahead there while the host
waited for the GPU, or left by the slot's earlier tenant. Then the block takes it with no driver
call (counted in `num_swaps`). Free blocks keep their references (a cached prefix) until the core
reallocates them; when no page is free, free blocks give theirs back, uncached ones first, cached
ones in the core's eviction order (they leave the prefix cache)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable

import torch

from cadence.core.kv.kv_cache_manager import KVCacheManager
from cadence.runtime.step_batch import StepBatch
from cadence.runtime.vmm import PAGE_SIZE, VirtualMemory

NUM_SPARES = 256  # pages beyond the core's blocks, so that running requests' next pages can be mapped ahead
# Pages mapped ahead at the next free slots for new requests' first chunks (two slots). Each is an
# unmap and a map (~40-65 us on the H100/H200), done in the host's wait for a step (idle_work),
# IDLE_BATCH pages between two looks at whether the step is done.
NUM_PREMAP = 256
PREMAP_SLOTS = 2
IDLE_BATCH = 2
AHEAD = 32  # most pages mapped ahead of one request's next chunk


def scratch_pages(row_bytes: int) -> int:
    """Pages of the scratch slot: graphed decodes' padded rows write its token 0."""
    return -(-row_bytes // PAGE_SIZE)


def spare_pages() -> int:
    """Pages a backend holds besides those its blocks' bytes need."""
    return NUM_SPARES + NUM_PREMAP


class SlotPages:
    """Page bookkeeping of a backend that reserved `num_slots + 1` slots of `slot_bytes` in `vm`
    (slot 0 is scratch) for core blocks of `block_bytes`."""

    vm: VirtualMemory
    block_size: int
    block_bytes: int
    slot_bytes: int
    max_ctx: int
    stride_bytes: int
    scratch_slot: int
    num_slots: int
    defer_reuse: bool
    device: torch.device

    def _init_pages(self, num_pages: int, num_slots: int) -> None:
        self.refcount: dict[int, int] = {}  # page -> blocks referencing it (every pool page has an entry)
        self.block_refs: dict[int, list[int]] = {}  # block id -> the pages its bytes lie in, in order
        # free pages, oldest first: plain ones, and those mapped ahead on purpose (taken last)
        self.free_plain: OrderedDict[int, None] = OrderedDict()
        self.free_ahead: OrderedDict[int, int] = OrderedDict()  # page -> offset it was mapped ahead at
        for page in self.vm.create_pages(num_pages):
            self.refcount[page] = 0
            self.free_plain[page] = None
        self.scratch_pages = self.vm.create_pages(scratch_pages(self.stride_bytes))
        for i, page in enumerate(self.scratch_pages):
            self.vm.map(self._offset(self.scratch_slot, i), page)
        self._pending: dict[int, int] = {}  # maps gathered over a pass (offset -> page), issued by _flush_maps
        self._premap_done: set[int] = set()  # free slots whose first pages are mapped ahead
        self.premap_pages = min(NUM_PREMAP // PREMAP_SLOTS, self.slot_bytes // PAGE_SIZE)
        self.free_slots = list(range(num_slots, 0, -1))
        self._resting: list[int] = []
        self.slot_of: dict[str, int] = {}
        self.checked: dict[str, int] = {}  # blocks known to be mapped right, per request
        self.first_fresh: dict[str, int] = {}  # first block position a request wrote itself
        self.num_swaps = 0  # fresh pages that needed no driver call
        self.num_reclaimed = 0  # pages taken back from free blocks
        self.num_evicted = 0  # cached blocks that left the prefix cache to give theirs back

    # -- positions and mappings ------------------------------------------------------------------
    def _offset(self, slot: int, pos: int) -> int:
        return slot * self.slot_bytes + pos * PAGE_SIZE

    def _span(self, j: int) -> range:
        """Page positions block position j's bytes lie in."""
        bb = self.block_bytes
        return range(j * bb // PAGE_SIZE, ((j + 1) * bb - 1) // PAGE_SIZE + 1)

    def _shown(self, off: int) -> int | None:
        page = self._pending.get(off)
        return page if page is not None else self.vm.mapped_page(off)

    def _show(self, off: int, page: int) -> None:
        """Queue the map that makes `off` show `page` (unmapping what shows there now)."""
        cur = self._shown(off)
        if cur == page:
            return
        if cur is not None:
            if self._pending.pop(off, None) is None:
                self.vm.unmap(off)
            self._forget_ahead(cur, off)
        self._pending[off] = page

    def _forget_ahead(self, page: int, off: int) -> None:
        """`page` no longer shows at `off`: if it was mapped ahead there, it is a plain free page again."""
        if self.free_ahead.get(page) == off:
            del self.free_ahead[page]
            self.free_plain[page] = None

    def _flush_maps(self) -> None:
        if self._pending:
            self.vm.map_many(list(self._pending.items()))
            self._pending = {}

    # -- pages of blocks -------------------------------------------------------------------------
    def _take(self, page: int) -> None:
        """A free page gets its first reference."""
        if page in self.free_plain:
            del self.free_plain[page]
        else:
            del self.free_ahead[page]
        self.refcount[page] = 1

    def _unref_block(self, block_id: int) -> None:
        for page in self.block_refs.pop(block_id, ()):
            self.refcount[page] -= 1
            if self.refcount[page] == 0:
                self.free_plain[page] = None

    def _free_at(self, off: int) -> int | None:
        """The page showing at `off` if it is free (mapped ahead, or left by an earlier tenant)."""
        cur = self._shown(off)
        return cur if cur is not None and self.refcount.get(cur) == 0 else None

    def _fresh_page(self, off: int, kv: KVCacheManager | None) -> int:
        """A free page for a fresh block at `off`: the one showing there if free, else another."""
        cur = self._free_at(off)
        if cur is not None:
            self._take(cur)
            self.num_swaps += 1
            return cur
        if not self.free_plain and not self.free_ahead:
            self._reclaim(kv)
        if self.free_plain:
            page = next(iter(self.free_plain))
        elif self.free_ahead:
            page = next(iter(self.free_ahead))
        else:
            raise RuntimeError("vattention has no free page left although the core has free blocks: "
                               "the page pool is smaller than the blocks it backs")
        self._take(page)
        self._show(off, page)
        return page

    def _reclaim(self, kv: KVCacheManager | None) -> None:
        """Free blocks give their pages back until one is free: uncached ones first, then cached ones,
        which the core then no longer finds (in its eviction order, least recently freed first)."""
        if kv is None:
            return
        for cached in (False, True):
            for block in kv.pool.free_blocks():
                if block.block_id not in self.block_refs or (block.block_hash is not None) != cached:
                    continue
                if cached:
                    kv.pool.evict(block)
                    self.num_evicted += 1
                before = len(self.free_plain)
                self._unref_block(block.block_id)
                self.num_reclaimed += len(self.free_plain) - before
                if self.free_plain:
                    return

    def _ensure_mapped(self, rid: str, slot: int, blocks: list, start: int, kv: KVCacheManager | None) -> None:
        """Blocks of `rid` not checked yet: fresh ones (written from `start` on) get pages, found
        ones show their pages in the slot."""
        bs = self.block_size
        first = self.checked.get(rid, 0)
        for j in range(max(first, -(-start // bs)), len(blocks)):
            self._unref_block(blocks[j].block_id)  # what fresh blocks held in an earlier life, first
        for j in range(first, len(blocks)):
            b = blocks[j].block_id
            span = self._span(j)
            if j * bs < start:  # computed before: found in the prefix cache, or written on an earlier step
                refs = self.block_refs[b]
                for i, page in zip(span, refs, strict=True):
                    self._show(self._offset(slot, i), page)
                continue
            self.first_fresh.setdefault(rid, j)
            refs = []
            for i in span:
                if j and i == self._span(j - 1)[-1]:  # the page the block before ends in
                    if j - 1 < self.first_fresh[rid]:
                        raise RuntimeError("a prefix hit ends inside a page: the KV manager must cut hits to "
                                           "the backend's prefix_hit_multiple")
                    page = self.block_refs[blocks[j - 1].block_id][-1]
                    self.refcount[page] += 1
                else:
                    page = self._fresh_page(self._offset(slot, i), kv)
                refs.append(page)
            self.block_refs[b] = refs
        self.checked[rid] = len(blocks)

    # -- mapping ahead ---------------------------------------------------------------------------
    def after_launch(self, batch: StepBatch) -> None:
        self._map_ahead(batch)
        self._flush_maps()

    def _premap(self, off: int) -> bool:
        """Map a plain free page at `off`, where a fresh block can take it. False if none is left."""
        if self._free_at(off) is not None:
            return True
        if not self.free_plain:
            return False
        page, _ = self.free_plain.popitem(last=False)
        self.free_ahead[page] = off
        self._show(off, page)
        return True

    def _map_ahead(self, batch: StepBatch) -> None:
        """Map free pages where each request's next tokens will go: the pages of the block its next
        decode opens, or of its prefill's next chunk's blocks (up to AHEAD pages)."""
        kv = batch.kv
        if kv is None:
            return
        for rid, ctx, known in zip(batch.request_ids, batch.context_lens, batch.known_lens, strict=True):
            slot = self.slot_of.get(rid)
            blocks = kv.req_blocks.get(rid)
            if slot is None or blocks is None:
                continue
            bb = self.block_bytes
            covered = (len(blocks) * bb - 1) // PAGE_SIZE  # the last page its blocks reach
            last = min(max(known, ctx + 1), self.max_ctx) - 1  # last position the next steps compute
            need = ((last // self.block_size + 1) * bb - 1) // PAGE_SIZE  # the last page of that block
            for i in range(covered + 1, min(need, covered + AHEAD) + 1):
                if not self._premap(self._offset(slot, i)):
                    return

    def _next_free_slots(self) -> list[int]:
        """The free slots the next new requests will take, first one first."""
        return self.free_slots[-1:-PREMAP_SLOTS - 1:-1]

    def wants_idle_time(self) -> bool:
        """Whether idle_work has pages to map: one of the next free slots is not mapped ahead yet
        and free pages are left beyond half of NUM_SPARES (kept for running requests' next pages)."""
        return len(self.free_plain) > NUM_SPARES // 2 and any(
            s not in self._premap_done for s in self._next_free_slots())

    def idle_work(self, busy: Callable[[], bool]) -> int:
        """While `busy()` (the GPU still runs a step): map free pages at the first `premap_pages`
        positions of the next PREMAP_SLOTS free slots (free_slots hands out from its end), IDLE_BATCH
        pages between two calls of `busy`. Returns the pages mapped."""
        done = 0
        for slot in self._next_free_slots():
            if slot in self._premap_done:
                continue
            for pos in range(self.premap_pages):
                off = self._offset(slot, pos)
                if self._free_at(off) is not None:
                    continue
                if len(self.free_plain) <= NUM_SPARES // 2:
                    self._flush_maps()
                    return done
                if done % IDLE_BATCH == 0:
                    self._flush_maps()
                    if not busy():
                        return done
                self._premap(off)
                done += 1
            self._premap_done.add(slot)
        self._flush_maps()
        return done

    # -- slots -----------------------------------------------------------------------------------
    def free_requests(self, request_ids: Iterable[str]) -> None:
        # With overlapping steps the step in flight may still write an ended request's slot, and the
        # slot's next tenant could remap its pages under it: a slot rests for one step first (the
        # engine has waited for that step's tokens before it launches the one after).
        # Free slots are handed out from the end of free_slots and join at its front (first in, first
        # out), so the next ones out have had time to get pages mapped ahead (idle_work). The blocks
        # keep their pages (the core may find them in its prefix cache) until reallocated.
        if self.defer_reuse:
            self.free_slots[:0] = self._resting
            self._resting = []
        for rid in request_ids:
            slot = self.slot_of.pop(rid, None)
            self.checked.pop(rid, None)
            self.first_fresh.pop(rid, None)
            if slot is not None:  # mappings stay: the next tenant may reuse the pages
                if self.defer_reuse:
                    self._resting.append(slot)
                else:
                    self.free_slots.insert(0, slot)

    def _slot(self, rid: str) -> int:
        slot = self.slot_of.get(rid)
        if slot is None:
            if not self.free_slots:
                raise RuntimeError(f"vattention has {self.num_slots} request slots and all are in use; "
                                   f"lower max_num_seqs")
            slot = self.slot_of[rid] = self.free_slots.pop()
            self._premap_done.discard(slot)
        return slot

    def _slots_of(self, batch: StepBatch) -> list[int]:
        kv = batch.kv
        assert kv is not None, "vattention needs the KV manager's block lists"
        slots = []
        for rid, ctx, q in zip(batch.request_ids, batch.context_lens, batch.query_lens, strict=True):
            slot = self._slot(rid)
            blocks = kv.req_blocks[rid]
            if self.checked.get(rid, 0) < len(blocks):
                self._ensure_mapped(rid, slot, blocks, ctx - q, kv)
            slots.append(slot)
        self._flush_maps()
        return slots

    # -- accounting ------------------------------------------------------------------------------
    def page_accounting(self) -> dict[str, int]:
        """Every physical page is referenced by blocks (as often as its count says), free, or scratch."""
        refs: dict[int, int] = {}
        for pages in self.block_refs.values():
            for p in pages:
                refs[p] = refs.get(p, 0) + 1
        used = [p for p, n in self.refcount.items() if n]
        every = used + list(self.free_plain) + list(self.free_ahead) + self.scratch_pages
        return {"pages": self.vm.num_pages, "accounted": len(every), "distinct": len(set(every)),
                "refs_match": int(refs == {p: n for p, n in self.refcount.items() if n}),
                "referenced": len(used), "free": len(self.free_plain) + len(self.free_ahead),
                "mappings": self.vm.num_mappings, "maps": self.vm.stats.maps, "unmaps": self.vm.stats.unmaps,
                "swaps": self.num_swaps, "reclaimed": self.num_reclaimed, "evicted": self.num_evicted}

    def trim(self) -> None:
        """Unmap everything no live request uses (idle time; tests use it to count leaks)."""
        self._flush_maps()
        live: set[int] = set()
        for slot in self.slot_of.values():
            live.update(range(slot * self.slot_bytes, (slot + 1) * self.slot_bytes, PAGE_SIZE))
        live.update(self._offset(self.scratch_slot, i) for i in range(len(self.scratch_pages)))
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        for off in [o for o in list(self.vm._mapped) if o not in live]:
            page = self.vm.mapped_page(off)
            self.vm.unmap(off)
            if page is not None:
                self._forget_ahead(page, off)
        self._premap_done.clear()
