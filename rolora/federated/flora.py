"""FLoRA: stack the clients' factors (exact for any ranks), merge into the base, re-initialise LoRA."""

from __future__ import annotations

from typing import Literal

import torch

from rolora.federated.api import Exactness, GlobalState, LayerSpec, LayerTensors
from rolora.federated.lora_base import MergesIntoBase, init_a
from rolora.federated.seeding import derive_seed, kaiming_uniform
from rolora.federated.weights import weighted_product_sum

FRESH_A = ("client", "round", "fixed")


class FLoRA(MergesIntoBase):
    """FLoRA (stacking): clients (any rank r_k) train A_k, B_k from a fresh init and send both; the
    server stacks B_stack = [p_1 s_1 B_1 ... p_K s_K B_K], A_stack = [A_1; ...; A_K] (so
    B_stack A_stack = sum_k p_k s_k B_k A_k exactly, in any client order) and every client merges
    it into its frozen weight: the layer's ``"base"`` grows by that product. Then all clients
    start again from fresh LoRA factors, B = 0 and a Kaiming-uniform A, so the model is exactly
    ``base`` whatever A is.

    Round 1 starts from the method's round-0 state, the same A on every client (as every method).

    Downlink per client is the whole stack, (sum_j r_j)(d+n) per layer: it grows with the clients.

    Parameters
    ----------
    fresh_a:
        Where the A of every later round comes from, reproducible from the state's seed:

        - ``"client"`` (default): each client draws its own, seeded by (seed, layer, client,
          round), as FLoRA's released code does (every client builds a new PEFT LoRA module each
          round, so the A_k differ between clients).
        - ``"round"``: one A per round shared by all clients, seeded by (seed, layer, round).
        - ``"fixed"``: the round-0 A every round.
    """

    name = "flora"
    exact = Exactness.EXACT
    mixes_ranks = True
    summary = "trains and sends fresh A_k, B_k (any rank); server stacks them, all clients merge into W0 and re-init"

    def __init__(self, fresh_a: Literal["client", "round", "fixed"] = "client") -> None:
        if fresh_a not in FRESH_A:
            raise ValueError(f"fresh_a must be one of {', '.join(FRESH_A)}, got {fresh_a!r}")
        self.fresh_a = fresh_a

    def start_layer(self, state, layer, rank, kept, client) -> LayerTensors:
        out = super().start_layer(state, layer, rank, kept, client)
        if self.fresh_a == "client" and state.round >= 1:
            a = state.layers[layer]["A"]
            seed = derive_seed(state.seed, "A", layer, "client", client, "round", state.round + 1)
            out["A"] = kaiming_uniform((rank, a.shape[1]), seed, a.dtype, a.device)
        return out

    def server_a(self, state: GlobalState, layer: str, next_round: int) -> torch.Tensor:
        """The A the state holds for round ``next_round`` (``"client"``: the round-0 A, unused later)."""
        a = state.layers[layer]["A"]
        if self.fresh_a == "round":
            seed = derive_seed(state.seed, "A", layer, "round", next_round)
            return kaiming_uniform(tuple(a.shape), seed, a.dtype, a.device)
        if self.fresh_a == "fixed":
            return init_a(layer, state.specs[layer], a.shape[0], state.seed, a.dtype, a.device)
        return a

    def aggregate_layer(
        self, state: GlobalState, layer: str, uploads: list[LayerTensors], weights: list[float],
        ranks: list[int], t: int,
    ) -> LayerTensors:
        g = state.layers[layer]
        coefficients = [p * state.alpha / r for p, r in zip(weights, ranks)]  # p_k s_k
        merged = weighted_product_sum([u["B"] for u in uploads], [u["A"] for u in uploads], coefficients)
        return {"A": self.server_a(state, layer, t + 1), "B": torch.zeros_like(g["B"]), "base": g["base"] + merged}

    def download_params(self, spec: LayerSpec, rank: int, t: int, round_ranks: list[int]) -> int:
        return sum(round_ranks) * (spec.out_features + spec.in_features)
