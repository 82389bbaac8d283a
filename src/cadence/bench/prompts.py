"""Prompts of exact token lengths, built with the target model's tokenizer when there is one.

With a tokenizer, a prompt is random vocabulary tokens decoded to text and re-encoded until the text
encodes to exactly the asked length (decode/encode is not an identity, so it may take a few rounds).
Every prompt is different, so a server's prefix cache cannot make later requests look cheap.
Without a tokenizer, prompts are common English words (about one token each in BPE vocabularies) and
lengths are estimates; the server's reported `usage.prompt_tokens` replaces them where it is sent.
"""

from __future__ import annotations

import random
from pathlib import Path

from cadence.bench.client import Prompt
from cadence.core.workload import RequestSpec

# Common English words: each one BPE token with its leading space in GPT-2/Llama-3/Qwen vocabularies.
_WORDS_TEXT = (
    "the of and to in is was for that on with as by at from his her this which or had not are but be they one "
    "all were their there been has more when will would who so no if out into time two can only other new some "
    "could these may first then do any like my now over such our man me even most made after also did many off "
    "before must through back years where much your way well down should because each just those people how too "
    "little state good very make world still own see men work long get here between both life being under never "
    "day same another know while last might us great old year come since against go came right used take three"
)
_WORDS = _WORDS_TEXT.split()


class Tokenizer:
    """The two calls the bench needs, over either the `tokenizers` package or transformers."""

    def __init__(self, path: str) -> None:
        self.path = path
        file = Path(path) / "tokenizer.json" if Path(path).is_dir() else Path(path)
        if file.name.endswith(".json") and file.exists():
            from tokenizers import Tokenizer as FastTokenizer

            fast = FastTokenizer.from_file(str(file))
            self._encode = lambda text: fast.encode(text, add_special_tokens=False).ids
            self._decode = lambda ids: fast.decode(ids, skip_special_tokens=True)
            self.vocab_size = fast.get_vocab_size()
            special = {t.content for t in fast.get_added_tokens_decoder().values()}
            self._special_ids = {fast.token_to_id(t) for t in special}
        else:
            from transformers import AutoTokenizer

            tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
            self._encode = lambda text: tok.encode(text, add_special_tokens=False)
            self._decode = lambda ids: tok.decode(ids, skip_special_tokens=True)
            self.vocab_size = len(tok)
            self._special_ids = set(tok.all_special_ids)
        self._pool: list[int] | None = None

    def encode(self, text: str) -> list[int]:
        return list(self._encode(text))

    def decode(self, ids: list[int]) -> str:
        return self._decode(list(ids))

    def count(self, text: str) -> int:
        return len(self._encode(text))

    def pool(self) -> list[int]:
        """Ids of plain word tokens that survive decode/encode alone; prompts are drawn from these."""
        if self._pool is None:
            rng = random.Random(0)
            candidates = rng.sample(range(self.vocab_size), min(self.vocab_size, 20_000))
            pool = []
            for i in candidates:
                if i in self._special_ids:
                    continue
                text = self._decode([i])
                if text.strip().isalpha() and text.isascii() and self._encode(text) == [i]:
                    pool.append(i)
            self._pool = pool or [i for i in candidates if i not in self._special_ids]
        return self._pool


def load_tokenizer(path: str | None) -> Tokenizer | None:
    return Tokenizer(path) if path else None


class PromptFactory:
    """Builds the prompt for each spec; `exact` is False on a prompt whose length is only estimated."""

    def __init__(self, tokenizer: Tokenizer | None, seed: int | str = 0, send_ids: bool = False) -> None:
        self.tokenizer = tokenizer
        self.seed = seed
        self.send_ids = send_ids  # completions endpoint with token-id prompts: exact with no tokenizer at all

    def build(self, spec: RequestSpec) -> Prompt:
        rng = random.Random(f"{self.seed}-{spec.request_id}")
        tok = self.tokenizer
        if spec.prompt_token_ids is not None:
            if self.send_ids:
                return Prompt(spec.prompt_tokens, token_ids=spec.prompt_token_ids)
            if tok is None:
                raise ValueError(
                    "this workload fixes prompt token ids: send them (completions endpoint) or give --tokenizer"
                )
            return Prompt(spec.prompt_tokens, text=tok.decode(list(spec.prompt_token_ids)), exact=False)
        if spec.prompt_text is not None:
            n = tok.count(spec.prompt_text) if tok else spec.prompt_tokens
            return Prompt(n, text=spec.prompt_text, exact=tok is not None)
        if tok is None:
            if self.send_ids:
                # Ids without a tokenizer: exact length, arbitrary content; assumes a vocabulary of >= 1000.
                return Prompt(
                    spec.prompt_tokens,
                    token_ids=tuple(rng.randint(100, 999) for _ in range(spec.prompt_tokens)),
                )
            return Prompt(
                spec.prompt_tokens,
                text=" ".join(rng.choice(_WORDS) for _ in range(spec.prompt_tokens)),
                exact=False,
            )
        return self._exact_text(tok, spec.prompt_tokens, rng)

    def _exact_text(self, tok: Tokenizer, n: int, rng: random.Random) -> Prompt:
        pool = tok.pool()
        ids = [rng.choice(pool) for _ in range(n)]
        for _ in range(12):
            text = tok.decode(ids)
            got = tok.encode(text)
            if len(got) == n:
                return Prompt(n, text=text, token_ids=tuple(got) if self.send_ids else None)
            ids = got[:n] if len(got) > n else got + [rng.choice(pool) for _ in range(n - len(got))]
        text = tok.decode(ids)
        return Prompt(tok.count(text), text=text, exact=False)
