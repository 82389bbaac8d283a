"""CUDA virtual memory from Python (cuda.bindings.driver): address ranges reserved once, backed by
2 MiB physical pages that are mapped and unmapped while the range stays put.

Every driver call is checked; a failure raises `VMMError` naming the call and the driver's error.
The counters (maps, unmaps, pages alive, seconds spent mapping) let tests prove nothing leaks and
let benchmarks report what page mapping costs."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

PAGE_SIZE = 2 << 20  # the driver's granularity on current GPUs; checked at start-up


class VMMError(RuntimeError):
    pass


def _driver() -> Any:
    try:
        from cuda.bindings import driver
    except ImportError as exc:  # CPU machines and old installs
        raise VMMError("the vattention backend needs the cuda-bindings package (cuda.bindings.driver)") from exc
    return driver


def _check(result: Any, what: str) -> Any:
    """cuda.bindings returns (error, *values): raise on error, else return the value(s)."""
    drv = _driver()
    err, *values = result if isinstance(result, tuple) else (result,)
    if err != drv.CUresult.CUDA_SUCCESS:
        name = drv.cuGetErrorName(err)
        name = name[1].decode() if isinstance(name, tuple) and name[0] == drv.CUresult.CUDA_SUCCESS else str(err)
        raise VMMError(f"{what} failed: {name}")
    if not values:
        return None
    return values[0] if len(values) == 1 else tuple(values)


@dataclass
class VMMStats:
    pages_created: int = 0
    pages_released: int = 0
    maps: int = 0
    unmaps: int = 0
    map_seconds: float = 0.0
    unmap_seconds: float = 0.0

    @property
    def pages_alive(self) -> int:
        return self.pages_created - self.pages_released

    @property
    def mappings_alive(self) -> int:
        return self.maps - self.unmaps


@dataclass
class VirtualMemory:
    """One device's physical pages and one reserved virtual range they are mapped into."""

    device_index: int
    range_bytes: int
    stats: VMMStats = field(default_factory=VMMStats)

    def __post_init__(self) -> None:
        import torch

        drv = _driver()
        torch.cuda.init()
        torch.zeros(1, device=f"cuda:{self.device_index}")  # make the primary context current
        prop = drv.CUmemAllocationProp()
        prop.type = drv.CUmemAllocationType.CU_MEM_ALLOCATION_TYPE_PINNED
        prop.location.type = drv.CUmemLocationType.CU_MEM_LOCATION_TYPE_DEVICE
        prop.location.id = self.device_index
        self._prop = prop
        gran = int(_check(drv.cuMemGetAllocationGranularity(
            prop, drv.CUmemAllocationGranularity_flags.CU_MEM_ALLOC_GRANULARITY_MINIMUM),
            "cuMemGetAllocationGranularity"))
        if PAGE_SIZE % gran:
            raise VMMError(f"the driver's page granularity is {gran} bytes; Cadence maps {PAGE_SIZE}-byte pages")
        access = drv.CUmemAccessDesc()
        access.location = prop.location
        access.flags = drv.CUmemAccess_flags.CU_MEM_ACCESS_FLAGS_PROT_READWRITE
        self._access = [access]
        self.range_bytes = -(-self.range_bytes // PAGE_SIZE) * PAGE_SIZE
        self.base = int(_check(drv.cuMemAddressReserve(self.range_bytes, PAGE_SIZE, 0, 0),
                               f"cuMemAddressReserve({self.range_bytes / 2**30:.1f} GiB)"))
        self._handles: list[Any] = []
        self._mapped: dict[int, int] = {}  # byte offset -> handle index
        self._closed = False

    # -- physical pages -----------------------------------------------------------------------
    def create_pages(self, n: int) -> list[int]:
        """Allocate n physical pages; returns their indices (handles stay inside this object)."""
        drv = _driver()
        first = len(self._handles)
        for _ in range(n):
            handle = _check(drv.cuMemCreate(PAGE_SIZE, self._prop, 0), "cuMemCreate(2 MiB)")
            self._handles.append(handle)
            self.stats.pages_created += 1
        return list(range(first, first + n))

    @property
    def num_pages(self) -> int:
        return len(self._handles)

    # -- mapping -------------------------------------------------------------------------------
    def map(self, offset: int, page: int) -> None:
        """Back [offset, offset + 2 MiB) of the range with physical page `page`."""
        drv = _driver()
        if offset in self._mapped:
            raise VMMError(f"offset {offset:#x} is already mapped")
        t = time.perf_counter()
        ptr = self.base + offset
        _check(drv.cuMemMap(ptr, PAGE_SIZE, 0, self._handles[page], 0), "cuMemMap")
        _check(drv.cuMemSetAccess(ptr, PAGE_SIZE, self._access, 1), "cuMemSetAccess")
        self.stats.map_seconds += time.perf_counter() - t
        self.stats.maps += 1
        self._mapped[offset] = page

    def map_many(self, pairs: list[tuple[int, int]]) -> None:
        """Map (offset, page) pairs, then grant access once per run of adjacent offsets: access
        changes cost more than maps, and a prefill's new blocks are adjacent."""
        if not pairs:
            return
        drv = _driver()
        t = time.perf_counter()
        pairs = sorted(pairs)
        for offset, page in pairs:
            if offset in self._mapped:
                raise VMMError(f"offset {offset:#x} is already mapped")
            _check(drv.cuMemMap(self.base + offset, PAGE_SIZE, 0, self._handles[page], 0), "cuMemMap")
            self._mapped[offset] = page
        start = prev = pairs[0][0]
        for offset, _ in pairs[1:] + [(-1, -1)]:
            if offset != prev + PAGE_SIZE:
                _check(drv.cuMemSetAccess(self.base + start, prev + PAGE_SIZE - start, self._access, 1),
                       "cuMemSetAccess")
                start = offset
            prev = offset
        self.stats.map_seconds += time.perf_counter() - t
        self.stats.maps += len(pairs)

    def unmap(self, offset: int) -> None:
        drv = _driver()
        if offset not in self._mapped:
            raise VMMError(f"offset {offset:#x} is not mapped")
        t = time.perf_counter()
        _check(drv.cuMemUnmap(self.base + offset, PAGE_SIZE), "cuMemUnmap")
        self.stats.unmap_seconds += time.perf_counter() - t
        self.stats.unmaps += 1
        del self._mapped[offset]

    def mapped_page(self, offset: int) -> int | None:
        return self._mapped.get(offset)

    @property
    def num_mappings(self) -> int:
        return len(self._mapped)

    def tensor(self, num_bytes: int | None = None):
        """The range as a flat uint8 CUDA tensor (it does not own the memory)."""
        import torch

        n = self.range_bytes if num_bytes is None else num_bytes

        class _Range:  # the one protocol torch reads foreign device pointers through
            __cuda_array_interface__ = {"shape": (n,), "typestr": "|u1", "data": (self.base, False), "version": 3}

        return torch.as_tensor(_Range(), device=f"cuda:{self.device_index}")

    # -- shutdown ------------------------------------------------------------------------------
    def unmap_all(self) -> None:
        for offset in list(self._mapped):
            self.unmap(offset)

    def close(self) -> None:
        """Unmap everything, release every page, free the range. Safe to call twice."""
        if self._closed:
            return
        import torch

        torch.cuda.synchronize(self.device_index)  # no kernel may still read the range
        drv = _driver()
        self.unmap_all()
        for handle in self._handles:
            _check(drv.cuMemRelease(handle), "cuMemRelease")
            self.stats.pages_released += 1
        self._handles = []
        _check(drv.cuMemAddressFree(self.base, self.range_bytes), "cuMemAddressFree")
        self._closed = True
