"""GaLore-AdamW: Adam whose moments live in a rank-r projection of each matrix's gradient.

GaLore (Zhao et al. 2024, "Memory-Efficient LLM Training by Gradient Low-Rank Projection"), for a
d×n parameter W with gradient G, at the optimiser's step t = 1, 2, ...:

- every ``period`` steps (t = 1, 1 + T, 1 + 2T, ...): SVD G = U Σ Vᵀ; the projection P is the top-r
  singular vectors of the *smaller* side: d ≥ n: P = V[:, :r]ᵀ (r×n, "right"), R = G Pᵀ (d×r);
  d < n: P = U[:, :r] (d×r, "left"), R = Pᵀ G (r×n). So the moments are r·max(d, n) numbers
  instead of 2·d·n, plus P's r·min(d, n).
- Adam in the projected space: m ← β₁m + (1−β₁)R, v ← β₂v + (1−β₂)R², N = m̂ / (√v̂ + ε) with the
  usual bias corrections m̂ = m/(1−β₁ᵗ), v̂ = v/(1−β₂ᵗ).
- back to d×n and scaled: W ← W·(1 − lr·λ) − lr · scale · (N P  or  P N).

As in the authors' code (``galore-torch``), the moments are kept across a refresh of P (they then
mix two subspaces; the paper argues the change is slow), and parameters of groups without
``galore=True`` (1-D biases, thin matrices) take exactly ``torch.optim.AdamW``'s step. Singular
vectors are sign-normalised (largest-magnitude entry positive) so that P is a function of G alone.

The optimiser state starts empty like every optimiser; callers that re-create it each round (the
federated clients here) therefore recompute P from the first gradient of every round.
The slow reference beside this is :mod:`rolora.optim.galore_reference`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import Tensor

GALORE_DEFAULTS = {"galore": False, "rank": 8, "period": 200, "scale": 0.25}


def check_galore_options(rank: object, period: object, scale: object) -> None:
    """ValueError naming the first bad GaLore option (rank ≥ 1, period ≥ 1, scale > 0 and finite)."""
    for name, value in (("rank", rank), ("period", period)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"GaLore {name} must be an integer ≥ 1, got {value!r}")
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale) or scale <= 0:
        raise ValueError(f"GaLore scale must be a finite number > 0, got {scale!r}")


def check_galore_shape(shape: tuple[int, ...], rank: int, what: str = "parameter") -> None:
    """ValueError unless ``shape`` is a matrix with rank ≤ min(d, n)."""
    if len(shape) != 2:
        raise ValueError(f"GaLore projects matrices only; {what} has shape {tuple(shape)} (use galore=False for it)")
    if rank > min(shape):
        raise ValueError(f"GaLore rank {rank} is above min(d, n) = {min(shape)} of {what} of shape {tuple(shape)}")


def projection_side(shape: tuple[int, ...]) -> str:
    """'right' (P is r×n, moments d×r) when d ≥ n, else 'left' (P is d×r, moments r×n)."""
    return "right" if shape[0] >= shape[1] else "left"


def sign_normalised(vectors: Tensor) -> Tensor:
    """Columns of ``vectors`` flipped so that each column's largest-magnitude entry is positive."""
    idx = vectors.abs().argmax(dim=0, keepdim=True)
    signs = torch.sign(torch.gather(vectors, 0, idx))
    return vectors * torch.where(signs == 0, torch.ones_like(signs), signs)


def top_singular_vectors(grad: Tensor, rank: int, side: str) -> Tensor:
    """P for ``side``: U[:, :r] (d×r) for 'left', V[:, :r]ᵀ (r×n) for 'right'; in the gradient's dtype.

    The SVD runs in float32 at least (half-precision SVD is unsupported or inaccurate).
    """
    g = grad if grad.dtype in (torch.float32, torch.float64) else grad.float()
    u, _, vh = torch.linalg.svd(g, full_matrices=False)
    if side == "left":
        return sign_normalised(u[:, :rank]).to(grad.dtype)
    return sign_normalised(vh[:rank].T).T.contiguous().to(grad.dtype)


class GaLoreAdamW(torch.optim.Optimizer):
    """AdamW with GaLore's projected moments for the groups that set ``galore=True``.

    Args:
        params: tensors or parameter groups; a group may set ``galore``, ``rank``, ``period``,
            ``scale`` (and any AdamW option). Every tensor of a ``galore`` group must be a matrix
            with ``rank`` ≤ min(d, n).
        lr, betas, eps, weight_decay: as ``torch.optim.AdamW`` (decoupled weight decay).
        rank, period, scale: GaLore's r, T (steps between SVD refreshes) and the update scale,
            defaults for groups that do not set them.
    """

    def __init__(self, params: Iterable, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0, rank: int = 8, period: int = 200,
                 scale: float = 0.25) -> None:
        if not lr >= 0:
            raise ValueError(f"lr must be ≥ 0, got {lr}")
        if not (0 <= betas[0] < 1 and 0 <= betas[1] < 1):
            raise ValueError(f"betas must be in [0, 1), got {betas}")
        if not eps >= 0 or not weight_decay >= 0:
            raise ValueError(f"eps and weight_decay must be ≥ 0, got {eps}, {weight_decay}")
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay,
                        galore=False, rank=rank, period=period, scale=scale)
        super().__init__(params, defaults)

    def add_param_group(self, param_group: dict) -> None:
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        if group["galore"]:
            check_galore_options(group["rank"], group["period"], group["scale"])
            for i, p in enumerate(group["params"]):
                check_galore_shape(tuple(p.shape), group["rank"], f"parameter {i} of group {len(self.param_groups) - 1}")

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad, state = p.grad, self.state[p]
                if not state:
                    state["step"] = 0
                    if group["galore"]:
                        state["side"] = projection_side(tuple(p.shape))
                t = state["step"] = state["step"] + 1
                if group["galore"]:
                    if (t - 1) % group["period"] == 0:  # refresh P; moments are kept (as the authors')
                        state["projection"] = top_singular_vectors(grad, group["rank"], state["side"])
                    proj = state["projection"]
                    grad = grad @ proj.T if state["side"] == "right" else proj.T @ grad
                if "exp_avg" not in state:
                    state["exp_avg"] = torch.zeros_like(grad, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(grad, memory_format=torch.preserve_format)
                m, v = state["exp_avg"], state["exp_avg_sq"]
                m.lerp_(grad, 1 - beta1)
                v.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                # torch.optim.AdamW's arithmetic: the same numbers for the non-GaLore groups
                denom = (v.sqrt() / math.sqrt(1 - beta2 ** t)).add_(group["eps"])
                step_size = group["lr"] / (1 - beta1 ** t)
                p.mul_(1 - group["lr"] * group["weight_decay"])
                if not group["galore"]:
                    p.addcdiv_(m, denom, value=-step_size)
                    continue
                direction = m / denom
                direction = direction @ proj if state["side"] == "right" else proj @ direction
                p.add_(direction, alpha=-step_size * group["scale"])
        return loss


def galore_groups(params: Iterable[Tensor], rank: int, period: int, scale: float) -> list[dict]:
    """Parameter groups for :class:`GaLoreAdamW`: GaLore for matrices with both sides ≥ ``rank``,
    plain AdamW for the rest (biases, and matrices too thin to project such as a 2-class output layer).

    Raises ValueError (naming the shapes) if no parameter is a matrix that wide: GaLore would then
    be AdamW under another name, which is never what a caller asking for it means.
    """
    check_galore_options(rank, period, scale)
    params = list(params)
    wide = [p for p in params if p.ndim == 2 and min(p.shape) >= rank]
    if not wide:
        shapes = sorted({tuple(p.shape) for p in params})
        raise ValueError(f"GaLore rank {rank}: no trained matrix has both sides ≥ {rank} (shapes {shapes})")
    ids = {id(p) for p in wide}
    rest = [p for p in params if id(p) not in ids]
    groups = [{"params": wide, "galore": True, "rank": rank, "period": period, "scale": scale}]
    return groups + ([{"params": rest, "galore": False}] if rest else [])
