"""FedEx-LoRA: FedAvg the factors, and fold the exact residual into the frozen weight (exact)."""

from __future__ import annotations

from typing import Literal


from rolora.federated.api import Exactness, GlobalState, LayerSpec, LayerTensors
from rolora.federated.lora_base import MergesIntoBase
from rolora.federated.weights import weighted_product_sum, weighted_sum


class FedExLoRA(MergesIntoBase):
    """FedEx-LoRA: clients train and send A_k, B_k; the server broadcasts Ā, B̄ and the residual
    R = sum_k p_k B_k A_k − B̄Ā, which every client (participant or not) adds to its frozen
    weight: ``base ← base + s·R`` in W0's own d×n layout. Then base + s·B̄Ā equals
    base + s·sum_k p_k B_k A_k exactly; rank(R) <= (K−1)·r.

    Parameters
    ----------
    residual_transport:
        How the residual's download is counted: ``"dense"`` (default, d·n per layer, what the
        paper sends) or ``"factors"`` ((K−1)·r·(d+n)): since sum_k p_k (B_k − B̄) = 0,
        R = sum_{k<K} p_k (B_k − B̄)(A_k − A_K), K−1 rank-r blocks, nothing for one client; smaller
        than dense when (K−1)·r·(d+n) < d·n). The arithmetic is the same.
    """

    name = "fedex-lora"
    exact = Exactness.EXACT
    mixes_ranks = False
    summary = "trains and sends A and B; server averages them and folds the exact residual into W0 (exact)"

    def __init__(self, residual_transport: Literal["dense", "factors"] = "dense") -> None:
        if residual_transport not in ("dense", "factors"):
            raise ValueError(f"residual_transport must be 'dense' or 'factors', got {residual_transport!r}")
        self.residual_transport = residual_transport

    def aggregate_layer(
        self, state: GlobalState, layer: str, uploads: list[LayerTensors], weights: list[float],
        ranks: list[int], t: int,
    ) -> LayerTensors:
        a_bar = weighted_sum([u["A"] for u in uploads], weights)
        b_bar = weighted_sum([u["B"] for u in uploads], weights)
        ideal = weighted_product_sum([u["B"] for u in uploads], [u["A"] for u in uploads], weights)
        residual = ideal - b_bar @ a_bar
        scale = state.alpha / ranks[0]
        return {"A": a_bar, "B": b_bar, "base": state.layers[layer]["base"] + scale * residual}

    def download_params(self, spec: LayerSpec, rank: int, t: int, round_ranks: list[int]) -> int:
        d, n = spec.out_features, spec.in_features
        factors = rank * (d + n)
        if self.residual_transport == "dense":
            return factors + d * n
        return factors + max(len(round_ranks) - 1, 0) * rank * (d + n)
