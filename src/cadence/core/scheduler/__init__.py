"""Batching policies behind one interface, chosen by name."""

from __future__ import annotations

from cadence.core.config import SchedulerConfig
from cadence.core.kv.kv_cache_manager import KVCacheManager
from cadence.core.scheduler.base import Scheduler
from cadence.core.scheduler.orca import OrcaScheduler
from cadence.core.scheduler.output import ScheduledRequest, SchedulerOutput
from cadence.core.scheduler.sarathi import SarathiScheduler
from cadence.core.scheduler.static import StaticScheduler
from cadence.core.scheduler.vllm import VLLMScheduler

SCHEDULERS: dict[str, type[Scheduler]] = {
    cls.name: cls for cls in (SarathiScheduler, VLLMScheduler, OrcaScheduler, StaticScheduler)
}


def make_scheduler(config: SchedulerConfig, kv: KVCacheManager, max_model_len: int) -> Scheduler:
    try:
        cls = SCHEDULERS[config.policy]
    except KeyError:
        raise ValueError(f"unknown scheduler policy {config.policy!r}; choose one of {', '.join(SCHEDULERS)}") from None
    return cls(config, kv, max_model_len)


__all__ = ["SCHEDULERS", "ScheduledRequest", "Scheduler", "SchedulerOutput", "make_scheduler"]
