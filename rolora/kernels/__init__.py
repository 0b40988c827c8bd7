"""Fused LoRA linear: Triton kernels (forward and backward) with a PyTorch path beside them.

Public API:

- ``lora_linear``: y = x W0ᵀ (+ b) + s · dropout(x) Aᵀ Bᵀ as a differentiable ``torch.library`` op
  (``rolora::lora_linear_fwd`` / ``rolora::lora_linear_bwd``); saves and computes only what the RoLoRA
  phase (which of A, B require grad) needs.
- ``draw_dropout_seed``: the per-call dropout seed a layer passes to ``lora_linear`` (torch's RNG).
- ``LoRAPhase`` (``LoRAPhase.from_trainable(method.trains(t))``), ``phase_of``: which factors train.
- ``dropout_keep_mask``: the dropout mask a path draws for a seed.

No ``nn.Module`` lives here: the layer that calls the op is ``rolora.llm.adapter_layer.FederatedLinear``
(one client's tensors, or many clients' stacked). ``addmm_lora`` is the benchmark's peer baseline.
Triton is imported lazily: without it (or without a GPU) everything runs on the PyTorch path.
"""

from rolora.kernels.op import draw_dropout_seed, dropout_keep_mask, lora_linear, resolve_backend
from rolora.kernels.phase import LoRAPhase, phase_of

__all__ = [
    "LoRAPhase",
    "draw_dropout_seed",
    "dropout_keep_mask",
    "lora_linear",
    "phase_of",
    "resolve_backend",
]
