"""LoRA-FAIR: average the factors, then correct B̄ by the ridge least-squares ΔB (approximate)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from rolora.federated.api import Exactness, GlobalState, LayerTensors
from rolora.federated.lora_base import LoRAMethod
from rolora.federated.svd import linalg_dtype
from rolora.federated.weights import weighted_sum


def ridge_correction(
    bs: list[Tensor], as_: list[Tensor], weights: list[float], a_bar: Tensor, b_bar: Tensor, ridge: float
) -> Tensor:
    """ΔB = argmin ||sum p_k B_k A_k − (B̄ + ΔB)Ā||_F² + ridge·||ΔB||_F², without any d×n matrix.

    Normal equations: ΔB (G + λI) = (sum_k p_k B_k (A_k Āᵀ)) − B̄ G with G = Ā Āᵀ (r×r).
    With ridge = 0 the pseudo-inverse of G is used (minimum-norm ΔB when Ā is rank-deficient).
    """
    gram = a_bar @ a_bar.T
    rhs = weighted_sum([b @ (a @ a_bar.T) for b, a in zip(bs, as_)], weights) - b_bar @ gram
    work = linalg_dtype(gram.dtype)  # no half-precision solve kernels: solve the r×r system in float32
    gram, rhs_w = gram.to(work), rhs.to(work)
    if ridge == 0:
        return (rhs_w @ torch.linalg.pinv(gram, hermitian=True)).to(rhs.dtype)
    eye = torch.eye(gram.shape[0], dtype=work, device=gram.device)
    return torch.linalg.solve(gram + ridge * eye, rhs_w.T).T.to(rhs.dtype)  # G + λI is symmetric


class LoRAFAIR(LoRAMethod):
    """LoRA-FAIR: clients train and send A_k, B_k; the server averages them and replaces B̄ by
    B̄ + ΔB, where ΔB is the closed-form ridge solution of
    min_ΔB ||ΔW* − (B̄ + ΔB)Ā||_F² + λ||ΔB||_F², ΔW* = sum_k p_k B_k A_k (the scale s is common to
    all clients and left out of both terms). It brings the broadcast product as close to the ideal
    as Ā allows; it is exact only when ΔW*'s rows lie in Ā's row space.

    Parameters
    ----------
    ridge:
        λ >= 0, absolute (default 1e-6: small against Ā Āᵀ, whose diagonal is about 1/3 at the
        Kaiming init). 0 gives the plain least-squares (pseudo-inverse) solution.
    """

    name = "lora-fair"
    exact = Exactness.APPROXIMATE
    mixes_ranks = False
    summary = "trains and sends A and B; server averages them and corrects B̄ by a ridge least-squares fit"

    def __init__(self, ridge: float = 1e-6) -> None:
        if isinstance(ridge, bool) or not isinstance(ridge, (int, float)) or not math.isfinite(ridge) or ridge < 0:
            raise ValueError(f"ridge must be a finite number >= 0, got {ridge!r}")
        self.ridge = float(ridge)

    def aggregate_layer(
        self, state: GlobalState, layer: str, uploads: list[LayerTensors], weights: list[float],
        ranks: list[int], t: int,
    ) -> LayerTensors:
        bs, as_ = [u["B"] for u in uploads], [u["A"] for u in uploads]
        a_bar = weighted_sum(as_, weights)
        b_bar = weighted_sum(bs, weights)
        return {"A": a_bar, "B": b_bar + ridge_correction(bs, as_, weights, a_bar, b_bar, self.ridge)}
