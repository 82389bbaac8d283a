"""Text in and out: encoding, chat templates, and incremental detokenization with stop strings."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class Tokenizer:
    """A Hugging Face fast tokenizer read from a local folder (tokenizer.json + config)."""

    def __init__(self, path: str | Path) -> None:
        from transformers import AutoTokenizer

        self.path = Path(path)
        if not (self.path / "tokenizer.json").is_file() and not (self.path / "tokenizer_config.json").is_file():
            raise FileNotFoundError(f"no tokenizer.json in {self.path}")
        self.hf = AutoTokenizer.from_pretrained(str(self.path), local_files_only=True)
        eos = self.hf.eos_token_id
        self.eos_token_ids: frozenset[int] = frozenset([] if eos is None else [eos])

    @property
    def vocab_size(self) -> int:
        return len(self.hf)

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return self.hf(text, add_special_tokens=add_special_tokens)["input_ids"]

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        return self.hf.decode(ids, skip_special_tokens=skip_special_tokens)

    def apply_chat_template(self, messages: list[dict[str, Any]], add_generation_prompt: bool = True) -> list[int]:
        if not self.hf.chat_template:
            raise ValueError("this model's tokenizer has no chat template; use /v1/completions instead")
        out = self.hf.apply_chat_template(messages, add_generation_prompt=add_generation_prompt, tokenize=True)
        if isinstance(out, dict) or hasattr(out, "input_ids"):
            out = out["input_ids"]
        return list(out)

    def id_to_piece(self, token_id: int) -> str:
        return self.hf.decode([token_id], skip_special_tokens=False)


@dataclass
class IncrementalDetokenizer:
    """Emits text as tokens arrive without re-decoding everything: decodes a small window and
    holds back text that ends in an incomplete UTF-8 sequence. Watches for stop strings."""

    tokenizer: Tokenizer
    prompt_tail: list[int]  # a few prompt tokens: merges at the boundary decode correctly
    stop: tuple[str, ...] = ()
    include_stop: bool = False
    skip_special_tokens: bool = True
    text: str = ""
    ids: list[int] = field(default_factory=list)
    _prefix: int = 0
    _read: int = 0
    _emitted: int = 0  # characters of `text` already handed out

    def __post_init__(self) -> None:
        self.ids = list(self.prompt_tail)
        self._prefix = 0
        self._read = len(self.ids)

    def add(self, token_ids: list[int]) -> tuple[str, str | None]:
        """Append tokens; return (new text safe to show, the stop string hit or None)."""
        self.ids.extend(token_ids)
        skip = self.skip_special_tokens
        prefix_text = self.tokenizer.decode(self.ids[self._prefix : self._read], skip)
        full = self.tokenizer.decode(self.ids[self._prefix :], skip)
        if len(full) > len(prefix_text) and not full.endswith("\ufffd"):
            self.text += full[len(prefix_text) :]
            self._prefix, self._read = self._read, len(self.ids)
        hit = None
        if self.stop:
            hold = max(len(s) for s in self.stop) - 1
            search_from = max(0, self._emitted - hold)
            best = None
            for s in self.stop:
                i = self.text.find(s, search_from)
                if i != -1 and (best is None or i < best[0]):
                    best = (i, s)
            if best is not None:
                i, hit = best
                self.text = self.text[: i + len(hit)] if self.include_stop else self.text[:i]
                new = self.text[self._emitted :]
                self._emitted = len(self.text)
                return new, hit
            # Hold back a tail that could be the start of a stop string.
            safe = max(self._emitted, len(self.text) - hold)
        else:
            safe = len(self.text)
        new = self.text[self._emitted : safe]
        self._emitted = safe
        return new, hit

    def flush(self) -> str:
        """At the end: hand out whatever was held back."""
        new = self.text[self._emitted :]
        self._emitted = len(self.text)
        return new
