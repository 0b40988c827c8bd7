"""FlexLoRA: SVD of the dense weighted sum of the clients' products; each client gets its best rank-r_k part."""

from __future__ import annotations

import math
from typing import Literal

import torch

from rolora.federated.api import Exactness, GlobalState, LayerTensors
from rolora.federated.lora_base import LoRAMethod
from rolora.federated.seeding import derive_seed, kaiming_uniform
from rolora.federated.svd import dense_truncated_svd, factored_truncated_svd, linalg_dtype
from rolora.federated.weights import weighted_product_sum


def empty_components(s: torch.Tensor, d: int, n: int) -> torch.Tensor:
    """Which singular values are numerically zero: σ_j <= σ_1·max(d, n)·eps (NumPy's matrix_rank rule;
    eps of the dtype the SVD ran in)."""
    eps = torch.finfo(linalg_dtype(s.dtype)).eps
    return s <= s.max() * max(d, n) * eps


class FlexLoRA(LoRAMethod):
    """FlexLoRA: clients (any rank r_k) train and send A_k, B_k; the server forms
    W_g = sum_k p_k s_k B_k A_k, takes its SVD U Σ Vᵀ and each client of rank r_k receives factors
    with s_k·B·A = U_r Σ_r V_rᵀ, the best rank-r_k approximation of W_g (Eckart–Young; error
    sqrt(sum_{j>r_k} σ_j²)). How Σ is split between the factors is the ``split`` parameter.

    Server state: the same split at the largest client rank R (s_max = alpha/R); a client of rank r
    takes the first r rows of A / columns of B and rescales so that s_k·B·A is the rank-r truncation:
    by s_max/s_k = r/R on B for ``split="B"``, by sqrt(r/R) on each factor for ``"balanced"``
    (except at round 0, whose state is the init, not an SVD: there B alone is rescaled in both modes).

    Parameters
    ----------
    svd:
        ``"factored"`` (default): QR of the stacked factors and an SVD of the small (sum r_k)² core,
        never forming d×n. ``"dense"``: form W_g and run the full SVD (the reference; O(dn·min(d,n))).
    split:
        ``"B"`` (default, as in FlexLoRA's code): ``B = U_r Σ_r / s_k`` (d×r_k), ``A = V_rᵀ``
        (r_k×n): all of Σ in B, A orthonormal. ``"balanced"``: ``B = U_r Σ_r^{1/2} / sqrt(s_k)``,
        ``A = Σ_r^{1/2} V_rᵀ / sqrt(s_k)``: column j of B and row j of A have the same norm
        sqrt(σ_j / s_k). Same product, but SGD steps on A are not magnified by the whole of Σ
        (with ``"B"`` the gradient of A carries Bᵀ, i.e. Σ/s_k, which can make A-steps too large
        at a learning rate that suits B). Components the aggregate leaves empty (σ_j numerically 0,
        e.g. when the round's ranks add up to less than the server's rank) would then be ≈0 in
        *both* factors and barely train, so they restart as a fresh LoRA init would: A's row
        Kaiming-uniform, seeded by (seed, layer, round), and B's column 0 (the product is unchanged).
    """

    name = "flexlora"
    exact = Exactness.APPROXIMATE
    mixes_ranks = True
    summary = "trains and sends A_k, B_k (any rank); server SVDs the mean product, sends each client its best rank-r_k part"

    def __init__(
        self, svd: Literal["factored", "dense"] = "factored", split: Literal["B", "balanced"] = "B"
    ) -> None:
        if svd not in ("factored", "dense"):
            raise ValueError(f"svd must be 'factored' or 'dense', got {svd!r}")
        if split not in ("B", "balanced"):
            raise ValueError(f"split must be 'B' or 'balanced', got {split!r}")
        self.svd = svd
        self.split = split

    def start_layer(self, state, layer, rank, kept, client) -> LayerTensors:
        g = state.layers[layer]
        big_r = g["A"].shape[0]
        # s_k·B·A must equal s_max·B_r·A_r (the rank-r truncation of the server's product), so the
        # factors together are rescaled by s_max/s_k = rank/big_r: all on B, or sqrt of it on each.
        # Round 0 holds the method's init (Kaiming A, not a split SVD): rescale B only, so every
        # client starts from PEFT's rank-independent A and both splits start identically.
        if self.split == "B" or state.round == 0:
            return {"A": g["A"][:rank].clone(), "B": g["B"][:, :rank] * (rank / big_r)}
        c = math.sqrt(rank / big_r)
        return {"A": g["A"][:rank] * c, "B": g["B"][:, :rank] * c}

    def aggregate_layer(
        self, state: GlobalState, layer: str, uploads: list[LayerTensors], weights: list[float],
        ranks: list[int], t: int,
    ) -> LayerTensors:
        big_r = state.layers[layer]["A"].shape[0]
        coefficients = [p * state.alpha / r for p, r in zip(weights, ranks)]  # p_k s_k
        bs, as_ = [u["B"] for u in uploads], [u["A"] for u in uploads]
        if self.svd == "dense":
            u, s, vh = dense_truncated_svd(weighted_product_sum(bs, as_, coefficients), big_r)
        else:
            u, s, vh = factored_truncated_svd(bs, as_, coefficients, big_r)
        s_max = state.alpha / big_r
        if self.split == "B":
            return {"A": vh.contiguous(), "B": (u * (s / s_max)).contiguous()}
        root = (s / s_max).sqrt()  # s_max·(U·root)(root·Vᵀ) = U Σ Vᵀ; s ≥ 0 (SVD, zero-padded)
        a, b = root[:, None] * vh, u * root
        empty = empty_components(s, b.shape[0], a.shape[1])
        if bool(empty.any()):
            fresh = kaiming_uniform(tuple(a.shape), derive_seed(state.seed, "A", layer, "empty", t), a.dtype, a.device)
            a = torch.where(empty[:, None], fresh, a)
            b = torch.where(empty[None, :], torch.zeros_like(b), b)
        return {"A": a.contiguous(), "B": b.contiguous()}
