"""A tensor-parallel worker process (rank >= 1): builds its shard of the engine, then runs the
forward of every step plan the driver sends until told to stop."""

from __future__ import annotations

import contextlib
import os
import pickle
import traceback
from multiprocessing.connection import Connection
from typing import Any


def worker_main(config: Any, rank: int, port: int, conn: Connection) -> None:
    size = config.parallel.tensor_parallel_size
    engine = None
    try:
        import torch

        from cadence.distributed.group import init_process_group
        from cadence.engine.llm_engine import LLMEngine, _resolve_device

        device = _resolve_device(config.load.device)
        if device.type == "cpu":  # the driver put this rank's share of the threads in our environment
            torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
        else:
            torch.cuda.set_device(rank)
        conn.send(("joining", None))
        init_process_group(device.type, rank, size, port, config.parallel.distributed_timeout)
        engine = LLMEngine(config, tp_rank=rank)
        runner = engine.runner
        while True:
            data = conn.recv_bytes()
            if data == b"":
                break
            runner.execute_plan(pickle.loads(data))
    except EOFError:
        pass  # the driver is gone: nothing left to serve
    except BaseException:
        with contextlib.suppress(OSError):
            conn.send(("error", traceback.format_exc()))
        os._exit(1)  # leave at once: the driver's pending collective fails fast instead of timing out
    if engine is not None:
        engine.shutdown()
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()
