"""What both generation endpoints share: checks, sampling parameters, running a request on the
AsyncEngine, streaming it as server-sent events or collecting it, and the access log line.

An endpoint (completions.py, chat.py) only says how to turn prompt and outputs into its JSON.
"""

from __future__ import annotations

import abc
import asyncio
import json
import logging
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel

from cadence.core.sampling_params import SamplingParams
from cadence.engine.async_engine import (
    AsyncEngine,
    EngineDeadError,
    QueueFullError,
    RequestAborted,
    RequestStream,
)
from cadence.engine.outputs import RequestOutput, TokenLogprob
from cadence.server.errors import APIError, bad_request, error_body, from_value_error
from cadence.server.metrics import RequestTimer, ServerMetrics
from cadence.server.protocol import MAX_N, PromptTokensDetails, Usage, _SamplingFields

access_log = logging.getLogger("cadence.access")
RETRY_AFTER_S = "1"


@dataclass
class Choice:
    """One sequence's running state."""

    index: int
    text: str = ""
    num_tokens: int = 0
    logprobs: list[TokenLogprob] = field(default_factory=list)
    finish_reason: str | None = None


@dataclass
class Run:
    """One API request in flight."""

    request_id: str
    prompt_ids: list[int]
    params: SamplingParams
    stream: RequestStream
    timer: RequestTimer
    choices: list[Choice]
    num_cached_tokens: int = 0
    first_scheduled: float | None = None  # engine clock (time.monotonic, as the timer's)
    status: int = 200  # for the access log and the request counter
    closed: bool = False

    def update(self, index: int, out: RequestOutput) -> Choice:
        c = self.choices[index]
        c.text += out.new_text
        c.num_tokens = out.num_output_tokens
        c.logprobs.extend(out.new_logprobs)
        if out.finished:
            c.finish_reason = out.finish_reason
        self.num_cached_tokens = out.num_cached_tokens
        if out.first_scheduled_time is not None and (self.first_scheduled is None
                                                     or out.first_scheduled_time < self.first_scheduled):
            self.first_scheduled = out.first_scheduled_time
        self.timer.token(index, len(out.new_token_ids))
        return c

    def usage(self) -> Usage:
        completion = sum(c.num_tokens for c in self.choices)
        prompt = len(self.prompt_ids)
        delay = None if self.first_scheduled is None else round(max(0.0, self.first_scheduled - self.timer.start), 6)
        return Usage(prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion,
                     prompt_tokens_details=PromptTokensDetails(cached_tokens=self.num_cached_tokens),
                     scheduling_delay_s=delay)


class Endpoint(abc.ABC):
    """How one endpoint words its answers."""

    name: str
    id_prefix: str

    @abc.abstractmethod
    def response(self, run: Run, model: str) -> BaseModel: ...

    @abc.abstractmethod
    def chunks(self, run: Run, model: str, index: int, out: RequestOutput) -> list[BaseModel]: ...

    def opening(self, run: Run, model: str) -> list[BaseModel]:
        return []

    @abc.abstractmethod
    def usage_chunk(self, run: Run, model: str) -> BaseModel: ...


class Serving:
    def __init__(self, engine: AsyncEngine, metrics: ServerMetrics, served_model_names: list[str]) -> None:
        self.engine = engine
        self.metrics = metrics
        self.model_names = served_model_names
        self.draining = False
        self.num_in_flight = 0

    # -- checks and parameters ------------------------------------------------------------------
    def check_common(self, body: _SamplingFields) -> str:
        """Refuse what we cannot honour; return the model name to answer with."""
        if body.model is not None and body.model not in self.model_names:
            raise APIError(404, f"the model {body.model!r} does not exist; this server serves "
                                f"{', '.join(self.model_names)}", param="model", code="model_not_found")
        if body.n > MAX_N:
            raise bad_request(f"n is {body.n}; at most {MAX_N} sequences per request are allowed", "n")
        if body.logit_bias:
            raise bad_request("logit_bias is not supported by this server", "logit_bias", "unsupported_parameter")
        vocab = self.engine.engine.model_config.vocab_size
        if body.stop_token_ids and any(not 0 <= t < vocab for t in body.stop_token_ids):
            raise bad_request(f"stop_token_ids must be token ids in [0, {vocab})", "stop_token_ids")
        if body.stream_options is not None and not body.stream:
            raise bad_request("stream_options is only allowed with stream: true", "stream_options")
        return body.model or self.model_names[0]

    def sampling_params(self, body: _SamplingFields, num_prompt_tokens: int, max_tokens: int | None,
                        max_tokens_param: str, logprobs: int | None, prompt_param: str) -> SamplingParams:
        room = self.engine.max_model_len - num_prompt_tokens
        if room < 1:
            raise bad_request(f"the prompt has {num_prompt_tokens} tokens; this model's context is "
                              f"{self.engine.max_model_len} tokens, and at least one must be left to generate",
                              prompt_param, "context_length_exceeded")
        if max_tokens is not None and max_tokens > room:
            raise bad_request(f"this model's context is {self.engine.max_model_len} tokens, but "
                              f"{num_prompt_tokens + max_tokens} were asked for ({num_prompt_tokens} in the prompt, "
                              f"{max_tokens} to generate)", max_tokens_param, "context_length_exceeded")
        stop = body.stop if body.stop is not None else ()
        top_k = body.top_k if body.top_k is not None else 0
        try:
            return SamplingParams(
                max_tokens=room if max_tokens is None else max_tokens,
                min_tokens=body.min_tokens,
                temperature=1.0 if body.temperature is None else body.temperature,
                top_p=1.0 if body.top_p is None else body.top_p,
                top_k=min(top_k, self.engine.engine.model_config.vocab_size),  # beyond the vocabulary is off
                min_p=body.min_p or 0.0,
                presence_penalty=body.presence_penalty or 0.0,
                frequency_penalty=body.frequency_penalty or 0.0,
                repetition_penalty=1.0 if body.repetition_penalty is None else body.repetition_penalty,
                seed=body.seed,
                stop=(stop,) if isinstance(stop, str) else tuple(stop),
                stop_token_ids=tuple(body.stop_token_ids or ()),
                ignore_eos=body.ignore_eos,
                include_stop_str_in_output=body.include_stop_str_in_output,
                skip_special_tokens=body.skip_special_tokens,
                logprobs=logprobs,
                n=body.n,
            )
        except ValueError as exc:
            err = from_value_error(exc)
            if err.param == "max_tokens":
                err.param = max_tokens_param
            raise err from None

    async def tokenize(self, fn: Any, *args: Any, param: str = "prompt") -> list[int]:
        """Tokenize off the event loop: a long prompt must not stall other streams."""
        if self.engine.tokenizer is None:
            raise bad_request("this model has no tokenizer: send prompt token ids to /v1/completions", "prompt")
        try:
            return await asyncio.to_thread(fn, *args)
        except ValueError as exc:
            raise from_value_error(exc, param) from None

    def piece(self, token_id: int) -> str:
        """A token's text for logprobs (its id in brackets when the model has no tokenizer)."""
        tok = self.engine.tokenizer
        return f"[{token_id}]" if tok is None else tok.id_to_piece(token_id)

    async def drain(self, timeout: float) -> None:
        """Shutdown: refuse new requests, let in-flight ones finish for `timeout` s, then end the rest
        (streams get a final error event, waiting callers a 503)."""
        self.draining = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.num_in_flight and loop.time() < deadline:
            await asyncio.sleep(0.05)
        if self.num_in_flight:
            await self.engine.fail_all(EngineDeadError("the server is shutting down"))

    # -- running --------------------------------------------------------------------------------
    async def start(self, endpoint: Endpoint, prompt_ids: list[int], params: SamplingParams) -> Run:
        if self.draining:
            raise APIError(503, "the server is shutting down", code="shutting_down")
        request_id = f"{endpoint.id_prefix}-{uuid.uuid4().hex}"
        timer = RequestTimer(self.metrics)
        try:
            stream = await self.engine.add(request_id, prompt_ids, params)
        except QueueFullError as exc:
            raise APIError(503, str(exc), code="queue_full", headers={"Retry-After": RETRY_AFTER_S}) from None
        except EngineDeadError as exc:
            raise APIError(503, str(exc), code="engine_unavailable") from None
        except ValueError as exc:
            raise from_value_error(exc, "prompt") from None
        return Run(request_id, prompt_ids, params, stream, timer, [Choice(j) for j in range(params.n)])

    async def respond(self, endpoint: Endpoint, run: Run, model: str, http: Request, stream: bool,
                      include_usage: bool, continuous_usage: bool) -> Response:
        headers = {"X-Request-Id": run.request_id}
        self.num_in_flight += 1
        if stream:
            gen = self._sse(endpoint, run, model, include_usage, continuous_usage)
            return _EventStream(gen, lambda: self._close(endpoint, run, stream=True),
                                headers={**headers, "Cache-Control": "no-cache"})
        try:
            await self._collect(run, http)
            return JSONResponse(endpoint.response(run, model).model_dump(mode="json"), headers=headers)
        except EngineDeadError as exc:
            run.status = 503
            return JSONResponse(error_body(503, str(exc), code="engine_unavailable"), status_code=503)
        except RequestAborted:
            run.status = 499  # the client went away; nobody reads this
            return Response(status_code=499)
        finally:
            self._close(endpoint, run, stream=False)

    async def _collect(self, run: Run, http: Request) -> None:
        async def consume() -> None:
            async for index, out in run.stream:
                run.update(index, out)

        task = asyncio.ensure_future(consume())
        gone = asyncio.ensure_future(_client_gone(http))
        try:
            await asyncio.wait({task, gone}, return_when=asyncio.FIRST_COMPLETED)
            if not task.done():  # the client disconnected: free its KV blocks now
                run.stream.abort()
            await task
        finally:
            gone.cancel()
            task.cancel()

    async def _sse(self, endpoint: Endpoint, run: Run, model: str, include_usage: bool,
                   continuous_usage: bool) -> AsyncIterator[str]:
        try:
            for chunk in endpoint.opening(run, model):
                yield _frame(chunk)
            try:
                async for index, out in run.stream:
                    run.update(index, out)
                    for chunk in endpoint.chunks(run, model, index, out):
                        if continuous_usage:
                            chunk.usage = run.usage()  # type: ignore[attr-defined]
                        yield _frame(chunk)
            except EngineDeadError as exc:
                run.status = 503
                yield "data: " + json.dumps(error_body(503, str(exc), code="engine_unavailable")) + "\n\n"
            else:
                if include_usage:
                    yield _frame(endpoint.usage_chunk(run, model))
            yield "data: [DONE]\n\n"
        except RequestAborted:
            run.status = 499  # aborted from our side: end quietly
        except asyncio.CancelledError:
            run.status = 499  # the client disconnected; Starlette cancels the stream
            raise

    def _close(self, endpoint: Endpoint, run: Run, stream: bool) -> None:
        """Once per request, however it ended: abort (a no-op when finished; on disconnect this frees
        the KV blocks), count, log."""
        if run.closed:
            return
        run.closed = True
        self.num_in_flight -= 1
        run.stream.abort()
        if run.status == 200 and not run.stream.finished:
            run.status = 499  # ended before its stream was read to the end
        run.timer.finish()
        self.metrics.requests.labels(endpoint.name, str(run.status)).inc()
        usage = run.usage()
        t = run.timer
        access_log.info(json.dumps({
            "request_id": run.request_id, "endpoint": endpoint.name, "status": run.status, "stream": stream,
            "n": run.params.n, "prompt_tokens": usage.prompt_tokens, "output_tokens": usage.completion_tokens,
            "cached_tokens": run.num_cached_tokens,
            "finish_reasons": [c.finish_reason for c in run.choices],
            "ttft_s": None if t.ttft is None else round(t.ttft, 4),
            "e2e_s": None if t.e2e is None else round(t.e2e, 4),
        }))


class _EventStream(StreamingResponse):
    """Server-sent events whose `on_close` runs however the response ends, even when the client
    left before Starlette iterated the body (the generator's own `finally` would never run)."""

    media_type = "text/event-stream"

    def __init__(self, content: AsyncIterator[str], on_close: Callable[[], None], **kwargs: Any) -> None:
        super().__init__(content, **kwargs)
        self.on_close = on_close

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.on_close()


def _frame(chunk: BaseModel) -> str:
    return "data: " + chunk.model_dump_json() + "\n\n"


async def _client_gone(http: Request) -> None:
    """Returns when the client disconnects (the body is already read, so the next message says so)."""
    while True:
        message = await http.receive()
        if message["type"] == "http.disconnect":
            return
