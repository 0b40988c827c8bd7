"""The toy model: logits = W_out · act(ΔW x), with W0 = 0 and ΔW what the federated method trains.

PEFT convention (the whole project's): the one targeted layer ``"hidden"`` is 784×784 (out×in) with
no base weight (W0 = 0), so its weight *is* ``method.delta(tensors, alpha)`` (s·B·A for LoRA methods,
the full-rank ``W`` for ``fedavg-full``, ``base`` + s·B·A for methods that keep a residual). The
paper's f(x) = ReLU(x A B) W_out is the same model written with row vectors (paper A = ``lora_A``ᵀ).

Two variants (``kind``):
- ``"mlp"`` (default, the paper's Figure 2): logits = W_out · ReLU(ΔW x).
- ``"linear"``: logits = W_out · ΔW x, the same model without the ReLU. This is our reading of "the
  same experiment with a one-layer linear model": it keeps the data, the LoRA parametrisation and
  the fixed head, and removes only the non-linearity, so the two runs isolate what ReLU adds. The
  model is then a linear classifier x ↦ (W_out ΔW) x (any rank-≤10 map is reachable).

W_out (10×784) is fixed, random, seeded: N(0, 1/784) entries.

Forward: :func:`logits_reference` always builds ΔW with ``method.delta``; :func:`logits_factored`
computes s·B(A x) without ever forming the 784×784 matrix (≈25× fewer FLOPs). The factored path is
used only where it provably equals the reference (:func:`can_factor`); a parity test checks it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import Tensor

from rolora.federated.api import LayerSpec, Method

from rolora.toy.data import NUM_CLASSES, NUM_PIXELS

LAYER = "hidden"
"""Name of the single targeted layer."""

KINDS = ("mlp", "linear")


def layer_specs() -> dict[str, LayerSpec]:
    """The toy's targeted layers for :meth:`Method.init`: one 784×784 layer."""
    return {LAYER: LayerSpec(out_features=NUM_PIXELS, in_features=NUM_PIXELS)}


def make_w_out(seed: int, dtype: torch.dtype = torch.float32) -> Tensor:
    """The fixed random head W_out (10×784), entries N(0, 1/784), from its own seeded generator."""
    gen = torch.Generator().manual_seed(int(seed))
    return torch.randn(NUM_CLASSES, NUM_PIXELS, generator=gen, dtype=dtype) / math.sqrt(NUM_PIXELS)


def _head(pre: Tensor, w_out: Tensor, kind: str) -> Tensor:
    """Apply the activation of ``kind`` and the fixed head."""
    if kind == "mlp":
        pre = torch.relu(pre)
    elif kind != "linear":
        raise ValueError(f"unknown model kind {kind!r}; choose one of {', '.join(KINDS)}")
    return pre @ w_out.T


def logits_reference(x: Tensor, layer: Mapping[str, Tensor], method: Method, alpha: float, w_out: Tensor,
                     kind: str = "mlp") -> Tensor:
    """Slow, obviously correct forward: hidden pre-activation = x ΔWᵀ with ΔW = method.delta(...)."""
    delta = method.delta(dict(layer), alpha)
    return _head(x @ delta.T, w_out, kind)


def logits_factored(x: Tensor, layer: Mapping[str, Tensor], alpha: float, w_out: Tensor,
                    kind: str = "mlp") -> Tensor:
    """Fast forward for LoRA layers: s·(x Aᵀ) Bᵀ (+ x baseᵀ), never forming s·B·A (784×784)."""
    a, b = layer["A"], layer["B"]
    pre = (alpha / a.shape[0]) * ((x @ a.T) @ b.T)
    if "base" in layer:
        pre = pre + x @ layer["base"].T
    return _head(pre, w_out, kind)


def can_factor(method: Method, layer: Mapping[str, Tensor]) -> bool:
    """Whether :func:`logits_factored` equals :func:`logits_reference` for this method and layer.

    True only when the layer is {A, B} or {A, B, base} and the method uses the API's default
    ``delta`` (base + s·B·A); any override (e.g. Fed-ALoRA's) goes through the reference path.
    """
    return set(layer) in ({"A", "B"}, {"A", "B", "base"}) and type(method).delta is Method.delta


def logits(x: Tensor, layer: Mapping[str, Tensor], method: Method, alpha: float, w_out: Tensor,
           kind: str = "mlp") -> Tensor:
    """The model's logits (N×10) for inputs x (N×784), taking the factored path when it is exact."""
    if can_factor(method, layer):
        return logits_factored(x, layer, alpha, w_out, kind)
    return logits_reference(x, layer, method, alpha, w_out, kind)
