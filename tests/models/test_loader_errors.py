"""Loading fails with errors that name the problem."""

from __future__ import annotations

import json

import pytest
import torch

from cadence.models.config import SUPPORTED_ARCHITECTURES, ModelConfig, ModelConfigError
from cadence.models.loader import load_model
from tiny_models import make_checkpoint


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    folder = tmp_path_factory.mktemp("llama")
    make_checkpoint("llama", folder)
    return folder


def _copy_with_config(src, dst, **changes):
    dst.mkdir()
    cfg = json.loads((src / "config.json").read_text())
    cfg.update(changes)
    (dst / "config.json").write_text(json.dumps(cfg))
    for f in src.glob("*.safetensors"):
        (dst / f.name).symlink_to(f)
    return dst


def test_unsupported_architecture_names_the_supported_ones(checkpoint, tmp_path):
    folder = _copy_with_config(checkpoint, tmp_path / "gpt", architectures=["GPT2LMHeadModel"])
    with pytest.raises(ModelConfigError) as info:
        ModelConfig.from_path(folder)
    msg = str(info.value)
    assert "GPT2LMHeadModel" in msg and all(a in msg for a in SUPPORTED_ARCHITECTURES)


def test_missing_config_and_weights(checkpoint, tmp_path):
    with pytest.raises(ModelConfigError, match="no config.json"):
        ModelConfig.from_path(tmp_path)
    (tmp_path / "config.json").write_text((checkpoint / "config.json").read_text())
    cfg = ModelConfig.from_path(tmp_path)
    with pytest.raises(FileNotFoundError, match="no \\*.safetensors"):
        load_model(cfg, tmp_path, dtype=torch.float32, device="cpu")


def test_shape_mismatch_names_the_tensor(checkpoint, tmp_path):
    folder = _copy_with_config(checkpoint, tmp_path / "wide", intermediate_size=96)
    cfg = ModelConfig.from_path(folder)
    with pytest.raises(ModelConfigError, match=r"shape mismatch for 'model\.layers\.0\.mlp\.(gate|up|down)_proj"):
        load_model(cfg, folder, dtype=torch.float32, device="cpu")


def test_missing_weights_are_listed(checkpoint, tmp_path):
    folder = _copy_with_config(checkpoint, tmp_path / "deep", num_hidden_layers=3)
    cfg = ModelConfig.from_path(folder)
    with pytest.raises(ModelConfigError, match=r"weights missing .*model\.layers\.2\."):
        load_model(cfg, folder, dtype=torch.float32, device="cpu")


def test_unsupported_rope_scaling(checkpoint, tmp_path):
    folder = _copy_with_config(checkpoint, tmp_path / "yarn", rope_scaling={"rope_type": "yarn", "factor": 4.0},
                               rope_parameters=None)
    with pytest.raises(ModelConfigError, match="unsupported rope scaling 'yarn'"):
        ModelConfig.from_path(folder)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_dummy_weights_any_dtype(checkpoint, dtype):
    cfg = ModelConfig.from_path(checkpoint)
    model = load_model(cfg, None, dtype=dtype, device="cpu", load_format="dummy")
    assert all(p.dtype == dtype for p in model.parameters())
    assert model.model.rotary_emb.cos_sin.dtype == torch.float32
