"""Aggregation weights p_k and the weighted sums every method is built from."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from rolora.federated.api import AggregationError, ClientUpdate, Weighting


def client_weights(updates: Sequence[ClientUpdate], weighting: Weighting) -> list[float]:
    """p_k = n_k / sum_j n_j over this round's participants ("samples"), or 1/K ("uniform").

    Computed in Python floats (float64) so the weights sum to 1 to within one rounding.
    """
    if weighting == "uniform":
        return [1.0 / len(updates)] * len(updates)
    if weighting == "samples":
        try:
            total = math.fsum(float(u.num_samples) for u in updates)
        except OverflowError:
            raise AggregationError("the sum of the clients' num_samples overflows a float") from None
        return [float(u.num_samples) / total for u in updates]
    raise AggregationError(f"weighting must be 'samples' or 'uniform', got {weighting!r}")


def weighted_sum(tensors: Sequence[Tensor], weights: Sequence[float]) -> Tensor:
    """sum_k p_k x_k, accumulated in a fresh tensor (never one of the inputs; no stacked copy)."""
    out = tensors[0] * weights[0]
    for x, p in zip(tensors[1:], weights[1:]):
        out.add_(x, alpha=p)
    return out


def weighted_product_sum(
    bs: Sequence[Tensor], as_: Sequence[Tensor], coefficients: Sequence[float]
) -> Tensor:
    """sum_k c_k B_k A_k as one matmul of the stacked factors [c_1 B_1 ... c_K B_K] [A_1; ...; A_K].

    Works for mixed ranks (the stack's inner size is sum_k r_k). Dense d×n output.
    """
    b_stack = torch.cat([b * c for b, c in zip(bs, coefficients)], dim=1)
    a_stack = torch.cat(list(as_), dim=0)
    return b_stack @ a_stack
