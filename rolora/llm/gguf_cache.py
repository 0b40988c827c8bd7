"""Convert a GGUF file once to a safetensors Hugging Face folder, cached and reused.

transformers dequantises a GGUF checkpoint to float32 on every load (≈20 s for SmolLM2-135M);
the converted folder reloads in under a second. The cache folder's name carries a hash of the file,
so a different file never reuses a stale conversion. It is built in a temporary folder next to its
final place and renamed into place: an interrupted conversion never leaves a half-written cache.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

CACHE_ENV = "ROLORA_CACHE"


def cache_root(cache_dir: str | Path | None = None) -> Path:
    """``cache_dir``, else ``$ROLORA_CACHE``, else ``~/.cache/rolora``."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "rolora").expanduser()


def file_digest(path: Path) -> str:
    """First 12 hex digits of the file's SHA-256."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:12]


def convert_gguf(gguf_path: Path, out_dir: Path) -> None:
    """Write ``gguf_path`` as a float32 safetensors HF folder (model, config, tokenizer) to ``out_dir``."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    folder, name = str(gguf_path.parent), gguf_path.name
    model_type = AutoConfig.from_pretrained(folder, gguf_file=name).model_type
    if model_type != "llama":
        raise ValueError(f"{gguf_path}: GGUF model type {model_type!r} is not supported (only 'llama')")
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    # The dequantised weights are plain float32 now; a leftover quantizer would make save_pretrained
    # write a config that asks transformers to quantise again on load.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(str(out_dir))
    tokenizer.save_pretrained(str(out_dir))


def cached_gguf_folder(gguf_path: Path, cache_dir: str | Path | None = None) -> Path:
    """The converted folder of ``gguf_path`` under the cache root, converting it on first use."""
    gguf_path = Path(gguf_path)
    if not gguf_path.is_file():
        raise ValueError(f"GGUF file {gguf_path} does not exist")
    root = cache_root(cache_dir)
    target = root / f"{gguf_path.stem}-{file_digest(gguf_path)}"
    if (target / "config.json").is_file():
        return target
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=root))
    try:
        convert_gguf(gguf_path, tmp)
        try:
            os.rename(tmp, target)
        except OSError:  # another process finished the same conversion first: keep theirs
            if not (target / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
