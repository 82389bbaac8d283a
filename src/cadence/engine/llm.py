"""Offline use: `LLM(model).generate(prompts, SamplingParams)`."""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass, field
from typing import Any

from cadence.core.config import CacheConfig, SchedulerConfig
from cadence.core.sampling_params import SamplingParams
from cadence.engine.config import EngineConfig, ModelLoadConfig, ParallelConfig
from cadence.engine.llm_engine import LLMEngine
from cadence.engine.outputs import TokenLogprob


@dataclass
class Completion:
    index: int
    text: str
    token_ids: list[int]
    finish_reason: str | None
    stop_reason: int | str | None = None
    logprobs: list[TokenLogprob] = field(default_factory=list)


@dataclass
class GenerationResult:
    request_id: str
    prompt: str | None
    prompt_token_ids: list[int]
    outputs: list[Completion]


def engine_config_from_kwargs(model: str | None = None, **kwargs: Any) -> EngineConfig:
    """Route keyword arguments to the config dataclass that owns each field."""
    parts: dict[type, dict[str, Any]] = {ModelLoadConfig: {"model": model}, SchedulerConfig: {}, CacheConfig: {},
                                         ParallelConfig: {}}
    for key, value in kwargs.items():
        for cls, values in parts.items():
            if key in {f.name for f in dataclasses.fields(cls)}:
                values[key] = value
                break
        else:
            raise TypeError(f"unknown engine option {key!r}")
    return EngineConfig(load=ModelLoadConfig(**parts[ModelLoadConfig]),
                        scheduler=SchedulerConfig(**parts[SchedulerConfig]), cache=CacheConfig(**parts[CacheConfig]),
                        parallel=ParallelConfig(**parts[ParallelConfig]))


class LLM:
    """`LLM()` loads the built-in SmolLM2-135M-Instruct; `LLM("/path/to/hf/folder")` any supported model."""

    def __init__(self, model: str | None = None, **kwargs: Any) -> None:
        self.engine = LLMEngine(engine_config_from_kwargs(model, **kwargs))
        self._ids = itertools.count()

    @property
    def tokenizer(self):
        return self.engine.tokenizer

    def generate(self, prompts: str | list[str] | list[list[int]],
                 sampling_params: SamplingParams | list[SamplingParams] | None = None) -> list[GenerationResult]:
        if isinstance(prompts, str) or (prompts and isinstance(prompts[0], int)):
            prompts = [prompts]  # type: ignore[list-item]
        params_list = sampling_params if isinstance(sampling_params, list) else [sampling_params] * len(prompts)
        if len(params_list) != len(prompts):
            raise ValueError(f"{len(prompts)} prompts but {len(params_list)} sampling parameter sets")
        results: list[GenerationResult] = []
        seqs: dict[str, tuple[int, int]] = {}
        for i, (prompt, params) in enumerate(zip(prompts, params_list, strict=True)):
            params = params or SamplingParams()
            rid = f"gen-{next(self._ids)}"
            ids = self.engine.encode_prompt(prompt)
            results.append(GenerationResult(rid, prompt if isinstance(prompt, str) else None, ids, []))
            for j in range(params.n):
                sub = params.for_sequence(j)
                sub_id = f"{rid}-{j}" if params.n > 1 else rid
                self.engine.add_request(sub_id, ids, sub)
                results[i].outputs.append(Completion(j, "", [], None))
                seqs[sub_id] = (i, j)
        while self.engine.has_unfinished():
            for out in self.engine.step():
                i, j = seqs[out.request_id]
                c = results[i].outputs[j]
                c.text += out.new_text
                c.token_ids.extend(out.new_token_ids)
                c.logprobs.extend(out.new_logprobs)
                if out.finished:
                    c.finish_reason, c.stop_reason = out.finish_reason, out.stop_reason
        return results

