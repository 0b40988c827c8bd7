"""FFA-LoRA: A stays frozen at its shared seeded init; only B trains and is averaged (exact)."""

from __future__ import annotations

from rolora.federated.api import Exactness, GlobalState, LayerTensors
from rolora.federated.lora_base import LoRAMethod
from rolora.federated.weights import weighted_sum

ONLY_B = frozenset({"B"})


class FFALoRA(LoRAMethod):
    """FFA-LoRA: clients train only B and send it; A is the round-0 A forever (bit-identical).

    Exact because A is shared: sum_k p_k B_k A = (sum_k p_k B_k) A.
    """

    name = "ffa-lora"
    exact = Exactness.EXACT
    mixes_ranks = False
    summary = "trains B (A frozen at its seeded init), sends B; server averages B (exact)"

    def trains(self, t: int) -> frozenset[str]:
        return ONLY_B

    def uploads(self, t: int) -> frozenset[str]:
        return ONLY_B

    def averaged(self, t: int) -> frozenset[str]:
        return ONLY_B

    def aggregate_layer(
        self, state: GlobalState, layer: str, uploads: list[LayerTensors], weights: list[float],
        ranks: list[int], t: int,
    ) -> LayerTensors:
        # The server's A tensor itself is carried over (never mutated), so it stays bit-identical.
        return {"A": state.layers[layer]["A"], "B": weighted_sum([u["B"] for u in uploads], weights)}
