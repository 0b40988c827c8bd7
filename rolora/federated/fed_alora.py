"""Fed-ALoRA: a shared B_base, personal A_k/M_k/B1_k, and a per-round correction B2_k B1_k (mixed ranks)."""

from __future__ import annotations

import torch
from torch import Tensor

from rolora.federated.api import AggregationError, Exactness, GlobalState, LayerSpec, LayerTensors, ModelTensors
from rolora.federated.lora_base import LoRAMethod, init_a
from rolora.federated.seeding import derive_seed, kaiming_uniform
from rolora.federated.validation import check_kept
from rolora.federated.weights import weighted_product_sum

TRAINS = frozenset({"A", "M", "B1", "B2"})
UPLOADS = frozenset({"B1", "B2"})
KEEPS = frozenset({"A", "M", "B1"})


class FedALoRA(LoRAMethod):
    """Fed-ALoRA (arXiv 2509.25414), following the team's reference notes.

    Client k (rank r_k) has, per layer, a shared buffer ``B_base`` (d×r_int, from the server) and
    trainable ``A`` (r_k×n), ``M`` (r_int×r_k), ``B1`` (r_k×r_int), ``B2`` (d×r_k):
    ΔW_k = s_k·(B_base + B2·B1)·M·A with s_k = alpha/r_k. Clients upload B2_k and B1_k; the server
    sets B_base ← B_base + sum_k p_k B2_k B1_k and broadcasts B_base.

    Documented choices (open in the released code):

    - Clients keep A_k, M_k, B1_k between rounds (the paper's personalised intent); B2_k restarts at
      0 each round, because its product was folded into B_base (keeping it would count it twice).
    - Round-0 values, identical for all clients of a rank: A the shared Kaiming A (first r_k rows),
      M and B1 Kaiming-uniform seeded by (seed, layer, rank), B2 = 0 and B_base = 0.
    - Uploads are the two factors (r_k·(d + r_int) per layer), not their d×r_int product.

    Parameters
    ----------
    inner_rank:
        r_int, the width of the shared B_base (default 16), the same for all clients.
    """

    name = "fed-alora"
    exact = Exactness.PERSONALISED
    mixes_ranks = True
    summary = "trains personal A, M, B1 and a fresh B2 (any rank); sends B2, B1; server adds their mean product to the shared B_base"

    def __init__(self, inner_rank: int = 16) -> None:
        if isinstance(inner_rank, bool) or not isinstance(inner_rank, int) or inner_rank < 1:
            raise ValueError(f"inner_rank must be an int >= 1, got {inner_rank!r}")
        self.inner_rank = inner_rank

    def trains(self, t: int) -> frozenset[str]:
        return TRAINS

    def uploads(self, t: int) -> frozenset[str]:
        return UPLOADS

    def shape_of(self, name: str, spec: LayerSpec, rank: int) -> tuple[int, ...]:
        d, n, ri = spec.out_features, spec.in_features, self.inner_rank
        shapes = {"A": (rank, n), "M": (ri, rank), "B1": (rank, ri), "B2": (d, rank), "B_base": (d, ri)}
        if name not in shapes:
            raise AggregationError(f"unknown tensor name {name!r} for fed-alora (known: {sorted(shapes)})")
        return shapes[name]

    def init_layer(self, layer: str, spec: LayerSpec, rank: int, seed: int, dtype, device) -> LayerTensors:
        return {"B_base": torch.zeros(spec.out_features, self.inner_rank, dtype=dtype, device=device)}

    def client_keep(self, local: ModelTensors, t: int) -> ModelTensors:
        return {layer: {k: tensors[k].detach().clone() for k in KEEPS} for layer, tensors in local.items()}

    def check_kept(self, state: GlobalState, client, kept) -> None:
        if kept is not None:
            check_kept(client, kept, state, KEEPS, self.shape_of)

    def personal_init(self, state: GlobalState, layer: str, rank: int) -> LayerTensors:
        """A client's round-0 personal tensors (reproducible from the state's seed)."""
        spec, seed = state.specs[layer], state.seed
        ref = state.layers[layer]["B_base"]
        dtype, device = ref.dtype, ref.device
        ri = self.inner_rank
        big_r = max(state.ranks.values())
        return {
            "A": init_a(layer, spec, big_r, seed, dtype, device)[:rank].clone(),
            "M": kaiming_uniform((ri, rank), derive_seed(seed, "M", layer, rank), dtype, device),
            "B1": kaiming_uniform((rank, ri), derive_seed(seed, "B1", layer, rank), dtype, device),
        }

    def start_layer(self, state, layer, rank, kept, client) -> LayerTensors:
        base = state.layers[layer]["B_base"]
        own = self.personal_init(state, layer, rank) if kept is None else {k: v.detach().clone() for k, v in kept.items()}
        return {
            **own,
            "B2": torch.zeros(base.shape[0], rank, dtype=base.dtype, device=base.device),
            "B_base": base.clone(),
        }

    def aggregate_layer(
        self, state: GlobalState, layer: str, uploads: list[LayerTensors], weights: list[float],
        ranks: list[int], t: int,
    ) -> LayerTensors:
        correction = weighted_product_sum([u["B2"] for u in uploads], [u["B1"] for u in uploads], weights)
        return {"B_base": state.layers[layer]["B_base"] + correction}

    def delta(self, layer: LayerTensors, alpha: float) -> Tensor:
        """s_k·(B_base + B2·B1)·M·A, differentiable in every tensor (r_k read from A)."""
        scale = alpha / layer["A"].shape[0]
        return scale * (((layer["B_base"] + layer["B2"] @ layer["B1"]) @ layer["M"]) @ layer["A"])

    def download_params(self, spec: LayerSpec, rank: int, t: int, round_ranks: list[int]) -> int:
        return spec.out_features * self.inner_rank
