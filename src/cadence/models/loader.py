"""Build a model and fill its weights: from a Hugging Face folder of safetensors, or dummy values."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from cadence.distributed.shard import TPShard
from cadence.models.config import ModelConfig, ModelConfigError
from cadence.models.llama import LlamaForCausalLM

DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
          "float16": torch.float16, "fp16": torch.float16, "half": torch.float16}
LOAD_FORMATS = ("auto", "safetensors", "dummy")

# checkpoint name piece -> (our fused parameter, shard index among its parts)
_FUSED = {
    "q_proj": ("qkv_proj", 0), "k_proj": ("qkv_proj", 1), "v_proj": ("qkv_proj", 2),
    "gate_proj": ("gate_up_proj", 0), "up_proj": ("gate_up_proj", 1),
}
_IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)


def resolve_dtype(dtype: str | torch.dtype, config: ModelConfig) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "auto":
        dtype = config.torch_dtype
    try:
        return DTYPES[dtype]
    except KeyError:
        raise ValueError(f"unsupported dtype {dtype!r}; choose one of auto, {', '.join(DTYPES)}") from None


def load_model(
    config: ModelConfig,
    path: str | Path | None,
    *,
    dtype: torch.dtype,
    device: torch.device | str,
    load_format: str = "auto",
    seed: int = 0,
    shard: TPShard | None = None,
) -> LlamaForCausalLM:
    """The whole model, or with `shard` one tensor-parallel rank's slice of it (read from disk
    slice by slice; dummy weights then differ from the unsharded model's: for throughput only)."""
    if load_format not in LOAD_FORMATS:
        raise ValueError(f"unknown load format {load_format!r}; choose one of {', '.join(LOAD_FORMATS)}")
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # build in place: no fp32 copy of an 8B model on the way
    try:
        with torch.device(device):
            model = LlamaForCausalLM(config, shard)  # the rope table is built in fp32 explicitly
    finally:
        torch.set_default_dtype(previous)
    if load_format == "dummy":
        init_dummy_weights(model, seed)
    else:
        if path is None:
            raise ValueError("a model path is needed unless load_format='dummy'")
        load_safetensors(model, Path(path))
    return model.eval()


@torch.no_grad()
def init_dummy_weights(model: torch.nn.Module, seed: int = 0) -> None:
    """Random values of a realistic scale: throughput does not depend on them when EOS is ignored."""
    gen = torch.Generator(device=next(model.parameters()).device).manual_seed(seed)
    for name, p in model.named_parameters():
        if name.endswith("norm.weight"):
            p.fill_(1.0)
        else:
            p.uniform_(-0.02, 0.02, generator=gen)


@torch.no_grad()
def load_safetensors(model: LlamaForCausalLM, path: Path) -> None:
    from safetensors import safe_open

    files = sorted(path.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"no *.safetensors weights in {path}")
    params = dict(model.named_parameters())
    cfg, tp_shard = model.config, model.shard
    attn, mlp = model.model.layers[0].self_attn, model.model.layers[0].mlp  # this rank's sizes
    width = mlp.down_proj.in_features
    fused_sizes = {"qkv_proj": [attn.q_size, attn.kv_size, attn.kv_size], "gate_up_proj": [width, width]}
    expected = _expected_checkpoint_names(params, cfg)
    seen: set[str] = set()
    for file in files:
        with safe_open(str(file), framework="pt") as f:
            for name in f.keys():  # noqa: SIM118 (safe_open has no __iter__)
                if name.endswith(_IGNORED_SUFFIXES):
                    continue
                target, shard = _target(name)
                if target not in params:
                    if name == "lm_head.weight" and cfg.tie_word_embeddings:
                        continue
                    raise ModelConfigError(f"{file.name}: unexpected weight {name!r} for {cfg.architecture}")
                dest = params[target]
                if tp_shard is None:
                    tensor = f.get_tensor(name)
                else:
                    from cadence.distributed.loading import VOCAB_WEIGHTS, read_shard

                    tensor = read_shard(f, name, tp_shard, cfg)
                    if name.endswith(VOCAB_WEIGHTS) and tensor.shape[0] < dest.shape[0]:
                        dest.zero_()  # rows past the vocabulary pad the last rank's block
                        dest = dest.narrow(0, 0, tensor.shape[0])
                if shard is not None:
                    sizes = fused_sizes[target.rsplit(".", 2)[-2]]
                    offset = sum(sizes[:shard])
                    dest = dest.narrow(0, offset, sizes[shard])
                if tuple(tensor.shape) != tuple(dest.shape):
                    raise ModelConfigError(
                        f"shape mismatch for {name!r}: checkpoint has {tuple(tensor.shape)}, "
                        f"config.json implies {tuple(dest.shape)}"
                    )
                dest.copy_(tensor)
                seen.add(name)
    missing = sorted(expected - seen)
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise ModelConfigError(f"weights missing from {path}: {shown}")


def _target(name: str) -> tuple[str, int | None]:
    parts = name.split(".")
    for i, part in enumerate(parts):
        if part in _FUSED:
            fused, shard = _FUSED[part]
            return ".".join(parts[:i] + [fused] + parts[i + 1 :]), shard
    return name, None


def _expected_checkpoint_names(params: dict[str, torch.nn.Parameter], cfg: ModelConfig) -> set[str]:
    names = set()
    for name in params:
        if name == "lm_head.weight" and cfg.tie_word_embeddings:
            continue
        if ".qkv_proj." in name:
            names.update(name.replace("qkv_proj", p) for p in ("q_proj", "k_proj", "v_proj"))
        elif ".gate_up_proj." in name:
            names.update(name.replace("gate_up_proj", p) for p in ("gate_proj", "up_proj"))
        else:
            names.add(name)
    return names


def read_config(path: str | Path) -> dict:
    return json.loads((Path(path) / "config.json").read_text())
