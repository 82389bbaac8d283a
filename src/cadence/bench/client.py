"""Async HTTP client for OpenAI-compatible completions and chat endpoints, streaming, one record per request.

Times come from `time.perf_counter()` (CLOCK_MONOTONIC on Linux) minus the run's start, taken once per
network read: every token in one read arrived together.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field

import aiohttp

from cadence.bench.stream import StreamError, StreamState
from cadence.core.metrics import RequestRecord

CHAT_ENDPOINT = "/v1/chat/completions"
COMPLETIONS_ENDPOINT = "/v1/completions"


@dataclass(frozen=True)
class EndpointConfig:
    base_url: str
    model: str
    endpoint: str = COMPLETIONS_ENDPOINT
    api_key: str | None = None
    exact_output: bool = True  # send min_tokens and ignore_eos (vLLM, SGLang, cadence serve accept them)
    stream_usage: bool = True  # ask for usage on every chunk so multi-token chunks count exactly
    request_timeout: float = 600.0  # seconds without a byte before a request is abandoned
    temperature: float = 0.0
    extra_body: dict = field(default_factory=dict)
    headers: dict = field(default_factory=dict)

    @property
    def is_chat(self) -> bool:
        return "chat" in self.endpoint

    @property
    def url(self) -> str:
        return self.base_url.rstrip("/") + "/" + self.endpoint.lstrip("/")


@dataclass(frozen=True)
class Prompt:
    """What is sent for one request: text, or token ids (completions only), and its length as we know it."""

    tokens: int
    text: str | None = None
    token_ids: tuple[int, ...] | None = None
    exact: bool = True  # False when the length is an estimate (no tokenizer)


@dataclass(frozen=True)
class StreamInfo:
    """What the stream told us beyond the record, for the run's notes."""

    count_source: str = "chunks"
    count_mismatch: bool = False
    model: str | None = None
    server_prompt_tokens: int | None = None


def build_body(cfg: EndpointConfig, prompt: Prompt, max_tokens: int) -> dict:
    body: dict = {
        "model": cfg.model,
        "max_tokens": max_tokens,
        "stream": True,
        "temperature": cfg.temperature,
    }
    if cfg.is_chat:
        body["messages"] = [{"role": "user", "content": prompt.text or ""}]
    else:
        body["prompt"] = list(prompt.token_ids) if prompt.token_ids is not None else prompt.text
    if cfg.exact_output:
        body["min_tokens"] = max_tokens
        body["ignore_eos"] = True
    if cfg.stream_usage:
        body["stream_options"] = {"include_usage": True, "continuous_usage_stats": True}
    body.update(cfg.extra_body)
    return body


def classify_http_error(status: int, text: str, model: str) -> str:
    lowered = text.lower()
    if (
        status in (400, 404)
        and "model" in lowered
        and (model.lower() in lowered or "not found" in lowered or "does not exist" in lowered)
    ):
        return "wrong_model"
    return f"http_{status}"


class BenchClient:
    """One aiohttp session for the whole run; no connection limit, so the client never queues requests."""

    def __init__(self, cfg: EndpointConfig, clock0: float, count_text=None) -> None:
        self.cfg = cfg
        self.clock0 = clock0
        self.count_text = count_text
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> BenchClient:
        headers = {"Content-Type": "application/json", **self.cfg.headers}
        if self.cfg.api_key:
            headers["Authorization"] = f"Bearer {self.cfg.api_key}"
        # limit=0: aiohttp's default pool of 100 connections would silently serialize an open loop.
        connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300)
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=self.cfg.request_timeout)
        self._session = aiohttp.ClientSession(headers=headers, connector=connector, timeout=timeout)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()

    def now(self) -> float:
        return time.perf_counter() - self.clock0

    async def send(
        self, request_id: str, arrival_time: float, prompt: Prompt, max_tokens: int
    ) -> tuple[RequestRecord, StreamInfo]:
        assert self._session is not None, "use BenchClient as an async context manager"
        body = json.dumps(build_body(self.cfg, prompt, max_tokens))
        state = StreamState(count_text=self.count_text)
        error: str | None = None
        detail = ""
        send_time = self.now()
        try:
            async with self._session.post(self.cfg.url, data=body) as resp:
                if resp.status >= 400:
                    text = (await resp.text(errors="replace"))[:500]
                    error, detail = classify_http_error(resp.status, text, self.cfg.model), text
                else:
                    async for data in resp.content.iter_any():
                        state.feed(data, self.now())
                    state.close(self.now())
                    if not state.done and state.finish_reason is None:
                        error, detail = "incomplete_stream", "stream ended without [DONE] or a finish_reason"
        except StreamError as exc:
            error, detail = exc.kind, exc.detail
        except (asyncio.TimeoutError, TimeoutError):
            error, detail = "timeout", f"no data for {self.cfg.request_timeout:g} s"
        except aiohttp.ClientConnectorError as exc:
            error, detail = "connect", str(exc)
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError) as exc:
            error, detail = "disconnected", str(exc) or type(exc).__name__
        except aiohttp.ClientError as exc:
            error, detail = "client_error", f"{type(exc).__name__}: {exc}"
        finish = self.now()
        record = RequestRecord(
            request_id=request_id,
            arrival_time=arrival_time,
            prompt_tokens=state.usage_prompt_tokens
            if state.usage_prompt_tokens is not None
            else prompt.tokens,
            output_tokens=state.output_tokens,
            token_times=tuple(state.token_times),
            target_output_tokens=max_tokens,
            # the server's own receipt-to-scheduled time, placed on our clock from the send time
            first_scheduled_time=None if state.scheduling_delay is None else send_time + state.scheduling_delay,
            send_time=send_time,
            finish_time=finish,
            error=error,
            error_detail=detail[:500],
        )
        info = StreamInfo(state.count_source, state.count_mismatch, state.model, state.usage_prompt_tokens)
        return record, info

    async def list_models(self) -> list[str] | str:
        """Model ids the server lists at /v1/models, or a string saying why they could not be read."""
        assert self._session is not None
        url = self.cfg.base_url.rstrip("/") + "/v1/models"
        try:
            async with self._session.get(url, timeout=aiohttp.ClientTimeout(total=10)) as resp:
                if resp.status >= 400:
                    return f"GET /v1/models answered HTTP {resp.status}"
                data = await resp.json(content_type=None)
                return [m.get("id", "") for m in data.get("data", [])]
        except (aiohttp.ClientError, asyncio.TimeoutError, TimeoutError, ValueError) as exc:
            return f"GET /v1/models failed: {type(exc).__name__}: {exc}"
