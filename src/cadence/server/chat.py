"""POST /v1/chat/completions: messages through the tokenizer's chat template, a message out."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.responses import Response

from cadence.core.sampling_params import MAX_LOGPROBS
from cadence.engine.outputs import RequestOutput, TokenLogprob
from cadence.server.errors import bad_request
from cadence.server.protocol import (
    ChatChoice,
    ChatChunkChoice,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    ChatDelta,
    ChatLogprobs,
    ChatResponseMessage,
    TextPart,
    TokenLogprobEntry,
    TopLogprob,
)
from cadence.server.serving import Endpoint, Run, Serving


class ChatEndpoint(Endpoint):
    name = "chat"
    id_prefix = "chatcmpl"

    def __init__(self, serving: Serving) -> None:
        self.serving = serving

    async def __call__(self, body: ChatCompletionRequest, http: Request) -> Response:
        s = self.serving
        model = s.check_common(body)
        if body.tools and body.tool_choice != "none":
            raise bad_request("tools (function calling) are not supported by this server", "tools",
                              "unsupported_parameter")
        if body.response_format is not None and body.response_format.type != "text":
            raise bad_request(f"response_format {body.response_format.type!r} is not supported; only 'text'",
                              "response_format", "unsupported_parameter")
        if body.top_logprobs is not None and not body.logprobs:
            raise bad_request("top_logprobs needs logprobs: true", "top_logprobs")
        if body.top_logprobs is not None and not 0 <= body.top_logprobs <= MAX_LOGPROBS:
            raise bad_request(f"top_logprobs must be in [0, {MAX_LOGPROBS}], got {body.top_logprobs}",
                              "top_logprobs")
        messages = _template_messages(body)
        ids = await s.tokenize(_apply_template, s.engine.tokenizer, messages, body.add_generation_prompt,
                               param="messages")
        if body.max_completion_tokens is not None:
            max_tokens, param = body.max_completion_tokens, "max_completion_tokens"
        else:
            max_tokens, param = body.max_tokens, "max_tokens"
        logprobs = (body.top_logprobs or 0) if body.logprobs else None
        params = s.sampling_params(body, len(ids), max_tokens, param, logprobs, "messages")
        run = await s.start(self, ids, params)
        opts = body.stream_options
        return await s.respond(self, run, model, http, body.stream, bool(opts and opts.include_usage),
                               bool(opts and opts.continuous_usage_stats))

    # -- wording --------------------------------------------------------------------------------
    def _logprobs(self, lps: list[TokenLogprob]) -> ChatLogprobs:
        piece = self.serving.piece

        def top(token_id: int, value: float) -> TopLogprob:
            text = piece(token_id)
            return TopLogprob(token=text, logprob=value, bytes=list(text.encode()))

        content = []
        for lp in lps:
            chosen = top(lp.token_id, lp.logprob)
            content.append(TokenLogprobEntry(**chosen.model_dump(), top_logprobs=[top(t, v) for t, v in lp.top]))
        return ChatLogprobs(content=content)

    def response(self, run: Run, model: str) -> ChatCompletionResponse:
        want = run.params.logprobs is not None
        choices = [ChatChoice(index=c.index, message=ChatResponseMessage(content=c.text),
                              finish_reason=c.finish_reason, logprobs=self._logprobs(c.logprobs) if want else None)
                   for c in run.choices]
        return ChatCompletionResponse(id=run.request_id, model=model, choices=choices, usage=run.usage())

    def opening(self, run: Run, model: str) -> list[ChatCompletionChunk]:
        return [ChatCompletionChunk(id=run.request_id, model=model, choices=[
            ChatChunkChoice(index=c.index, delta=ChatDelta(role="assistant", content=""))]) for c in run.choices]

    def chunks(self, run: Run, model: str, index: int, out: RequestOutput) -> list[ChatCompletionChunk]:
        if not (out.new_text or out.finished or out.new_logprobs):
            return []
        lps = self._logprobs(out.new_logprobs) if run.params.logprobs is not None else None
        choice = ChatChunkChoice(index=index, delta=ChatDelta(content=out.new_text or None), logprobs=lps,
                                 finish_reason=out.finish_reason if out.finished else None)
        return [ChatCompletionChunk(id=run.request_id, model=model, choices=[choice])]

    def usage_chunk(self, run: Run, model: str) -> ChatCompletionChunk:
        return ChatCompletionChunk(id=run.request_id, model=model, choices=[], usage=run.usage())


def _template_messages(body: ChatCompletionRequest) -> list[dict[str, Any]]:
    """Messages as the chat template wants them: text content only."""
    out = []
    for i, m in enumerate(body.messages):
        content = m.content
        if isinstance(content, list):
            texts = []
            for j, part in enumerate(content):
                if not isinstance(part, TextPart):
                    raise bad_request(f"content parts of type {part.type!r} are not supported; only 'text'",
                                      f"messages.{i}.content.{j}", "unsupported_parameter")
                texts.append(part.text)
            content = "".join(texts)
        msg: dict[str, Any] = {"role": "system" if m.role == "developer" else m.role, "content": content or ""}
        if m.name:
            msg["name"] = m.name
        out.append(msg)
    return out


def _apply_template(tokenizer: Any, messages: list[dict[str, Any]], add_generation_prompt: bool) -> list[int]:
    try:
        return tokenizer.apply_chat_template(messages, add_generation_prompt=add_generation_prompt)
    except ValueError:
        raise
    except Exception as exc:  # a template may raise on input it rejects (e.g. roles out of order)
        raise ValueError(f"the chat template rejected these messages: {exc}") from exc
