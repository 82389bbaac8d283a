"""The built-in model: converting the packaged GGUF into a Hugging Face folder that Cadence loads."""

from __future__ import annotations

import json

from cadence.core.sampling_params import SamplingParams
from cadence.engine.llm import LLM
from cadence.models.config import ModelConfig
from cadence.models.default_model import convert_gguf, default_model_path, gguf_path


def test_conversion_writes_a_loadable_folder(tmp_path):
    target = tmp_path / "SmolLM2"
    convert_gguf(gguf_path(), target)
    names = {p.name for p in target.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= names
    cfg = json.loads((target / "config.json").read_text())
    assert "quantization_config" not in cfg
    model_cfg = ModelConfig.from_path(target)
    assert (model_cfg.architecture, model_cfg.num_layers, model_cfg.vocab_size) == ("LlamaForCausalLM", 30, 49152)
    assert model_cfg.tie_word_embeddings
    # the converted folder answers like the cached default one
    llm = LLM(str(target), dtype="float32")
    ids = llm.tokenizer.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}])
    text = llm.generate(ids, SamplingParams(max_tokens=12, temperature=0))[0].outputs[0].text
    assert "Paris" in text


def test_default_model_path_is_cached():
    first = default_model_path()
    assert default_model_path() == first
    assert (first / "model.safetensors").is_file()
