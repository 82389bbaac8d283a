"""The tensor-parallel group seen from the driver (rank 0): it starts one worker process per other
rank, joins the torch.distributed group with them, sends each step's plan and stops them.

Control travels over a pipe per worker (the plan is pickled once per step and written to each
pipe), data over torch.distributed collectives (gloo on CPU, NCCL on GPU). A worker blocks on its
pipe between steps, so an idle server has no collective waiting to time out; every collective is
bounded by `distributed_timeout`, and a worker that fails sends its traceback before it exits, so
the driver raises that error instead of hanging."""

from __future__ import annotations

import contextlib
import logging
import multiprocessing as mp
import os
import pickle
import socket
import time
from datetime import timedelta
from multiprocessing.connection import Connection
from typing import Any

import torch
import torch.distributed as dist

from cadence.distributed.shard import TensorParallelError
from cadence.distributed.step_plan import StepPlan

logger = logging.getLogger("cadence.distributed")
STOP = b""  # the message that ends a worker


def worker_env(device_type: str, size: int) -> dict[str, str]:
    """Environment every rank needs: NVLink multicast off (our GPU hosts' rule), and on CPU an
    equal share of this process's threads (all the cores, or a replica's share of them) so that
    the ranks do not oversubscribe the cores."""
    env = {"NCCL_NVLS_ENABLE": "0"}
    if device_type == "cpu":
        env["OMP_NUM_THREADS"] = str(max(1, torch.get_num_threads() // size))
    return env


def init_process_group(device_type: str, rank: int, size: int, port: int, timeout: float) -> None:
    if dist.is_initialized():
        raise TensorParallelError("a torch.distributed group is already running in this process; "
                                  "shut the other tensor-parallel engine down first")
    backend = "nccl" if device_type == "cuda" else "gloo"
    dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=size,
                            timeout=timedelta(seconds=timeout))


def agree_min(value: int, device: torch.device) -> int:
    """The smallest `value` over the ranks (the KV cache must hold as many blocks on each)."""
    t = torch.tensor([value], dtype=torch.long, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return int(t.item())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class TensorParallelGroup:
    def __init__(self, size: int, device_type: str, timeout: float, procs: list[Any],
                 conns: list[Connection]) -> None:
        self.size = size
        self.device_type = device_type
        self.timeout = timeout
        self.procs = procs
        self.conns = conns  # conns[i] talks to rank i + 1
        self._threads_before = torch.get_num_threads()
        self._env_before: dict[str, str | None] = {}
        self.closed = False

    @classmethod
    def launch(cls, config: Any, device: torch.device) -> TensorParallelGroup:
        """Start ranks 1..size-1 (each builds its shard of `config`: an EngineConfig) and join them
        as rank 0. Returns once the process group is up."""
        from cadence.distributed.worker import worker_main

        size = config.parallel.tensor_parallel_size
        timeout = config.parallel.distributed_timeout
        env = worker_env(device.type, size)
        env_before = {k: os.environ.get(k) for k in env}
        os.environ.update(env)  # rank 0 uses NCCL too; spawned workers inherit the rest
        port = _free_port()
        ctx = mp.get_context("spawn")
        procs, conns = [], []
        for rank in range(1, size):
            ours, theirs = ctx.Pipe()
            proc = ctx.Process(target=worker_main, args=(config, rank, port, theirs), daemon=True,
                               name=f"cadence-tp-rank{rank}")
            proc.start()
            theirs.close()
            procs.append(proc)
            conns.append(ours)
        group = cls(size, device.type, timeout, procs, conns)
        group._env_before = env_before
        try:
            group._wait_for("joining", timeout)
            if device.type == "cpu":
                torch.set_num_threads(int(env["OMP_NUM_THREADS"]))
            else:
                torch.cuda.set_device(device)  # NCCL binds each rank to its current device
            init_process_group(device.type, 0, size, port, timeout)
        except BaseException:
            group.shutdown()
            raise
        logger.info("tensor parallel: %d ranks (%s) joined", size, "NCCL" if device.type == "cuda" else "gloo")
        return group

    def _wait_for(self, what: str, timeout: float) -> None:
        """Each worker sends `what` (or an error) over its pipe; raise if one dies or is late."""
        deadline = time.monotonic() + timeout
        for rank, (proc, conn) in enumerate(zip(self.procs, self.conns, strict=True), start=1):
            while not conn.poll(0.05):
                if not proc.is_alive():
                    raise TensorParallelError(f"tensor-parallel rank {rank} exited (code {proc.exitcode}) "
                                              f"before {what}")
                if time.monotonic() > deadline:
                    raise TensorParallelError(f"tensor-parallel rank {rank} did not report {what} "
                                              f"within {timeout:.0f} s")
            try:
                kind, detail = conn.recv()
            except EOFError:
                raise TensorParallelError(f"tensor-parallel rank {rank} exited before {what}") from None
            if kind == "error":
                raise TensorParallelError(f"tensor-parallel rank {rank} failed:\n{detail}")

    # -- every step ----------------------------------------------------------------------------
    def send(self, plan: StepPlan) -> None:
        self.check_workers()
        data = pickle.dumps(plan, protocol=pickle.HIGHEST_PROTOCOL)
        for conn in self.conns:
            conn.send_bytes(data)

    def check_workers(self) -> None:
        """Raise the error of a worker that failed or died since the last step."""
        for rank, (proc, conn) in enumerate(zip(self.procs, self.conns, strict=True), start=1):
            if conn.poll():
                try:
                    kind, detail = conn.recv()
                except EOFError:
                    kind, detail = "gone", None
                if kind == "error":
                    raise TensorParallelError(f"tensor-parallel rank {rank} failed:\n{detail}")
            if not proc.is_alive():
                raise TensorParallelError(f"tensor-parallel rank {rank} exited (code {proc.exitcode})")

    def failure(self, exc: BaseException, wait: float = 2.0) -> TensorParallelError:
        """The error to raise when a collective on the driver failed: a worker's own report if it
        sends one within `wait` seconds (a failing worker reports before it exits), else the
        collective's own error (a timeout, for a worker that hangs)."""
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            try:
                self.check_workers()
            except TensorParallelError as worker_error:
                return worker_error
            time.sleep(0.05)
        return TensorParallelError(f"a tensor-parallel collective failed: {exc}")

    def shutdown(self) -> None:
        """Stop the workers (a clean exit if they can, terminated if they don't within 10 s)."""
        if self.closed:
            return
        self.closed = True
        for conn in self.conns:
            with contextlib.suppress(BrokenPipeError, OSError):
                conn.send_bytes(STOP)
        deadline = time.monotonic() + 10.0
        for proc in self.procs:
            proc.join(max(0.0, deadline - time.monotonic()))
            if proc.is_alive():
                logger.warning("tensor-parallel worker %s did not stop: terminating it", proc.name)
                proc.terminate()
                proc.join(5.0)
        for conn in self.conns:
            conn.close()
        if dist.is_initialized():
            dist.destroy_process_group()
        if self.device_type == "cpu":
            torch.set_num_threads(self._threads_before)
        for k, v in self._env_before.items():  # NCCL_NVLS_ENABLE included: set only while we ran
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
