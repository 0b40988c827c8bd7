"""RoLoRA: every round all clients train the same one LoRA factor; the other is shared, so exact."""

from __future__ import annotations

from typing import Literal

from rolora.federated.api import Exactness, GlobalState, LayerTensors
from rolora.federated.lora_base import LoRAMethod
from rolora.federated.schedule import AlternationSchedule
from rolora.federated.weights import weighted_sum


class RoLoRA(LoRAMethod):
    """RoLoRA: clients train and send only B in B-rounds, only A in A-rounds; the server averages it.

    The untrained factor is the server's tensor, carried over unchanged (bit-identical on every
    client and across the rounds of its phase). Exact: sum p_k B_k A = (sum p_k B_k) A and
    sum p_k B A_k = B (sum p_k A_k). Clients keep nothing between rounds.

    Parameters (see :class:`AlternationSchedule`): ``period`` (rounds per phase, default 1),
    ``start`` (default "B"), ``ffa_after`` + ``total_rounds`` (hand-over to FFA-LoRA, default off).
    """

    name = "rolora"
    exact = Exactness.EXACT
    mixes_ranks = False
    summary = "trains and sends B on B-rounds, A on A-rounds (alternating); server averages it (exact)"

    def __init__(
        self,
        period: int = 1,
        start: Literal["A", "B"] = "B",
        ffa_after: float | None = None,
        total_rounds: int | None = None,
    ) -> None:
        self.schedule = AlternationSchedule(period, start, ffa_after, total_rounds)

    def trains(self, t: int) -> frozenset[str]:
        return frozenset({self.schedule.factor(t)})

    def uploads(self, t: int) -> frozenset[str]:
        return frozenset({self.schedule.factor(t)})

    def averaged(self, t: int) -> frozenset[str]:
        return self.trains(t)

    def aggregate_layer(
        self, state: GlobalState, layer: str, uploads: list[LayerTensors], weights: list[float],
        ranks: list[int], t: int,
    ) -> LayerTensors:
        trained = self.schedule.factor(t)
        out = dict(state.layers[layer])  # the frozen factor: the same tensor, never mutated
        out[trained] = weighted_sum([u[trained] for u in uploads], weights)
        return out
