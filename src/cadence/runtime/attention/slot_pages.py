"""The physical pages behind vattention's request slots (vattention.py holds the layout and the
attention calls): which 2 MiB page shows at which (slot, block position), spare pages mapped ahead
for running requests' next blocks and for the next free slots' first chunks, the order free slots
are handed out in, and the page accounting the tests check.

A core KV block owns `ppb` physical pages (`block_pages`); a request's slot shows its blocks' pages
at their positions. A fresh block may take a spare that was mapped ahead where it lands (a
bookkeeping swap: no driver call on the step) and the block's old pages become the spare."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch

from cadence.runtime.step_batch import StepBatch
from cadence.runtime.vmm import PAGE_SIZE, VirtualMemory

NUM_SPARES = 256  # pages to map ahead: a block per decoding request, the next chunk of prefills
# Blocks mapped ahead at the next free slots for new requests' first chunks (2,048 tokens a slot at
# 16 tokens a block, two slots). Each is an unmap and a map (~65 us on the H100), done in the host's
# wait for a step (idle_work), IDLE_BATCH pages between two looks at whether the step is done.
NUM_PREMAP = 256
PREMAP_SLOTS = 2
IDLE_BATCH = 2


def spare_blocks() -> int:
    """Spare blocks of pages a backend holds besides the core's blocks."""
    return NUM_SPARES + NUM_PREMAP


class SlotPages:
    """Page bookkeeping of a backend that reserved `num_slots + 1` slots of `slot_bytes` in `vm`
    (slot 0 is scratch) and gives each core block `ppb` pages."""

    vm: VirtualMemory
    ppb: int
    block_size: int
    slot_bytes: int
    max_ctx: int
    scratch_slot: int
    num_slots: int
    defer_reuse: bool
    device: torch.device

    def _init_pages(self, num_blocks: int, num_slots: int) -> None:
        # physical pages: block b owns block_pages[b] (it may trade them with a spare, see above)
        pages = self.vm.create_pages(num_blocks * self.ppb)
        self.block_pages = [pages[b * self.ppb:(b + 1) * self.ppb] for b in range(num_blocks)]
        spare = self.vm.create_pages(spare_blocks() * self.ppb)
        self.spares = [spare[i * self.ppb:(i + 1) * self.ppb] for i in range(spare_blocks())]
        self.scratch_pages = self.vm.create_pages(self.ppb)
        for i, page in enumerate(self.scratch_pages):
            self.vm.map(self.scratch_slot * self.slot_bytes + i * PAGE_SIZE, page)
        self.premapped: dict[tuple[int, int], list[int]] = {}  # (slot, block position) -> spare pages
        self._pending: list[tuple[int, int]] = []  # maps gathered over a pass, issued by _flush_maps
        self._premap_done: set[int] = set()  # free slots whose first chunk is mapped ahead
        self.premap_blocks = min(NUM_PREMAP // PREMAP_SLOTS, -(-self.max_ctx // self.block_size))
        self.free_slots = list(range(num_slots, 0, -1))
        self._resting: list[int] = []
        self.slot_of: dict[str, int] = {}
        self.checked: dict[str, int] = {}  # blocks known to be mapped right, per request
        self.num_swaps = 0

    # -- pages ---------------------------------------------------------------------------------
    def _offset(self, slot: int, block_pos: int, i: int = 0) -> int:
        return slot * self.slot_bytes + (block_pos * self.ppb + i) * PAGE_SIZE

    def _place(self, slot: int, pos: int, pages: list[int]) -> None:
        """Make block position `pos` of `slot` show `pages`, remapping only what differs."""
        spare = self.premapped.pop((slot, pos), None)
        if spare is not None:
            self.spares.append(spare)
        self._remap(slot, pos, pages)

    def _remap(self, slot: int, pos: int, pages: list[int]) -> None:
        """Queue the maps that make block position `pos` of `slot` show `pages` (unmapping what
        differs now; the maps go to the driver in one batch at the next flush)."""
        for i, page in enumerate(pages):
            off = self._offset(slot, pos, i)
            cur = self.vm.mapped_page(off)
            if cur == page:
                continue
            if cur is not None:
                self.vm.unmap(off)
            self._pending.append((off, page))

    def _ensure_mapped(self, rid: str, slot: int, blocks: list, start: int) -> None:
        bs = self.block_size
        for j in range(self.checked.get(rid, 0), len(blocks)):
            b = blocks[j].block_id
            want = self.block_pages[b]
            if all(self.vm.mapped_page(self._offset(slot, j, i)) == p for i, p in enumerate(want)):
                self.premapped.pop((slot, j), None)
                continue
            spare = self.premapped.get((slot, j))
            if spare is not None and j * bs >= start:
                # a fresh block: its content does not matter, so it takes the pre-mapped page
                del self.premapped[(slot, j)]
                self.block_pages[b] = spare
                self.spares.append(want)
                self.num_swaps += 1
                continue
            self._place(slot, j, want)
        self.checked[rid] = len(blocks)

    def _flush_maps(self) -> None:
        if self._pending:
            self.vm.map_many(self._pending)
            self._pending = []

    def after_launch(self, batch: StepBatch) -> None:
        self._map_ahead(batch)
        self._flush_maps()

    def _map_ahead(self, batch: StepBatch) -> None:
        """Map spare pages where each request's next tokens will go: the block its next decode
        opens, or the blocks of its prefill's next chunk (up to 32 blocks ahead)."""
        bs, kv = self.block_size, batch.kv
        if kv is None:
            return
        for rid, ctx, known in zip(batch.request_ids, batch.context_lens, batch.known_lens, strict=True):
            if not self.spares:
                return
            if known <= ctx and ctx % bs:
                continue  # a decode whose next token lands in a block it already has
            slot = self.slot_of.get(rid)
            blocks = kv.req_blocks.get(rid)
            if slot is None or blocks is None:
                continue
            last = min(max(known, ctx + 1), self.max_ctx) - 1  # last position the next steps compute
            for pos in range(len(blocks), min(last // bs + 1, len(blocks) + 32)):
                if (slot, pos) in self.premapped:
                    continue
                if not self.spares:
                    return
                self._premap(slot, pos)

    def _premap(self, slot: int, pos: int) -> None:
        """Map a spare at block position `pos` of `slot`, where a fresh block can take it."""
        pages = self.spares.pop()
        self._remap(slot, pos, pages)
        self.premapped[(slot, pos)] = pages

    def _next_free_slots(self) -> list[int]:
        """The free slots the next new requests will take, first one first."""
        return self.free_slots[-1:-PREMAP_SLOTS - 1:-1]

    def wants_idle_time(self) -> bool:
        """Whether idle_work has pages to map: one of the next free slots is not mapped ahead yet
        and spares are left beyond half of NUM_SPARES (kept for running requests' next blocks)."""
        return len(self.spares) > NUM_SPARES // 2 and any(
            s not in self._premap_done for s in self._next_free_slots())

    def idle_work(self, busy: Callable[[], bool]) -> int:
        """While `busy()` (the GPU still runs a step): map spares at the first `premap_blocks`
        positions of the next PREMAP_SLOTS free slots (free_slots hands out from its end), IDLE_BATCH
        pages between two calls of `busy`. Returns the pages mapped."""
        done = 0
        for slot in self._next_free_slots():
            if slot in self._premap_done:
                continue
            for pos in range(self.premap_blocks):
                if (slot, pos) in self.premapped:
                    continue
                if len(self.spares) <= NUM_SPARES // 2:
                    self._flush_maps()
                    return done
                if done % IDLE_BATCH == 0:
                    self._flush_maps()
                    if not busy():
                        return done
                self._premap(slot, pos)
                done += self.ppb
            self._premap_done.add(slot)
        self._flush_maps()
        return done

    def free_requests(self, request_ids: Iterable[str]) -> None:
        # With overlapping steps the step in flight may still write an ended request's slot, and the
        # slot's next tenant could remap its pages under it: a slot rests for one step first (the
        # engine has waited for that step's tokens before it launches the one after).
        # Free slots are handed out from the end of free_slots and join at its front (first in, first
        # out), so the next ones out have had time to get pages mapped ahead (idle_work).
        if self.defer_reuse:
            self.free_slots[:0] = self._resting
            self._resting = []
        for rid in request_ids:
            slot = self.slot_of.pop(rid, None)
            self.checked.pop(rid, None)
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
                self._ensure_mapped(rid, slot, blocks, ctx - q)
            slots.append(slot)
        self._flush_maps()
        return slots

    def page_accounting(self) -> dict[str, int]:
        """Every physical page is a block's, a spare (free or mapped ahead), or the scratch page."""
        owned = [p for pages in self.block_pages for p in pages]
        spare = [p for pages in self.spares for p in pages]
        ahead = [p for pages in self.premapped.values() for p in pages]
        every = owned + spare + ahead + self.scratch_pages
        return {"pages": self.vm.num_pages, "accounted": len(every), "distinct": len(set(every)),
                "mappings": self.vm.num_mappings, "maps": self.vm.stats.maps, "unmaps": self.vm.stats.unmaps,
                "swaps": self.num_swaps}

    def trim(self) -> None:
        """Unmap everything no live request uses (idle time; tests use it to count leaks)."""
        live: set[int] = set()
        for slot in self.slot_of.values():
            live.update(range(slot * self.slot_bytes, (slot + 1) * self.slot_bytes, PAGE_SIZE))
        live.update(self._offset(self.scratch_slot, 0, i) for i in range(self.ppb))
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        for off in [o for o in list(self.vm._mapped) if o not in live]:
            self.vm.unmap(off)
        for key in [k for k in self.premapped if k[0] not in self.slot_of.values()]:
            self.spares.append(self.premapped.pop(key))
        self._premap_done.clear()
