"""FedSA-LoRA: A is shared and averaged; each client keeps its own B (personalised)."""

from __future__ import annotations

from rolora.federated.api import Exactness, GlobalState, LayerTensors, ModelTensors
from rolora.federated.lora_base import AB, LoRAMethod
from rolora.federated.validation import check_kept
from rolora.federated.weights import weighted_sum

ONLY_A = frozenset({"A"})
ONLY_B = frozenset({"B"})


class FedSALoRA(LoRAMethod):
    """FedSA-LoRA: clients train A and B, send only A; the server averages A. Each client keeps
    its B between rounds (``client_keep``) and starts from the global Ā and its own B; a client
    that never trained starts from B = 0. Evaluate per client: models differ by their B.
    """

    name = "fedsa-lora"
    exact = Exactness.PERSONALISED
    mixes_ranks = False
    summary = "trains A and B, sends only A (B stays on the client); server averages A (personalised)"

    def trains(self, t: int) -> frozenset[str]:
        return AB

    def uploads(self, t: int) -> frozenset[str]:
        return ONLY_A

    def client_keep(self, local: ModelTensors, t: int) -> ModelTensors:
        return {layer: {"B": tensors["B"].detach().clone()} for layer, tensors in local.items()}

    def check_kept(self, state: GlobalState, client, kept) -> None:
        if kept is not None:
            check_kept(client, kept, state, ONLY_B, self.shape_of)

    def start_layer(self, state, layer, rank, kept, client) -> LayerTensors:
        g = state.layers[layer]
        b = g["B"] if kept is None else kept["B"]
        return {"A": g["A"].clone(), "B": b.detach().clone()}

    def averaged(self, t: int) -> frozenset[str]:
        return ONLY_A

    def aggregate_layer(
        self, state: GlobalState, layer: str, uploads: list[LayerTensors], weights: list[float],
        ranks: list[int], t: int,
    ) -> LayerTensors:
        # B in the state stays the round-0 B (= 0): what a newly joining client starts from.
        return {"A": weighted_sum([u["A"] for u in uploads], weights), "B": state.layers[layer]["B"]}


