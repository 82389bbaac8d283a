"""Several engine replicas behind one HTTP front end: `cadence serve --replicas N`.

Each replica is an LLMEngine in its own process (no shared GIL; on CPU each gets an equal share
of the cores, on GPU its own devices). The front end tokenizes, asks the router for a replica,
and relays outputs back to each request's stream. ReplicaPool offers what the server uses of
AsyncEngine, so the HTTP layer does not know how many engines there are.

The transport to a replica is small (send a message, receive one, poll, is it alive): a Ray actor
per replica, for replicas on several machines, would implement ReplicaTransport; not done here
(see docs/distributed.md)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import multiprocessing as mp
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from cadence.core.sampling_params import SamplingParams
from cadence.distributed.router import ReplicaLoad, make_router
from cadence.engine.async_engine import EngineDeadError, QueueFullError, RequestStream, StreamingEngine
from cadence.engine.config import EngineConfig
from cadence.engine.outputs import RequestOutput

logger = logging.getLogger("cadence.replicas")


class ReplicaTransport(Protocol):
    """How the front end talks to one replica (a local process here; a Ray actor could do it too)."""

    def send(self, msg: tuple) -> None: ...
    def recv(self) -> tuple: ...
    def poll(self, timeout: float) -> bool: ...
    def is_alive(self) -> bool: ...
    def close(self, timeout: float) -> None: ...


class LocalReplica:
    """A replica in a child process of this machine, spoken to through a pipe."""

    def __init__(self, config: EngineConfig, index: int, cpu_threads: int | None, visible_devices: str | None,
                 max_queue: int | None) -> None:
        from cadence.distributed.replica_worker import replica_main

        ctx = mp.get_context("spawn")
        self.conn, theirs = ctx.Pipe()
        # not a daemon: a replica with tensor parallelism starts worker processes of its own
        self.proc = ctx.Process(target=replica_main, name=f"cadence-replica{index}",
                                args=(config, index, cpu_threads, visible_devices, max_queue, theirs))
        self.proc.start()
        theirs.close()
        self._send_lock = threading.Lock()  # the event loop and the shutdown thread both send

    def send(self, msg: tuple) -> None:
        with self._send_lock:
            self.conn.send(msg)

    def recv(self) -> tuple:
        return self.conn.recv()

    def poll(self, timeout: float) -> bool:
        return self.conn.poll(timeout)

    def is_alive(self) -> bool:
        return self.proc.is_alive()

    def close(self, timeout: float) -> None:
        with contextlib.suppress(OSError):
            self.send(("stop",))
        self.proc.join(timeout)
        if self.proc.is_alive():
            logger.warning("replica %s did not stop in %.0f s: terminating it", self.proc.name, timeout)
            self.proc.terminate()
            self.proc.join(5.0)
        self.conn.close()


@dataclass
class _Seq:
    """One engine sequence in flight: its stream, its index there, its replica."""

    stream: RequestStream
    index: int
    replica: int
    prompt_tokens: int
    started: bool = False


class _ModelFacts:
    """What Serving reads as `engine.engine`: the model's config."""

    def __init__(self, model_config: Any) -> None:
        self.model_config = model_config


class ReplicaPool(StreamingEngine):
    def __init__(self, config: EngineConfig, num_replicas: int, router: str = "round_robin",
                 max_queue: int | None = None, start_timeout: float = 600.0,
                 transport: Callable[[int], ReplicaTransport] | None = None) -> None:
        from cadence.engine.llm_engine import _has_tokenizer, resolve_model
        from cadence.engine.tokenizer import Tokenizer

        if num_replicas < 1:
            raise ValueError(f"replicas must be >= 1, got {num_replicas}")
        self.config = config
        self.router = make_router(router)
        load = config.load
        model_config, path = resolve_model(load.model, load.load_format)
        self.engine = _ModelFacts(model_config)
        tok_path = load.tokenizer or (path if _has_tokenizer(path) else None)
        self.tokenizer = Tokenizer(tok_path) if tok_path is not None else None
        self.model_name = load.served_model_name or (load.model or "SmolLM2-135M-Instruct")
        make = transport or (lambda i: LocalReplica(config, i, *_placement(config, num_replicas, i), max_queue))
        self.replicas: list[ReplicaTransport] = [make(i) for i in range(num_replicas)]
        self.loads = [ReplicaLoad() for _ in range(num_replicas)]
        self.routed = [0] * num_replicas  # API requests sent to each replica, for tests and logs
        self._stats: list[dict[str, float]] = [{} for _ in range(num_replicas)]
        self._seqs: dict[str, _Seq] = {}
        self._acks: dict[int, tuple[asyncio.AbstractEventLoop, asyncio.Future[Any]]] = {}
        self._lock = threading.Lock()  # _seqs, loads, _acks: the event loop and the reader threads
        self._seq_ids = itertools.count()
        self._running = False
        self._stopped = False
        self.num_step_failures = 0
        try:
            infos = [self._wait_ready(i, start_timeout) for i in range(num_replicas)]
        except BaseException:
            self._close_all(10.0)
            raise
        self.max_model_len = min(info["max_model_len"] for info in infos)
        for i, info in enumerate(infos):
            self._note_stats(i, info["stats"], info["block_size"])
        self._block_sizes = [info["block_size"] for info in infos]
        self._readers = [threading.Thread(target=self._read, args=(i,), daemon=True, name=f"cadence-replica{i}-rx")
                         for i in range(num_replicas)]
        for t in self._readers:
            t.start()
        logger.info("%d replicas of %s ready, router %s", num_replicas, self.model_name, self.router.name)

    def _wait_ready(self, i: int, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        rep = self.replicas[i]
        while not rep.poll(0.1):
            if not rep.is_alive():
                raise RuntimeError(f"replica {i} exited while starting")
            if time.monotonic() > deadline:
                raise RuntimeError(f"replica {i} not ready within {timeout:.0f} s")
        try:
            msg = rep.recv()
        except EOFError:
            raise RuntimeError(f"replica {i} exited while starting") from None
        if msg[0] != "ready":
            raise RuntimeError(f"replica {i} failed to start:\n{msg[1]}")
        return msg[1]

    # -- what the server uses (as of AsyncEngine) ------------------------------------------------
    @property
    def is_running(self) -> bool:
        return self._running and any(load.alive for load in self.loads)

    def stats(self) -> dict[str, float]:
        """Counts summed over replicas, KV usage averaged."""
        total: dict[str, float] = {}
        for s in self._stats:
            for k, v in s.items():
                total[k] = total.get(k, 0.0) + float(v)
        n = len(self._stats)
        for k in ("kv_usage", "prefix_hit_rate"):
            if k in total:
                total[k] /= n
        total["num_step_failures"] = self.num_step_failures
        total["num_replicas"] = n
        return total

    def start(self) -> None:
        self._running = True

    def stop(self, timeout: float = 10.0) -> None:
        """End every request with EngineDeadError, then stop the replicas (idempotent)."""
        if self._stopped:
            return
        self._stopped = True
        self._running = False
        self._fail_streams(EngineDeadError("the server is shutting down"))
        self._close_all(timeout)

    async def fail_all(self, exc: BaseException) -> None:
        self._fail_streams(exc)

    async def add(self, request_id: str, prompt: str | list[int], params: SamplingParams) -> RequestStream:
        if not self.is_running:
            raise EngineDeadError("the engine is not running")
        ids = self._encode(prompt)
        loop = asyncio.get_running_loop()
        stream = RequestStream(self, request_id, params.n, loop)  # type: ignore[arg-type]
        fut: asyncio.Future[Any] = loop.create_future()
        with self._lock:
            if not any(load.alive for load in self.loads):
                raise EngineDeadError("no replica is running")
            i = self.router.choose(self.loads, len(ids))
            seq = next(self._seq_ids)
            self._acks[seq] = (loop, fut)
            for j, sub in enumerate(stream.sub_ids):
                self._seqs[sub] = _Seq(stream, j, i, len(ids))
            load = self.loads[i]
            load.outstanding += len(stream.sub_ids)
            load.waiting_tokens += len(ids) * len(stream.sub_ids)
            self.routed[i] += 1
        try:
            self.replicas[i].send(("add", seq, stream.sub_ids, ids, params))
            error = await fut
        except BaseException:
            self._forget(stream.sub_ids)
            with self._lock:
                self._acks.pop(seq, None)
            raise
        if error is not None:
            self._forget(stream.sub_ids)
            kind, message = error
            raise QueueFullError(message) if kind == "queue_full" else ValueError(message)
        return stream

    # -- RequestStream's side door -------------------------------------------------------------
    def _submit(self, command: Callable[[], None]) -> None:
        command()  # nothing to queue: a replica takes its aborts between its own steps

    def _abort_stream(self, stream: RequestStream) -> None:
        by_replica: dict[int, list[str]] = {}
        for sub in stream.sub_ids:
            s = self._seqs.get(sub)
            if s is not None:
                by_replica.setdefault(s.replica, []).append(sub)
        self._forget(stream.sub_ids)
        for i, subs in by_replica.items():
            with contextlib.suppress(OSError):
                self.replicas[i].send(("abort", subs))

    # -- plumbing ---------------------------------------------------------------------------------
    def _encode(self, prompt: str | list[int]) -> list[int]:
        if isinstance(prompt, str):
            if self.tokenizer is None:
                raise ValueError("this model has no tokenizer: pass prompt token ids")
            return self.tokenizer.encode(prompt)
        vocab = self.engine.model_config.vocab_size
        ids = list(prompt)
        if any((not isinstance(t, int)) or t < 0 or t >= vocab for t in ids):
            raise ValueError(f"prompt token ids must be integers in [0, {vocab})")
        return ids

    def _forget(self, sub_ids: list[str]) -> None:
        with self._lock:
            for sub in sub_ids:
                s = self._seqs.pop(sub, None)
                if s is not None:
                    self._release(s)

    def _release(self, s: _Seq) -> None:
        load = self.loads[s.replica]
        load.outstanding -= 1
        if not s.started:
            load.waiting_tokens -= s.prompt_tokens

    def _note_stats(self, i: int, stats: dict[str, float], block_size: int) -> None:
        self._stats[i] = stats
        self.loads[i].kv_free_tokens = int(stats.get("kv_free_blocks", 0)) * block_size

    def _fail_streams(self, exc: BaseException, replica: int | None = None) -> None:
        with self._lock:
            doomed = [sub for sub, s in self._seqs.items() if replica is None or s.replica == replica]
            streams = {id(self._seqs[sub].stream): self._seqs[sub].stream for sub in doomed}
        for stream in streams.values():
            self._abort_stream(stream)
            stream._put(exc)

    def _close_all(self, timeout: float) -> None:
        for rep in self.replicas:
            rep.close(timeout)

    def _read(self, i: int) -> None:
        """Reader thread of replica i: acks, outputs, failures."""
        rep = self.replicas[i]
        while True:
            try:
                msg = rep.recv()
            except (EOFError, OSError):
                break
            kind = msg[0]
            if kind == "out":
                self._deliver(i, msg[1], msg[2])
            elif kind == "ack":
                with self._lock:
                    entry = self._acks.pop(msg[1], None)
                if entry is not None:
                    loop, fut = entry
                    with contextlib.suppress(RuntimeError):  # the caller's loop is closed: nobody waits
                        loop.call_soon_threadsafe(lambda f=fut, e=msg[2]: f.done() or f.set_result(e))
            elif kind == "step_failed":
                logger.error("replica %d: a step failed; ending its requests\n%s", i, msg[2])
                self.num_step_failures += 1
                self._fail_streams(EngineDeadError("the engine failed while running this request"), replica=i)
            elif kind == "fatal":
                logger.error("replica %d failed:\n%s", i, msg[1])
                break
        self.loads[i].alive = False
        if self._running:
            logger.error("replica %d is gone; ending its requests, routing around it", i)
        self._fail_streams(EngineDeadError("the replica serving this request stopped"), replica=i)
        with self._lock:  # adds still waiting for this replica's ack
            pending = list(self._acks.items())
        for _, (loop, fut) in pending:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(lambda f=fut: f.done() or f.set_exception(EngineDeadError("replica gone")))

    def _deliver(self, i: int, outputs: list[RequestOutput], stats: dict[str, float]) -> None:
        puts = []
        with self._lock:
            self._note_stats(i, stats, self._block_sizes[i])
            for out in outputs:
                s = self._seqs.get(out.request_id)
                if s is None:
                    continue
                if not s.started:
                    s.started = True
                    self.loads[i].waiting_tokens -= s.prompt_tokens
                if out.finished:
                    del self._seqs[out.request_id]
                    self.loads[i].outstanding -= 1
                puts.append((s.stream, s.index, out))
        for stream, index, out in puts:
            if not stream._put((index, out)):
                self._abort_stream(stream)


def _placement(config: EngineConfig, num_replicas: int, index: int) -> tuple[int | None, str | None]:
    """(CPU threads, CUDA_VISIBLE_DEVICES) of replica `index`: an equal share of the cores on CPU;
    on GPU its own tensor-parallel-size devices (untested: no multi-GPU machine here)."""
    device = config.load.device
    if device == "cpu" or (device == "auto" and not _cuda_available()):
        return max(1, (os.cpu_count() or 1) // num_replicas), None
    tp = config.parallel.tensor_parallel_size
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    devices = visible.split(",") if visible else [str(d) for d in range(_cuda_count())]
    mine = devices[index * tp:(index + 1) * tp]
    if len(mine) < tp:
        raise ValueError(f"{num_replicas} replicas x tensor parallel {tp} need {num_replicas * tp} GPUs; "
                         f"{len(devices)} visible")
    return None, ",".join(mine)


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def _cuda_count() -> int:
    import torch

    return torch.cuda.device_count()
