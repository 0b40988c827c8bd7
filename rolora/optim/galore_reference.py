"""The GaLore-AdamW update rule written out step by step: slow, float64, obviously correct.

The parity tests compare :class:`rolora.optim.galore.GaLoreAdamW` with this on small non-square
matrices (both projection sides, several refreshes, weight decay) and, for ``rank=None``, with plain
AdamW. Nothing here is used in training.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor


def _flip_to_positive(vectors: Tensor) -> Tensor:
    """Each column times the sign of its largest-magnitude entry (a sign convention for SVD vectors)."""
    out = vectors.clone()
    for j in range(vectors.shape[1]):
        column = vectors[:, j]
        biggest = column[int(torch.argmax(column.abs()))]
        if biggest < 0:
            out[:, j] = -column
    return out


def reference_projection(grad: Tensor, rank: int) -> tuple[str, Tensor]:
    """('right', r×n Vᵣᵀ) if d ≥ n else ('left', d×r Uᵣ), from the SVD of ``grad`` in float64."""
    d, n = grad.shape
    u, _, vh = torch.linalg.svd(grad.double(), full_matrices=True)
    if d >= n:
        v = vh.T  # n×n, columns are right singular vectors, by decreasing singular value
        return "right", _flip_to_positive(v[:, :rank]).T
    return "left", _flip_to_positive(u[:, :rank])


def galore_adamw_reference(w: Tensor, grad_of: Callable[[Tensor], Tensor], steps: int, lr: float,
                           rank: int | None, period: int = 200, scale: float = 0.25,
                           betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                           weight_decay: float = 0.0) -> list[Tensor]:
    """W after each of ``steps`` steps (float64), the gradient at step t being ``grad_of(W_{t-1})``.

    ``rank=None``: plain AdamW (what GaLore does for biases). Otherwise GaLore with P refreshed at
    steps 1, 1 + period, ... and the projected moments kept across refreshes.
    """
    beta1, beta2 = betas
    w = w.double().clone()
    m = v = None
    side, p = None, None
    out = []
    for t in range(1, steps + 1):
        g = grad_of(w).double()
        if rank is not None:
            if (t - 1) % period == 0:
                side, p = reference_projection(g, rank)
            r = g @ p.T if side == "right" else p.T @ g
        else:
            r = g
        if m is None:
            m, v = torch.zeros_like(r), torch.zeros_like(r)
        m = beta1 * m + (1 - beta1) * r
        v = beta2 * v + (1 - beta2) * r * r
        m_hat = m / (1 - beta1 ** t)
        v_hat = v / (1 - beta2 ** t)
        n = m_hat / (torch.sqrt(v_hat) + eps)
        if rank is not None:
            n = scale * (n @ p if side == "right" else p @ n)
        w = w * (1 - lr * weight_decay) - lr * n
        out.append(w.clone())
    return out
