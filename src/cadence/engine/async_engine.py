"""The engine beside an asyncio event loop: one thread runs `LLMEngine.step()`, coroutines await outputs.

The engine is not thread-safe, so the loop thread is its only user: adds and aborts travel through
a command queue that it drains between steps, and outputs travel back to each request's asyncio
queue through `loop.call_soon_threadsafe`. An idle loop sleeps on an event instead of spinning.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any

from cadence.core.sampling_params import SamplingParams
from cadence.engine.llm_engine import LLMEngine
from cadence.engine.outputs import RequestOutput

logger = logging.getLogger("cadence.engine.async")


class QueueFullError(RuntimeError):
    """The waiting queue holds `max_queue` requests already: come back later."""


class EngineDeadError(RuntimeError):
    """The step loop failed or stopped; the request cannot go on."""


class RequestAborted(Exception):  # noqa: N818 - a signal to the consumer, not an error of it
    """The request was aborted (client gone, or server shutting down)."""


class RequestStream:
    """The outputs of one request (its n sequences), as `(index, RequestOutput)` in arrival order."""

    def __init__(self, engine: AsyncEngine, request_id: str, n: int, loop: asyncio.AbstractEventLoop) -> None:
        self.engine = engine
        self.request_id = request_id
        self.sub_ids = [request_id] if n == 1 else [f"{request_id}-{j}" for j in range(n)]
        self.loop = loop
        self.queue: asyncio.Queue[tuple[int, RequestOutput] | BaseException] = asyncio.Queue()
        self._unfinished = set(range(n))
        self.aborted = False

    @property
    def finished(self) -> bool:
        return not self._unfinished

    def abort(self) -> None:
        """Stop generating (idempotent); a consumer waiting on the stream wakes with RequestAborted."""
        if self.finished or self.aborted:
            return
        self.aborted = True
        self.engine._submit(lambda: self.engine._abort_stream(self))
        self.queue.put_nowait(RequestAborted(self.request_id))

    def __aiter__(self) -> AsyncIterator[tuple[int, RequestOutput]]:
        return self

    async def __anext__(self) -> tuple[int, RequestOutput]:
        if self.finished:
            raise StopAsyncIteration
        item = await self.queue.get()
        if isinstance(item, BaseException):
            self._unfinished.clear()
            raise item
        index, out = item
        if out.finished:
            self._unfinished.discard(index)
        return item

    # called in the loop thread
    def _put(self, item: tuple[int, RequestOutput] | BaseException) -> bool:
        """Hand an item to the consumer's event loop; False if that loop is gone (closed)."""
        try:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, item)
        except RuntimeError:
            return False
        return True


class StreamingEngine:
    """What the server needs beyond `add`: one way to consume a request's outputs (shared by the
    single engine and the replica pool)."""

    async def add(self, request_id: str, prompt: str | list[int], params: SamplingParams) -> RequestStream:
        raise NotImplementedError

    async def generate(self, request_id: str, prompt: str | list[int],
                       params: SamplingParams) -> AsyncIterator[tuple[int, RequestOutput]]:
        """Yield `(index, output)` until all n sequences finish; abort if the consumer goes away."""
        stream = await self.add(request_id, prompt, params)
        try:
            async for item in stream:
                yield item
        finally:
            stream.abort()


class AsyncEngine(StreamingEngine):
    def __init__(self, engine: LLMEngine, max_queue: int | None = None) -> None:
        self.engine = engine
        self.max_queue = max_queue
        self._commands: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._wake = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._streams: dict[str, tuple[RequestStream, int]] = {}  # engine request id -> (stream, index)
        self._stats: dict[str, float] = dict(engine.stats())
        self.num_steps = 0
        self.num_step_failures = 0

    # -- facts the server shows -------------------------------------------------------------
    @property
    def model_name(self) -> str:
        return self.engine.model_name

    @property
    def max_model_len(self) -> int:
        return self.engine.max_model_len

    @property
    def tokenizer(self) -> Any:
        return self.engine.tokenizer

    @property
    def is_running(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and not self._stopping

    def stats(self) -> dict[str, float]:
        """A snapshot taken by the loop thread after its last step (readable from any thread)."""
        return {**self._stats, "num_steps": self.num_steps, "num_step_failures": self.num_step_failures}

    # -- life cycle ---------------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._loop, name="cadence-engine-loop", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """End every request with EngineDeadError, then stop the loop thread."""
        if self._thread is None:
            return
        self._submit(lambda: self._fail_all(EngineDeadError("the server is shutting down")))
        self._stopping = True
        self._wake.set()
        self._thread.join(timeout)
        self._thread = None

    async def fail_all(self, exc: BaseException) -> None:
        """End every in-flight request with `exc` (e.g. at shutdown), freeing its KV blocks."""
        await self._call(lambda: self._fail_all(exc))

    # -- requests -----------------------------------------------------------------------------
    async def add(self, request_id: str, prompt: str | list[int], params: SamplingParams) -> RequestStream:
        """Queue a request (fanned out into `params.n` engine requests with distinct seeds).
        Raises ValueError for bad input, QueueFullError when the waiting queue is full."""
        if not self.is_running:
            raise EngineDeadError("the engine is not running")
        stream = RequestStream(self, request_id, params.n, asyncio.get_running_loop())
        try:
            await self._call(lambda: self._add(stream, prompt, params))
        except asyncio.CancelledError:
            stream.abort()  # the add may still land: abort follows it through the same queue
            raise
        return stream

    # -- plumbing -----------------------------------------------------------------------------
    def _submit(self, command: Callable[[], None]) -> None:
        self._commands.put(command)
        self._wake.set()

    async def _call(self, fn: Callable[[], Any]) -> Any:
        """Run `fn` in the loop thread between steps; return its result or raise its exception."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()

        def settle(result: Any, exc: BaseException | None) -> None:
            if fut.done():
                return
            if exc is not None:
                fut.set_exception(exc)
            else:
                fut.set_result(result)

        def command() -> None:
            try:
                result, exc = fn(), None
            except Exception as e:  # handed to the caller, whose input it was
                result, exc = None, e
            loop.call_soon_threadsafe(settle, result, exc)

        self._submit(command)
        return await fut

    # -- the loop thread ----------------------------------------------------------------------
    def _add(self, stream: RequestStream, prompt: str | list[int], params: SamplingParams) -> None:
        n = len(stream.sub_ids)
        if self.max_queue is not None and self.engine.scheduler.num_waiting + n > self.max_queue:
            raise QueueFullError(f"the waiting queue is full ({self.max_queue} requests); retry later")
        ids = self.engine.encode_prompt(prompt)
        added: list[str] = []
        try:
            for j, sub_id in enumerate(stream.sub_ids):
                self.engine.add_request(sub_id, ids, params.for_sequence(j))
                added.append(sub_id)
                self._streams[sub_id] = (stream, j)
        except Exception:
            self._drop(added)  # all n or none
            raise

    def _abort_stream(self, stream: RequestStream) -> None:
        self._drop([i for i in stream.sub_ids if i in self._streams])

    def _drop(self, ids: list[str]) -> None:
        self.engine.abort(ids)
        for rid in ids:
            self._streams.pop(rid, None)

    def _fail_all(self, exc: BaseException) -> None:
        streams = {id(s): s for s, _ in self._streams.values()}
        self._drop(list(self._streams))
        for stream in streams.values():
            stream._put(exc)

    def _run_commands(self) -> None:
        while True:
            try:
                command = self._commands.get_nowait()
            except queue.Empty:
                return
            try:
                command()
            except Exception:
                logger.exception("engine command failed")

    def _loop(self) -> None:
        while True:
            self._wake.clear()  # before draining: a command queued after this wakes the wait below
            self._run_commands()
            if self._stopping:
                return
            if not self.engine.has_unfinished():
                self._stats = dict(self.engine.stats())
                self._wake.wait()
                continue
            try:
                outputs = self.engine.step()
            except Exception:
                # A failed step must not take the server down: end its requests, keep serving.
                logger.exception("engine step failed; ending the requests in flight")
                self.num_step_failures += 1
                self._fail_all(EngineDeadError("the engine failed while running this request"))
                continue
            self.num_steps += 1
            self._stats = dict(self.engine.stats())
            for out in outputs:
                entry = self._streams.get(out.request_id)
                if entry is None:
                    continue
                stream, index = entry
                if out.finished:
                    del self._streams[out.request_id]
                if not stream._put((index, out)):
                    self._abort_stream(stream)  # nobody left to read it: free its blocks
