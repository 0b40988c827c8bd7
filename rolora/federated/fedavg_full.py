"""Full-rank FedAvg of the targeted matrices: each client trains a dense update W (d×n, from 0)."""

from __future__ import annotations

import torch

from rolora.federated.api import Exactness, GlobalState, LayerSpec, LayerTensors
from rolora.federated.lora_base import LoRAMethod
from rolora.federated.weights import weighted_sum

ONLY_W = frozenset({"W"})


class FedAvgFull(LoRAMethod):
    """Full-rank FedAvg: clients train W (a d×n update of W0, starting at 0) and send it; mean of W.

    The ceiling LoRA methods are compared with. Ranks are ignored (any rank map is accepted).
    """

    name = "fedavg-full"
    exact = Exactness.EXACT
    mixes_ranks = True  # ranks play no role
    uses_ranks = False
    summary = "trains the full d×n update W, sends W; server averages W (exact, dn per layer)"

    def init_layer(self, layer: str, spec: LayerSpec, rank: int, seed: int, dtype, device) -> LayerTensors:
        return {"W": torch.zeros(spec.out_features, spec.in_features, dtype=dtype, device=device)}

    def start_layer(self, state, layer, rank, kept, client) -> LayerTensors:
        return {"W": state.layers[layer]["W"].clone()}

    def trains(self, t: int) -> frozenset[str]:
        return ONLY_W

    def uploads(self, t: int) -> frozenset[str]:
        return ONLY_W

    def averaged(self, t: int) -> frozenset[str]:
        return ONLY_W

    def aggregate_layer(
        self, state: GlobalState, layer: str, uploads: list[LayerTensors], weights: list[float],
        ranks: list[int], t: int,
    ) -> LayerTensors:
        return {"W": weighted_sum([u["W"] for u in uploads], weights)}
