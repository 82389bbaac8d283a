"""vAttention: each request's KV contiguous in virtual memory, backed by 2 MiB pages on demand.

Layout: one reserved range of `slots x max_ctx` token rows; a row holds K and V of every layer of
one token ([2, layers, kv_heads, head_dim], the model's own size, no padding). A slot's pages are
mapped as its tokens need them, so a request never holds more than the unfilled part of its last
page. Where a row divides a page (llama3-8b: 128 KiB, 16 tokens a page) a 16-token core block is one
page; otherwise (qwen3-0.6b: 112 KiB, 8 blocks to 7 pages) a page holds parts of two blocks and the
core cuts prefix hits to whole pages (`prefix_hit_multiple`, slot_pages.py says why). Prefix
sharing is the same physical page mapped into two slots. Attention is PyTorch's flash kernel (and,
for decodes, a Triton kernel: decode.py) over the strided per-layer view with `seqused_k`; the
kernels know nothing of pages.

Mapping costs driver calls (tens of microseconds a page), so it is kept off the step (the page
bookkeeping is `slot_pages.SlotPages`, a base of the backend): once a step
is queued on the GPU, every request whose next token opens a new block gets a spare page mapped
there ahead of time; when the core then hands it a fresh block, the block takes the spare's
physical page (a bookkeeping swap, no driver call) and the block's old page becomes a spare. The
same goes for requests not yet seen: while the host waits for a step's tokens, the first block
positions of the slots the next new requests will take (free slots are handed out first-in,
first-out) get spare pages mapped, a page at a time until the step is done, so a new prefill's
first chunk costs no driver call either. Slots keep their mappings when a request ends; a later
request in the slot remaps only the pages that differ, and everything is unmapped and released on
shutdown."""

from __future__ import annotations

import logging
import math

import torch

from cadence.models.config import ModelConfig
from cadence.runtime import kernels
from cadence.runtime.attention import decode, slot_pages
from cadence.runtime.attention.base import AttentionBackend, StepAttention
from cadence.runtime.attention.decode import DecodeKernel
from cadence.runtime.attention.flash import flash_varlen
from cadence.runtime.attention.slot_pages import SlotPages
from cadence.runtime.step_batch import StepBatch
from cadence.runtime.vmm import PAGE_SIZE, VirtualMemory, VMMError

logger = logging.getLogger("cadence.vattention")
# A mixed step attends its decodes apart from its prefill chunks (_mixed_attention) only when one of
# them has at least `split_min_context` tokens: the split costs a second kernel call a layer, host
# time that small models' mixed steps (bound by the host's launches) pay in full and only long
# decodes win back; large models' steps are bound by the device, where the split wins from short
# contexts on. With flash decodes, measured on the H100 (results/mixed_step_split_h100.json, 16
# decodes + a 700-token chunk, two hosts): qwen3-0.6b one call faster by 0.5-1.8 ms up to 1,500
# tokens, the split faster by 2.9-3.0 ms at 6,000; llama3-8b the split faster or equal from 500
# tokens. With the Triton decode kernel, on the H200 (results/mixed_step_split_h200.json, 24 decodes
# + a 700-token chunk, one engine alternating): qwen3-0.6b one call faster by 0.6 ms at 100 tokens,
# even at 250, the split faster by 0.0-0.2 ms at 500, 2.2 ms at 1,500, 5.1 ms at 3,000.
SMALL_MODEL_HIDDEN = 2048  # models narrower than this count as host-bound here
SMALL_MODEL_SPLIT_MIN_CONTEXT = {"flash": 2048, "triton": 256}  # by decode kernel


def split_min_context(config: ModelConfig, decode_kernel: str) -> int:
    return SMALL_MODEL_SPLIT_MIN_CONTEXT[decode_kernel] if config.hidden_size < SMALL_MODEL_HIDDEN else 0


def leading_decodes(query_lens: list[int]) -> int:
    """How many requests at the head of a step have one query token, when others follow (0 if none
    does or all do): the decodes a mixed step can attend to separately."""
    d = 0
    for q in query_lens:
        if q != 1:
            break
        d += 1
    return d if d < len(query_lens) else 0


def _write(k: torch.Tensor, v: torch.Tensor, k_rows: torch.Tensor, v_rows: torch.Tensor, idx: torch.Tensor) -> None:
    """This step's K and V into their rows: one fused launch on the GPU."""
    if kernels.enabled(k):
        kernels.kv_write(k, v, k_rows, v_rows, idx)
    else:
        k_rows.index_copy_(0, idx, k)
        v_rows.index_copy_(0, idx, v)


def layout(config: ModelConfig, block_size: int, dtype: torch.dtype) -> tuple[int, int, int]:
    """(row bytes, block bytes, prefix_hit_multiple): the blocks a prefix hit must be a multiple of
    so that it ends on a page boundary (1 where a block is whole pages or a page whole blocks)."""
    row = config.kv_bytes_per_token(torch.empty((), dtype=dtype).element_size())
    block = row * block_size
    return row, block, PAGE_SIZE // math.gcd(block, PAGE_SIZE)


class VAttentionBackend(SlotPages, AttentionBackend):
    """The layout and the attention calls; the pages behind the slots are SlotPages' (slot_pages.py)."""

    name = "vattention"
    supports_cuda_graphs = True

    @classmethod
    def fixed_overhead_bytes(cls, config: ModelConfig, block_size: int, dtype: torch.dtype,
                             max_num_seqs: int = 256) -> int:
        scratch = slot_pages.scratch_pages(layout(config, block_size, dtype)[0])
        return (cls._extra_pages(config, block_size, dtype, max_num_seqs) + scratch) * PAGE_SIZE

    @staticmethod
    def _extra_pages(config: ModelConfig, block_size: int, dtype: torch.dtype, max_num_seqs: int) -> int:
        """Pool pages beyond the blocks' bytes: spares for mapping ahead and, where pages hold parts
        of two blocks, one a running request (its blocks' bytes end mid-page). The scratch slot's
        pages come on top."""
        straddle = max_num_seqs if layout(config, block_size, dtype)[2] > 1 else 0
        return slot_pages.spare_pages() + straddle

    @staticmethod
    def _check_device(device: torch.device) -> None:
        if device.type != "cuda":
            raise VMMError("the vattention backend runs on CUDA GPUs only")

    def _reserve(self, num_bytes: int) -> VirtualMemory:
        index = self.device.index if self.device.index is not None else torch.cuda.current_device()
        return VirtualMemory(index, num_bytes)

    def __init__(self, config: ModelConfig, num_blocks: int, block_size: int, dtype: torch.dtype,
                 device: torch.device, **kwargs: int | bool | None) -> None:
        super().__init__(config, num_blocks, block_size, dtype, device, **kwargs)  # type: ignore[arg-type]
        self._check_device(device)
        itemsize = torch.empty((), dtype=dtype).element_size()
        self.stride_bytes, self.block_bytes, self.prefix_hit_multiple = layout(config, block_size, dtype)
        L, H, D = config.num_layers, config.num_kv_heads, config.head_dim
        # a slot is whole pages: its token count a multiple of the blocks that fill whole pages
        whole = self.prefix_hit_multiple * block_size
        max_ctx = min(self.max_model_len, num_blocks * block_size)
        self.max_ctx = -(-max_ctx // whole) * whole
        self.slot_bytes = self.max_ctx * self.stride_bytes
        # with overlapping steps a slot rests one step after its request ends (free_requests), so
        # up to twice max_num_seqs slots can be taken at once
        num_slots = self.max_num_seqs * (2 if self.defer_reuse else 1)
        while True:  # the range is virtual: only its pages cost memory, but the driver may cap it
            try:
                self.vm = self._reserve((num_slots + 1) * self.slot_bytes)
                break
            except VMMError as exc:
                if num_slots <= 8:
                    raise
                logger.warning("%s; trying %d slots", exc, num_slots // 2)
                num_slots //= 2
        self.num_slots = num_slots
        # Slot 0 is scratch: padded rows of graphed decodes write there, and its first page stays
        # mapped so the range's base address is valid memory (Triton checks pointers it is given).
        self.scratch_slot = 0
        block_pages = -(-num_blocks * self.block_bytes // PAGE_SIZE)
        self._init_pages(block_pages + self._extra_pages(config, block_size, dtype, self.max_num_seqs), num_slots)
        # the range as [slot, token, K/V, layer, head, dim], and per layer flat [slot*token, head, dim] views
        se = self.stride_bytes // itemsize
        flat = self.vm.tensor().view(dtype)
        self.kv = flat.as_strided((num_slots + 1, self.max_ctx, 2, L, H, D),
                                  (self.max_ctx * se, se, L * H * D, H * D, D, 1))
        self.k_layers = [self.kv[:, :, 0, layer].flatten(0, 1) for layer in range(L)]
        self.v_layers = [self.kv[:, :, 1, layer].flatten(0, 1) for layer in range(L)]
        self.scale = config.head_dim**-0.5
        # static buffers for CUDA-graph decodes: rows cu_q, cu_k, seqused_k (int32)
        n = self.max_num_seqs
        self.graph_meta = torch.zeros(3, n + 1, dtype=torch.int32, device=device)
        self.graph_meta[0] = torch.arange(n + 1, dtype=torch.int32, device=device)
        self.decode_kernel_kind = decode.resolve(self.decode_kernel_kind, device)
        self._decode_kernels: dict[int, DecodeKernel] = {}  # per row count (see decode.decode_kernel)
        self.split_min_context = split_min_context(config, self.decode_kernel_kind)

    # -- attention -----------------------------------------------------------------------------
    def _attention(self, write_idx: torch.Tensor, cu_q: torch.Tensor, cu_k: torch.Tensor,
                   seqused: torch.Tensor, max_q: int, max_k: int) -> StepAttention:
        k_layers, v_layers, scale = self.k_layers, self.v_layers, self.scale

        def attn(layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            kc, vc = k_layers[layer], v_layers[layer]
            _write(k, v, kc, vc, write_idx)
            return flash_varlen(q, kc, vc, cu_q, cu_k, max_q, max_k, seqused, scale)

        return attn

    def _decode_attention(self, write_idx: torch.Tensor, cu_k: torch.Tensor, seqused: torch.Tensor,
                          max_k: int) -> StepAttention:
        k_layers, v_layers = self.k_layers, self.v_layers
        kernel = self._decode_kernel(int(write_idx.shape[0]))

        def attn(layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            kc, vc = k_layers[layer], v_layers[layer]
            _write(k, v, kc, vc, write_idx)
            return kernel(q, kc, vc, cu_k, seqused, max_k)

        return attn

    def _mixed_attention(self, write_idx: torch.Tensor, d: int, meta: torch.Tensor, B: int, max_k_dec: int,
                         max_q: int, max_k: int) -> StepAttention:
        """A step whose first `d` requests decode and the rest prefill: the decodes go through the
        decode kernel (for a few requests, one query row each, which the kernel splits over long
        contexts), the prefills through the varlen call. In one varlen call with the prefills' query
        length, every decode's context would be walked by a single thread block per head: a mixed
        step of W3's long decodes took ~35-40 ms on the H100, against ~10 ms decode-only."""
        k_layers, v_layers, scale = self.k_layers, self.v_layers, self.scale
        kernel = self._decode_kernel(d)
        cu_k, used = meta[1], meta[2]
        cu_q_pre = meta[0, d:] - d
        dec_cu_k, dec_used, pre_cu_k, pre_used = cu_k[:d + 1], used[:d], cu_k[d:], used[d:B]

        def attn(layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            kc, vc = k_layers[layer], v_layers[layer]
            _write(k, v, kc, vc, write_idx)
            dec = kernel(q[:d], kc, vc, dec_cu_k, dec_used, max_k_dec)
            pre = flash_varlen(q[d:], kc, vc, cu_q_pre, pre_cu_k, max_q, max_k, pre_used, scale)
            return torch.cat((dec, pre))

        return attn

    def _decode_kernel(self, rows: int) -> DecodeKernel:
        """Decode attention for `rows` requests (decode.decode_kernel: the Triton kernel, or flash)."""
        kernel = self._decode_kernels.get(rows)
        if kernel is None:
            c = self.config
            kernel = decode.decode_kernel(rows, c.num_heads, c.num_kv_heads, self.scale, self.device, self.max_ctx,
                                          self.decode_kernel_kind)
            self._decode_kernels[rows] = kernel
        return kernel

    def bind(self, batch: StepBatch) -> StepAttention:
        slots = self._slots_of(batch)
        B = len(slots)
        meta = torch.empty(4, B + 1, dtype=torch.int32)
        cu_q, cu_k, used, qlen = meta[0], meta[1], meta[2], meta[3]
        qlens = batch.query_lens
        cu_q[0] = 0
        cu_q[1:] = torch.tensor(qlens, dtype=torch.int32).cumsum(0)
        cu_k[:B] = torch.tensor(slots, dtype=torch.int32) * self.max_ctx
        cu_k[B] = (self.num_slots + 1) * self.max_ctx
        used[:B] = torch.tensor(batch.context_lens, dtype=torch.int32)
        qlen[:B] = torch.tensor(qlens, dtype=torch.int32)
        meta = meta.to(self.device, non_blocking=True)
        bases = meta[1, :B].long()
        if batch.is_decode_only:
            write_idx = bases + batch.positions
            return self._decode_attention(write_idx, meta[1], meta[2, :B], max(batch.context_lens))
        write_idx = torch.repeat_interleave(bases, meta[3, :B].long(), output_size=batch.num_tokens)
        write_idx += batch.positions
        d = leading_decodes(qlens)
        if d and max(batch.context_lens[:d]) < self.split_min_context:
            d = 0  # short decodes: one varlen call for the whole step
        if d == 0:
            return self._attention(write_idx, meta[0], meta[1], meta[2, :B], max(qlens), max(batch.context_lens))
        return self._mixed_attention(write_idx, d, meta, B, max(batch.context_lens[:d]), max(qlens[d:]),
                                     max(batch.context_lens[d:]))

    def prepare_decode(self, batch: StepBatch, bucket: int) -> None:
        slots = self._slots_of(batch)
        pad = bucket - len(slots)
        m = self.max_ctx
        # padded rows: one token in the scratch slot
        host = torch.tensor([[s * m for s in slots] + [self.scratch_slot * m] * pad, batch.context_lens + [1] * pad],
                            dtype=torch.int32)
        self.graph_meta[1:, :bucket].copy_(host, non_blocking=True)

    def graph_attention(self, bucket: int, positions: torch.Tensor) -> StepAttention:
        meta = self.graph_meta
        meta[1, :bucket] = self.scratch_slot * self.max_ctx
        meta[2, :bucket] = 1
        meta[1, bucket] = (self.num_slots + 1) * self.max_ctx
        cu_k, used = meta[1, :bucket + 1], meta[2, :bucket]
        k_layers, v_layers, max_ctx = self.k_layers, self.v_layers, self.max_ctx
        state: dict[str, torch.Tensor] = {}
        kernel = self._decode_kernel(bucket)  # static shapes per bucket: capturable

        def attn(layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            if layer == 0:  # once per step: each token's row is its slot's base plus its position
                state["idx"] = meta[1, :bucket].long() + positions
            kc, vc = k_layers[layer], v_layers[layer]
            _write(k, v, kc, vc, state["idx"])
            return kernel(q, kc, vc, cu_k, used, max_ctx)

        return attn

    # -- accounting ----------------------------------------------------------------------------
    def fragmentation(self, context_lens: list[int]) -> dict[str, float]:
        """Of the pages live requests' blocks lie in: how much holds KV, and how much is the unfilled
        tail of each request's last page (rows are the model's own size: no padding)."""
        if not context_lens:
            return {}
        used = sum(context_lens) * self.stride_bytes
        pages = sum(-(-(-(-c // self.block_size) * self.block_bytes) // PAGE_SIZE) for c in context_lens)
        mapped = pages * PAGE_SIZE
        return {"requests": len(context_lens), "mapped_bytes": mapped, "kv_bytes": used,
                "tail_waste": (mapped - used) / mapped,
                "waste_pages_per_request": (mapped - used) / PAGE_SIZE / len(context_lens)}

    def release(self) -> None:
        vm = getattr(self, "vm", None)
        if vm is not None:
            self.k_layers = self.v_layers = []
            self.kv = None  # type: ignore[assignment]
            vm.close()
