"""Fused LoRA linear: Triton kernels (forward and backward) with a PyTorch path beside them.

Public API:

- ``lora_linear``: y = x W0ᵀ (+ b) + s · dropout(x) Aᵀ Bᵀ as a differentiable ``torch.library`` op
  (``rolora::lora_linear_fwd`` / ``rolora::lora_linear_bwd``); saves and computes only what the RoLoRA
  phase (which of A, B require grad) needs.
- ``LoRALinear``, ``inject_lora``, ``set_phase``: the ``nn.Module`` and helpers for HF models.
- ``peft_state_dict`` / ``load_peft_state_dict``: adapters in PEFT's key format.
- ``LoRAPhase`` (``LoRAPhase.from_trainable(method.trains(t))``), ``phase_of``: which factors train.
- ``dropout_keep_mask``: the dropout mask a path draws for a seed.

Triton is imported lazily: without it (or without a GPU) everything runs on the PyTorch path.
"""

from rolora.kernels.layer import LoRALinear, inject_lora, lora_modules, set_phase
from rolora.kernels.op import dropout_keep_mask, lora_linear, resolve_backend
from rolora.kernels.peft_compat import load_peft_state_dict, parse_peft_key, peft_key, peft_state_dict
from rolora.kernels.phase import LoRAPhase, phase_of

__all__ = [
    "LoRALinear",
    "LoRAPhase",
    "dropout_keep_mask",
    "inject_lora",
    "load_peft_state_dict",
    "lora_linear",
    "lora_modules",
    "parse_peft_key",
    "peft_key",
    "peft_state_dict",
    "phase_of",
    "resolve_backend",
    "set_phase",
]
