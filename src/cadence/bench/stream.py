"""Turn an OpenAI-format server-sent-event stream into per-token timestamps.

Tokens are counted per chunk, best source first: the cumulative `usage.completion_tokens` that
vLLM-style servers send on every chunk when asked (`continuous_usage_stats`), then a local tokenizer
over the chunk's text, then one token per non-empty chunk. The final usage chunk, when the server
sends one, fixes the total; if it disagrees with the count the request is flagged.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field


class StreamError(Exception):
    """The stream broke the protocol; `kind` is the error kind recorded for the request."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(detail)
        self.kind = kind
        self.detail = detail


@dataclass
class StreamState:
    """Accumulates one response stream. Feed raw bytes with their receive time; read the results."""

    count_text: Callable[[str], int] | None = None  # local tokenizer count, when one is loaded
    token_times: list[float] = field(default_factory=list)
    done: bool = False  # saw `data: [DONE]`
    finish_reason: str | None = None
    usage_prompt_tokens: int | None = None
    usage_completion_tokens: int | None = None
    continuous_usage: bool = False  # the server reported a running token count on content chunks
    scheduling_delay: float | None = None  # receipt to first scheduled step, where the server tells (Cadence does)
    model: str | None = None
    count_source: str = "chunks"
    _buffer: bytes = b""
    _text_chars: int = 0

    def feed(self, data: bytes, now: float) -> None:
        """Every complete line in `data` (plus what was buffered) is processed as received at `now`."""
        buf = self._buffer + data
        *lines, self._buffer = buf.split(b"\n")
        for line in lines:
            self._line(line.rstrip(b"\r"), now)

    def close(self, now: float) -> None:
        if self._buffer.strip():
            self._line(self._buffer.rstrip(b"\r"), now)
        self._buffer = b""

    @property
    def output_tokens(self) -> int:
        return max(len(self.token_times), self.usage_completion_tokens or 0)

    def _line(self, line: bytes, now: float) -> None:
        if not line or line.startswith(b":"):
            return  # event separator or SSE comment (keep-alive)
        if not line.startswith(b"data:"):
            if line.split(b":", 1)[0] in (b"event", b"id", b"retry"):
                return
            raise StreamError("malformed_stream", f"not an SSE line: {line[:120]!r}")
        payload = line[5:].strip()
        if payload == b"[DONE]":
            self.done = True
            return
        if self.done:
            raise StreamError("malformed_stream", "data after [DONE]")
        try:
            obj = json.loads(payload)
        except ValueError as exc:
            raise StreamError("malformed_stream", f"bad JSON in stream: {payload[:120]!r}") from exc
        if not isinstance(obj, dict):
            raise StreamError("malformed_stream", f"stream chunk is not an object: {payload[:120]!r}")
        if "error" in obj:
            err = obj["error"]
            message = err.get("message", err) if isinstance(err, dict) else err
            raise StreamError("stream_error", str(message)[:300])
        self._chunk(obj, now)

    def _chunk(self, obj: dict, now: float) -> None:
        self.model = self.model or obj.get("model")
        choices = obj.get("choices") or []
        text = ""
        if choices:
            choice = choices[0]
            delta = choice.get("delta")
            if isinstance(delta, dict):
                text = (delta.get("content") or "") + (delta.get("reasoning_content") or "")
            else:
                text = choice.get("text") or ""
            self.finish_reason = choice.get("finish_reason") or self.finish_reason
        usage = obj.get("usage")
        reported = usage.get("completion_tokens") if isinstance(usage, dict) else None
        if isinstance(usage, dict) and usage.get("prompt_tokens") is not None:
            self.usage_prompt_tokens = int(usage["prompt_tokens"])
        if isinstance(usage, dict) and isinstance(usage.get("scheduling_delay_s"), (int, float)):
            self.scheduling_delay = float(usage["scheduling_delay_s"])
        if choices and reported is not None:
            # A running count on a content chunk: the exact number of tokens this chunk carries.
            self.continuous_usage = True
            self.count_source = "usage"
            k = int(reported) - len(self.token_times)
        elif text:
            k = max(1, self.count_text(text)) if self.count_text else 1
            if self.count_text:
                self.count_source = "tokenizer"
        else:
            k = 0
        self.token_times.extend([now] * max(0, k))
        self._text_chars += len(text)
        if reported is not None:
            self.usage_completion_tokens = int(reported)

    @property
    def count_mismatch(self) -> bool:
        """The server's final token total differs from the tokens timestamped from the stream."""
        return self.usage_completion_tokens is not None and self.usage_completion_tokens != len(
            self.token_times
        )
