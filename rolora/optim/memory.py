"""Client optimiser-state memory: counted from a real optimiser's state, and the formulas beside it.

``measured_state_bytes`` builds the optimiser a client builds, takes one step with a random
gradient (state is allocated lazily at the first step; GaLore's P too) and sums the bytes of every
tensor in ``optimizer.state``: the number a client actually holds. The formulas are what the README
states; a test checks they agree.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from rolora.optim.galore import GaLoreAdamW


def adam_state_params(shapes: Sequence[tuple[int, ...]]) -> int:
    """Adam/AdamW: two moments per trained number (2·Σ numel)."""
    return 2 * sum(int(torch.Size(s).numel()) for s in shapes)


def galore_state_params(shape: tuple[int, int], rank: int) -> int:
    """GaLore on one d×n matrix: two r·max(d, n) moments plus the r·min(d, n) projection."""
    d, n = shape
    return 2 * rank * max(d, n) + rank * min(d, n)


def measured_state_bytes(shapes: Sequence[tuple[int, ...]], optimizer: str, rank: int = 8,
                         dtype: torch.dtype = torch.float32, seed: int = 0) -> int:
    """Bytes in ``optimizer.state`` after one step over fresh tensors of ``shapes``.

    ``optimizer``: "adamw" (torch.optim.AdamW), "sgd" (no momentum: no state) or "galore"
    (:class:`GaLoreAdamW`, GaLore on every matrix, rank ``rank``).
    """
    gen = torch.Generator().manual_seed(seed)
    params = [torch.zeros(s, dtype=dtype, requires_grad=True) for s in shapes]
    for p in params:
        p.grad = torch.randn(p.shape, generator=gen, dtype=dtype)
    if optimizer == "adamw":
        opt = torch.optim.AdamW(params, lr=1e-3)
    elif optimizer == "sgd":
        opt = torch.optim.SGD(params, lr=1e-3)
    elif optimizer == "galore":
        opt = GaLoreAdamW([{"params": params, "galore": True, "rank": rank}], lr=1e-3)
    else:
        raise ValueError(f"optimizer must be adamw, sgd or galore, got {optimizer!r}")
    opt.step()
    # "step" counters are Python ints (GaLore) or 0-d tensors (torch's): count tensors of ≥ 1 dim only
    return sum(t.numel() * t.element_size() for s in opt.state.values() for t in s.values()
               if isinstance(t, torch.Tensor) and t.ndim > 0)
