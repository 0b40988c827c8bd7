"""FedAvg-LoRA ("FedIT"): average A and B separately. Not exact: mean(B)·mean(A) != mean(B·A)."""

from __future__ import annotations

from rolora.federated.api import Exactness, GlobalState, LayerTensors
from rolora.federated.lora_base import AB, LoRAMethod
from rolora.federated.weights import weighted_sum


class FedAvgLoRA(LoRAMethod):
    """FedIT: clients train A and B and send both; the server averages each factor.

    The broadcast product differs from the mean of the clients' products by
    sum_k p_k (B_k - B̄)(A_k - Ā) (zero when all A_k, or all B_k, are equal).
    """

    name = "fedavg-lora"
    exact = Exactness.INEXACT
    mixes_ranks = False
    summary = "trains A and B, sends A and B; server averages each factor (inexact)"

    def averaged(self, t: int) -> frozenset[str]:
        return AB

    def aggregate_layer(
        self, state: GlobalState, layer: str, uploads: list[LayerTensors], weights: list[float],
        ranks: list[int], t: int,
    ) -> LayerTensors:
        return {
            "A": weighted_sum([u["A"] for u in uploads], weights),
            "B": weighted_sum([u["B"] for u in uploads], weights),
        }
