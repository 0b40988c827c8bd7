"""Slow, obviously-correct references for the fast aggregation paths of rolora.federated (parity tests only)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from rolora.federated.svd import dense_truncated_svd


def reference_weighted_mean(tensors: Sequence[Tensor], weights: Sequence[float]) -> Tensor:
    """sum_k p_k x_k, one term at a time."""
    out = torch.zeros_like(tensors[0])
    for x, p in zip(tensors, weights):
        out = out + p * x
    return out


def reference_product_sum(bs: Sequence[Tensor], as_: Sequence[Tensor], coefficients: Sequence[float]) -> Tensor:
    """sum_k c_k B_k A_k, one dense product at a time (the ideal aggregate when c_k = p_k s_k)."""
    out = torch.zeros(bs[0].shape[0], as_[0].shape[1], dtype=bs[0].dtype, device=bs[0].device)
    for b, a, c in zip(bs, as_, coefficients):
        out = out + c * (b @ a)
    return out


def reference_ridge_correction(
    bs: Sequence[Tensor], as_: Sequence[Tensor], weights: Sequence[float], a_bar: Tensor, b_bar: Tensor, ridge: float
) -> Tensor:
    """LoRA-FAIR's ΔB from the dense residual T = sum p_k B_k A_k − B̄Ā: ΔB = T Āᵀ (Ā Āᵀ + λI)^-1."""
    target = reference_product_sum(bs, as_, weights) - b_bar @ a_bar
    gram = a_bar @ a_bar.T
    if ridge == 0:
        return target @ a_bar.T @ torch.linalg.pinv(gram)
    return target @ a_bar.T @ torch.linalg.inv(gram + ridge * torch.eye(gram.shape[0], dtype=gram.dtype, device=gram.device))


def reference_truncated_svd(
    bs: Sequence[Tensor], as_: Sequence[Tensor], coefficients: Sequence[float], rank: int
) -> tuple[Tensor, Tensor, Tensor]:
    """The slow reference of :func:`factored_truncated_svd`: form the dense sum, then SVD it."""
    return dense_truncated_svd(reference_product_sum(bs, as_, coefficients), rank)
