"""FlexLoRA: SVD of the dense weighted sum of the clients' products; each client gets its best rank-r_k part."""

from __future__ import annotations

from typing import Literal

from .api import GlobalState, LayerTensors
from .lora_base import AB, LoRAMethod
from .svd import dense_truncated_svd, factored_truncated_svd
from .weights import weighted_product_sum


class FlexLoRA(LoRAMethod):
    """FlexLoRA: clients (any rank r_k) train and send A_k, B_k; the server forms
    W_g = sum_k p_k s_k B_k A_k, takes its SVD U Σ Vᵀ and each client of rank r_k receives
    ``B = U_r Σ_r / s_k`` (d×r_k) and ``A = V_rᵀ`` (r_k×n), so s_k·B·A is the best rank-r_k
    approximation of W_g (Eckart–Young; error sqrt(sum_{j>r_k} σ_j²)).

    Split of Σ (documented choice): all of Σ goes to B, A is orthonormal (PEFT keeps A as the
    "input" factor; an orthonormal A keeps the next round's A-gradients well scaled).

    Server state: ``A = V_Rᵀ`` and ``B = U_R Σ_R / s_max`` at the largest client rank R
    (s_max = alpha/R); a client of rank r takes the first r rows/columns and rescales B by s_max/s_k.

    Parameters
    ----------
    svd:
        ``"factored"`` (default): QR of the stacked factors and an SVD of the small (sum r_k)² core,
        never forming d×n. ``"dense"``: form W_g and run the full SVD (the reference; O(dn·min(d,n))).
    """

    name = "flexlora"
    exact = "approximate"
    mixes_ranks = True
    summary = "trains and sends A_k, B_k (any rank); server SVDs the mean product, sends each client its best rank-r_k part"

    def __init__(self, svd: Literal["factored", "dense"] = "factored") -> None:
        if svd not in ("factored", "dense"):
            raise ValueError(f"svd must be 'factored' or 'dense', got {svd!r}")
        self.svd = svd

    def trains(self, t: int) -> frozenset[str]:
        return AB

    def uploads(self, t: int) -> frozenset[str]:
        return AB

    def start_layer(self, state, layer, rank, kept, client) -> LayerTensors:
        g = state.layers[layer]
        big_r = g["A"].shape[0]
        # s_max/s_k = rank/big_r: the client's s_k·B·A is the rank-r truncation of the server's product.
        return {"A": g["A"][:rank].clone(), "B": g["B"][:, :rank] * (rank / big_r)}

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
        return {"A": vh.contiguous(), "B": (u * (s / s_max)).contiguous()}
