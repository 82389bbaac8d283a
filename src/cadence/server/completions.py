"""POST /v1/completions: a prompt (text or token ids) in, text out."""

from __future__ import annotations

from fastapi import Request
from fastapi.responses import Response

from cadence.engine.outputs import RequestOutput, TokenLogprob
from cadence.server.errors import bad_request
from cadence.server.protocol import (
    CompletionChoice,
    CompletionLogprobs,
    CompletionRequest,
    CompletionResponse,
)
from cadence.server.serving import Endpoint, Run, Serving


class CompletionEndpoint(Endpoint):
    name = "completions"
    id_prefix = "cmpl"

    def __init__(self, serving: Serving) -> None:
        self.serving = serving

    async def __call__(self, body: CompletionRequest, http: Request) -> Response:
        s = self.serving
        model = s.check_common(body)
        if body.echo:
            raise bad_request("echo is not supported by this server", "echo", "unsupported_parameter")
        if body.suffix:
            raise bad_request("suffix is not supported by this server", "suffix", "unsupported_parameter")
        if body.best_of is not None and body.best_of != body.n:
            raise bad_request("best_of other than n is not supported by this server", "best_of",
                              "unsupported_parameter")
        prompt = body.prompt
        if isinstance(prompt, list) and prompt and isinstance(prompt[0], (str, list)):
            if len(prompt) != 1:
                raise bad_request("batched prompts are not supported: send one request per prompt", "prompt",
                                  "unsupported_parameter")
            prompt = prompt[0]
        if isinstance(prompt, str):
            text = prompt
            ids = await s.tokenize(lambda: s.engine.tokenizer.encode(text)) if text else []
        else:
            ids = list(prompt)  # type: ignore[arg-type]
        if not ids:
            raise bad_request("the prompt is empty", "prompt")
        max_tokens = 16 if body.max_tokens is None else body.max_tokens  # OpenAI's default here
        params = s.sampling_params(body, len(ids), max_tokens, "max_tokens", body.logprobs, "prompt")
        run = await s.start(self, ids, params)
        opts = body.stream_options
        return await s.respond(self, run, model, http, body.stream, bool(opts and opts.include_usage),
                               bool(opts and opts.continuous_usage_stats))

    # -- wording --------------------------------------------------------------------------------
    def _logprobs(self, lps: list[TokenLogprob], text_start: int) -> CompletionLogprobs:
        piece = self.serving.piece
        out = CompletionLogprobs()
        offset = text_start
        for lp in lps:
            token = piece(lp.token_id)
            out.tokens.append(token)
            out.token_logprobs.append(lp.logprob)
            out.top_logprobs.append({piece(t): v for t, v in lp.top})
            out.text_offset.append(offset)
            offset += len(token)
        return out

    def response(self, run: Run, model: str) -> CompletionResponse:
        want = run.params.logprobs is not None
        choices = [CompletionChoice(index=c.index, text=c.text, finish_reason=c.finish_reason,
                                    logprobs=self._logprobs(c.logprobs, 0) if want else None)
                   for c in run.choices]
        return CompletionResponse(id=run.request_id, model=model, choices=choices, usage=run.usage())

    def chunks(self, run: Run, model: str, index: int, out: RequestOutput) -> list[CompletionResponse]:
        untokenized = self.serving.engine.tokenizer is None and out.new_token_ids  # no text ever comes
        if not (out.new_text or out.finished or out.new_logprobs or untokenized):
            return []  # text held back (a partial character or a possible stop string)
        c = run.choices[index]
        lps = None
        if run.params.logprobs is not None:
            lps = self._logprobs(out.new_logprobs, len(c.text) - len(out.new_text))
        choice = CompletionChoice(index=index, text=out.new_text, logprobs=lps,
                                  finish_reason=out.finish_reason if out.finished else None)
        return [CompletionResponse(id=run.request_id, model=model, choices=[choice])]

    def usage_chunk(self, run: Run, model: str) -> CompletionResponse:
        return CompletionResponse(id=run.request_id, model=model, choices=[], usage=run.usage())
