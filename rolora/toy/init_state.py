"""The toy's round-0 state: the method's own init, with the zero up-projection made non-zero.

The federated core initialises like PEFT (A Kaiming-uniform, B = 0). That is right when a frozen
base weight carries the signal, but the toy has W0 = 0: with B = 0 the hidden pre-activation is 0
everywhere, ReLU's gradient at 0 is 0 (PyTorch's convention), and *nothing* trains. So, as the paper
does for this experiment, both factors start non-zero:

- A: the method's own Kaiming-uniform A, U(±1/√n), from ``method.init(seed)``, unchanged.
- B (and Fed-ALoRA's shared ``B_base``): U(±b) from a generator seeded by ``seed``, identical on every
  client and for every method. Default b = √(r/(n·d)), the *balanced* scale: for pre = s·B·A·x an SGD
  step on B moves the pre-activation by lr·s²·‖Ax‖²·g and a step on A by lr·s²·(B Bᵀ g)·‖x‖²; with
  E‖Ax‖² = r‖x‖²/(3n) and BᵀB ≈ (d b²/3)·I the two are equal exactly when b = √(r/(n d)) (≈ 0.005
  here). PEFT's Kaiming bound for B (1/√r = 0.25) would make A-steps ~2,500× stronger than B-steps,
  so no single learning rate suits both factors (RoLoRA's A-rounds then oscillate).
- a full-rank ``W`` that starts at 0 (``fedavg-full``) starts at s·B₀·A₀ instead, with the same B₀
  and the A₀ of ``fedavg-lora``'s init, so every method starts from the same function.

Only all-zero ``B`` / ``B_base`` / ``W`` tensors are replaced (a core that already starts them
non-zero is left alone). The state is rebuilt with :func:`dataclasses.replace`; nothing is mutated.
"""

from __future__ import annotations

import dataclasses
import math

import torch
from torch import Tensor

from rolora.federated.api import GlobalState, Method

from rolora.toy.model import layer_specs

UP_PROJECTIONS = ("B", "B_base")
"""State tensor names that are up-projections (d×·) which the core starts at zero."""


def balanced_b_bound(out_features: int, in_features: int, rank: int) -> float:
    """b = √(r/(n·d)): the U(±b) scale of B at which SGD steps on A and on B are equally strong."""
    return math.sqrt(rank / (in_features * out_features))


def uniform_init(shape: tuple[int, ...], bound: float, seed: int, dtype: torch.dtype = torch.float32) -> Tensor:
    """Entries U(−bound, bound) from a generator seeded by ``seed`` (apart from the core's A stream)."""
    gen = torch.Generator().manual_seed(int(seed) + 1_000_003)
    return (torch.rand(*shape, generator=gen, dtype=torch.float32) * 2 - 1).mul_(bound).to(dtype)


def initial_state(method: Method, rank: int, alpha: float, seed: int,
                  b_bound: float | None = None) -> GlobalState:
    """``method.init`` for the toy's layers, with zero B / B_base / W replaced (see the module doc).

    Args:
        method: a :class:`rolora.federated.api.Method`.
        rank: LoRA rank r of every client.
        alpha: LoRA alpha (s = alpha / r).
        seed: seeds both the core's init and B₀.
        b_bound: B₀ ~ U(±b_bound); default :func:`balanced_b_bound`.
    """
    from rolora.federated import get_method

    state = method.init(layer_specs(), rank, alpha=alpha, seed=seed)
    layers = {}
    for name, tensors in state.layers.items():
        tensors = dict(tensors)
        spec = state.specs[name]
        bound = balanced_b_bound(spec.out_features, spec.in_features, rank) if b_bound is None else b_bound
        for key in UP_PROJECTIONS:
            if key in tensors and not torch.any(tensors[key]):
                tensors[key] = uniform_init(tuple(tensors[key].shape), bound, seed, tensors[key].dtype)
        if "W" in tensors and not torch.any(tensors["W"]):
            a0 = get_method("fedavg-lora").init(state.specs, rank, alpha=alpha, seed=seed).layers[name]["A"]
            b0 = uniform_init((spec.out_features, rank), bound, seed)
            tensors["W"] = ((alpha / rank) * (b0 @ a0)).to(tensors["W"].dtype)
        layers[name] = tensors
    return dataclasses.replace(state, layers=layers)
