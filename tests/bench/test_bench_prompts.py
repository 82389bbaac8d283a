"""Prompts of exact token lengths with a real (small, locally trained) tokenizer; honest estimates without one."""

from __future__ import annotations

import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from cadence.bench.client import EndpointConfig, Prompt, build_body
from cadence.bench.prompts import PromptFactory, load_tokenizer
from cadence.core.workload import RequestSpec, w1

CORPUS = [
    "the quick brown fox jumps over the lazy dog while the cat sleeps in the warm afternoon sun",
    "serving large language models fast requires careful batching of prefills and decodes together",
    "a tokenizer splits text into pieces called tokens and every model has its own vocabulary of them",
] * 50


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory):
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(CORPUS, trainers.BpeTrainer(vocab_size=400, special_tokens=["<unk>", "<s>"]))
    d = tmp_path_factory.mktemp("tok")
    tok.save(str(d / "tokenizer.json"))
    return d


def test_exact_lengths_with_a_tokenizer(tok_dir):
    tok = load_tokenizer(str(tok_dir))
    factory = PromptFactory(tok, seed=1)
    for i, n in enumerate((1, 7, 64, 700)):
        p = factory.build(RequestSpec(i, n, 5))
        assert p.exact and p.tokens == n and tok.count(p.text) == n
    assert factory.build(RequestSpec(2, 64, 5)) == factory.build(RequestSpec(2, 64, 5))  # seeded
    assert factory.build(RequestSpec(3, 64, 5)) != factory.build(RequestSpec(4, 64, 5))  # no shared prefix


def test_without_a_tokenizer_lengths_are_estimates_unless_ids_are_sent():
    text = PromptFactory(None).build(RequestSpec(0, 50, 5))
    assert not text.exact and len(text.text.split()) == 50
    ids = PromptFactory(None, send_ids=True).build(RequestSpec(0, 50, 5))
    assert ids.exact and len(ids.token_ids) == 50
    spec = w1()[0]
    fixed = PromptFactory(None, send_ids=True).build(spec)
    assert fixed.token_ids == spec.prompt_token_ids
    with pytest.raises(ValueError):
        PromptFactory(None).build(spec)


def test_request_body_asks_for_exact_output_and_usage():
    cfg = EndpointConfig("http://h", "m")
    body = build_body(cfg, Prompt(3, token_ids=(1, 2, 3)), 17)
    assert (
        body["prompt"] == [1, 2, 3] and body["max_tokens"] == body["min_tokens"] == 17 and body["ignore_eos"]
    )
    assert body["stream"] and body["stream_options"]["continuous_usage_stats"]
    plain = build_body(
        EndpointConfig("http://h", "m", "/v1/chat/completions", exact_output=False, stream_usage=False),
        Prompt(1, text="hi"),
        4,
    )
    assert plain["messages"] == [{"role": "user", "content": "hi"}]
    assert "min_tokens" not in plain and "ignore_eos" not in plain and "stream_options" not in plain


def test_capacity_points_get_fresh_prompts_of_the_same_lengths():
    """A server with prefix caching must not serve a later capacity point's prompts from an
    earlier point's cache: each point gets new contents, the same lengths."""
    import argparse

    from cadence.bench.cli import PreparedRun, add_arguments

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--url", "http://127.0.0.1:9", "--model", "m", "--workload", "W2",
                              "--num-prompts", "6", "--prompt-format", "ids", "--no-progress"])
    prep = PreparedRun(args)
    first = list(prep.prompts)
    prep.fresh_prompts(1)
    second = list(prep.prompts)
    assert [p.tokens for p in first] == [p.tokens for p in second]
    assert all(a.token_ids != b.token_ids for a, b in zip(first, second, strict=True))
    prep.fresh_prompts(0)
    assert [p.token_ids for p in prep.prompts] == [p.token_ids for p in first]
