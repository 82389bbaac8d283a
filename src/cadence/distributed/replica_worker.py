"""One serving replica in its own process: an LLMEngine stepping while it has work, taking adds
and aborts from the front end between steps and sending each step's outputs back."""

from __future__ import annotations

import contextlib
import os
import traceback
from multiprocessing.connection import Connection
from typing import Any


def replica_main(config: Any, index: int, cpu_threads: int | None, visible_devices: str | None,
                 max_queue: int | None, conn: Connection) -> None:
    if visible_devices is not None:  # before torch initialises CUDA
        os.environ["CUDA_VISIBLE_DEVICES"] = visible_devices
    if cpu_threads is not None:
        os.environ["OMP_NUM_THREADS"] = str(cpu_threads)
    engine = None
    try:
        import torch

        from cadence.engine.llm_engine import LLMEngine

        if cpu_threads is not None:
            torch.set_num_threads(cpu_threads)
        engine = LLMEngine(config)
        conn.send(("ready", {"max_model_len": engine.max_model_len, "block_size": engine.kv.block_size,
                             "stats": {**engine.stats(), "num_steps": 0}}))
        _serve(engine, conn, max_queue)
    except (EOFError, KeyboardInterrupt):
        pass  # the front end is gone
    except BaseException:
        with contextlib.suppress(OSError):
            conn.send(("fatal", traceback.format_exc()))
    finally:
        if engine is not None:
            engine.shutdown()


def _serve(engine: Any, conn: Connection, max_queue: int | None) -> None:
    from cadence.engine.async_engine import QueueFullError

    steps = 0
    while True:
        # an idle replica sleeps on its pipe; a busy one only drains what is there between steps
        timeout = 0 if engine.has_unfinished() else None
        while conn.poll(timeout):
            msg = conn.recv()
            kind = msg[0]
            if kind == "stop":
                return
            if kind == "abort":
                engine.abort(msg[1])  # ids it no longer has are skipped
            elif kind == "add":
                _, seq, sub_ids, prompt_ids, params = msg
                error = None
                try:
                    if max_queue is not None and engine.scheduler.num_waiting + len(sub_ids) > max_queue:
                        raise QueueFullError(f"the waiting queue is full ({max_queue} requests); retry later")
                    added: list[str] = []
                    try:
                        for j, sub_id in enumerate(sub_ids):
                            engine.add_request(sub_id, prompt_ids, params.for_sequence(j))
                            added.append(sub_id)
                    except Exception:
                        engine.abort(added)  # all n or none
                        raise
                except QueueFullError as exc:
                    error = ("queue_full", str(exc))
                except ValueError as exc:
                    error = ("value", str(exc))
                conn.send(("ack", seq, error))
            timeout = 0
        if not engine.has_unfinished():
            continue
        try:
            outputs = engine.step()
        except Exception:
            in_flight = list(engine.scheduler.requests)
            engine.abort(in_flight)
            conn.send(("step_failed", in_flight, traceback.format_exc()))
            continue
        steps += 1
        conn.send(("out", outputs, {**engine.stats(), "num_steps": steps}))
