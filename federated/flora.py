"""FLoRA: stack the clients' factors (exact for any ranks), merge into the base, re-initialise LoRA."""

from __future__ import annotations

import torch

from rolora.federated.api import Exactness, GlobalState, LayerSpec, LayerTensors
from rolora.federated.lora_base import MergesIntoBase, init_a, lora_shape
from rolora.federated.seeding import derive_seed, kaiming_uniform
from rolora.federated.weights import weighted_product_sum


class FLoRA(MergesIntoBase):
    """FLoRA (stacking): clients (any rank r_k) train A_k, B_k from a fresh init and send both; the
    server stacks B_stack = [p_1 s_1 B_1 ... p_K s_K B_K], A_stack = [A_1; ...; A_K] (so
    B_stack A_stack = sum_k p_k s_k B_k A_k exactly, in any client order) and every client merges
    it into its frozen weight: the layer's ``"base"`` grows by that product. Then all clients
    start again from fresh LoRA factors: A Kaiming-uniform from a seed derived from
    (seed, layer, round), B = 0, so the model is exactly ``base``.

    Downlink per client is the whole stack, (sum_j r_j)(d+n) per layer: it grows with the clients.

    Parameters
    ----------
    fresh_a_per_round:
        True (default): a new A each round, seeded by (seed, layer, t). False: the round-0 A every
        round (documented alternative; still reproducible).
    """

    name = "flora"
    exact = Exactness.EXACT
    mixes_ranks = True
    summary = "trains and sends fresh A_k, B_k (any rank); server stacks them, all clients merge into W0 and re-init"

    def __init__(self, fresh_a_per_round: bool = True) -> None:
        self.fresh_a_per_round = bool(fresh_a_per_round)

    def fresh_a(self, state: GlobalState, layer: str, next_round: int) -> torch.Tensor:
        """The A every client starts round ``next_round`` from (reproducible from the seed)."""
        a = state.layers[layer]["A"]
        spec = state.specs[layer]
        seed = state.seed
        if not self.fresh_a_per_round:
            return init_a(layer, spec, a.shape[0], seed, a.dtype, a.device)
        return kaiming_uniform(
            lora_shape("A", spec, a.shape[0]), derive_seed(seed, "A", layer, "round", next_round), a.dtype, a.device
        )

    def aggregate_layer(
        self, state: GlobalState, layer: str, uploads: list[LayerTensors], weights: list[float],
        ranks: list[int], t: int,
    ) -> LayerTensors:
        g = state.layers[layer]
        coefficients = [p * state.alpha / r for p, r in zip(weights, ranks)]  # p_k s_k
        merged = weighted_product_sum([u["B"] for u in uploads], [u["A"] for u in uploads], coefficients)
        return {"A": self.fresh_a(state, layer, t + 1), "B": torch.zeros_like(g["B"]), "base": g["base"] + merged}

    def download_params(self, spec: LayerSpec, rank: int, t: int, round_ranks: list[int]) -> int:
        return sum(round_ranks) * (spec.out_features + spec.in_features)
