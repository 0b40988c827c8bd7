"""Adapter state dicts in PEFT's format, to and from a model holding ``LoRALinear`` modules.

PEFT saves the default adapter (``get_peft_model_state_dict``, ``adapter_model.safetensors``) as

    base_model.model.<module path>.lora_A.weight   r×in
    base_model.model.<module path>.lora_B.weight   out×r

where <module path> is the name of the wrapped ``nn.Linear`` in the base model; after ``inject_lora``
it is the name of our ``LoRALinear``, whose ``lora_A`` / ``lora_B`` parameters have the same shapes.
A PEFT model's own ``state_dict()`` spells the keys with the adapter name
(``...lora_A.default.weight``); ``load_peft_state_dict`` accepts both spellings.
"""

from __future__ import annotations

import re

import torch
from torch import Tensor, nn

from rolora.kernels.layer import lora_modules

PEFT_PREFIX = "base_model.model."
_KEY = re.compile(r"^(?:base_model\.model\.)?(?P<path>.+)\.lora_(?P<factor>[AB])(?:\.(?P<adapter>[^.]+))?\.weight$")


def peft_key(module_path: str, factor: str) -> str:
    """PEFT's key for factor "A" or "B" of the LoRA layer at ``module_path`` (default adapter)."""
    if factor not in ("A", "B"):
        raise ValueError(f"factor must be 'A' or 'B', got {factor!r}")
    return f"{PEFT_PREFIX}{module_path}.lora_{factor}.weight"


def parse_peft_key(key: str, adapter_name: str = "default") -> tuple[str, str]:
    """(module path, "A" | "B") from a PEFT key; raises ValueError for anything else."""
    match = _KEY.match(key)
    if match is None:
        raise ValueError(f"not a PEFT LoRA key: {key!r} (expected "
                         f"'{PEFT_PREFIX}<module>.lora_A.weight' or '.lora_B.weight')")
    adapter = match.group("adapter")
    if adapter is not None and adapter != adapter_name:
        raise ValueError(f"key {key!r} belongs to adapter {adapter!r}, not {adapter_name!r}")
    return match.group("path"), match.group("factor")


def peft_state_dict(model: nn.Module) -> dict[str, Tensor]:
    """The model's LoRA factors under PEFT's keys (detached clones, adapter dtype)."""
    out: dict[str, Tensor] = {}
    for path, layer in lora_modules(model).items():
        out[peft_key(path, "A")] = layer.lora_A.detach().clone()
        out[peft_key(path, "B")] = layer.lora_B.detach().clone()
    if not out:
        raise ValueError("the model has no LoRALinear modules (call inject_lora first)")
    return out


def load_peft_state_dict(model: nn.Module, state_dict: dict[str, Tensor], strict: bool = True,
                         adapter_name: str = "default") -> None:
    """Copy PEFT-keyed LoRA factors into the model's ``LoRALinear`` modules.

    Everything is checked before anything is copied, so a bad state dict leaves the model untouched:
    unknown keys, modules that are not LoRA layers, shape mismatches (naming the key and both shapes)
    and, with ``strict``, LoRA layers missing from the state dict.
    """
    layers = lora_modules(model)
    plan: list[tuple[Tensor, Tensor]] = []
    seen: set[tuple[str, str]] = set()
    for key, value in state_dict.items():
        path, factor = parse_peft_key(key, adapter_name)
        if path not in layers:
            raise KeyError(f"{key!r}: the model has no LoRALinear at {path!r} (LoRA layers: "
                           f"{sorted(layers)[:8]})")
        param = layers[path].lora_A if factor == "A" else layers[path].lora_B
        if tuple(value.shape) != tuple(param.shape):
            raise ValueError(f"{key!r}: shape {tuple(value.shape)} does not match lora_{factor} of "
                             f"{path!r}, {tuple(param.shape)}")
        plan.append((param, value))
        seen.add((path, factor))
    if strict:
        missing = [peft_key(p, f) for p in layers for f in "AB" if (p, f) not in seen]
        if missing:
            raise KeyError(f"state dict lacks {len(missing)} LoRA keys, e.g. {missing[:4]}")
    with torch.no_grad():
        for param, value in plan:
            param.copy_(value.to(device=param.device, dtype=param.dtype))
