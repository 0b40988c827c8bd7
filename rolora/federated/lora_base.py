"""Shared plumbing of the LoRA methods: round-0 state, client start, validated aggregation, costs.

A subclass states what its layer holds (:meth:`init_layer`, :meth:`start_layer`), which tensors
train and travel (:meth:`trains`, :meth:`uploads`) and its rule (:meth:`aggregate_layer`). The base
class validates everything first (see :mod:`.validation`), so a rule only ever sees good input.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import ClassVar

import torch

from rolora.federated.api import (
    AggregationError,
    ClientUpdate,
    CommCost,
    GlobalState,
    LayerSpec,
    LayerTensors,
    Method,
    ModelTensors,
    Weighting,
)
from rolora.federated.dense import average_dense, check_dense, initial_dense
from rolora.federated.ranks import check_uniform_ranks, max_rank, normalise_ranks, participant_ranks, rank_of
from rolora.federated.seeding import derive_seed, kaiming_uniform
from rolora.federated.validation import check_finite_result, check_round_number, check_specs, check_updates
from rolora.federated.weights import client_weights

AB = frozenset({"A", "B"})


def lora_shape(name: str, spec: LayerSpec, rank: int) -> tuple[int, int]:
    """Shape of a named tensor for a layer W0 (d×n) at client rank r (PEFT convention)."""
    d, n = spec.out_features, spec.in_features
    shapes = {"A": (rank, n), "B": (d, rank), "W": (d, n), "base": (d, n)}
    if name not in shapes:
        raise AggregationError(f"unknown tensor name {name!r} (known: {sorted(shapes)})")
    return shapes[name]


def init_a(layer: str, spec: LayerSpec, rank: int, seed: int, dtype, device) -> torch.Tensor:
    """The shared round-0 A of a layer: PEFT's Kaiming-uniform, seeded by (seed, layer)."""
    return kaiming_uniform((rank, spec.in_features), derive_seed(seed, "A", layer), dtype, device)


class LoRAMethod(Method):
    """Base of every method here; stateless clients and one shared (A, B) per layer by default."""

    mixes_ranks: ClassVar[bool] = False
    uses_ranks: ClassVar[bool] = True
    """False for full-rank methods, which accept and ignore any ranks."""

    def trains(self, t: int) -> frozenset[str]:
        """Default: clients train both factors every round."""
        return AB

    def uploads(self, t: int) -> frozenset[str]:
        """Default: clients send both factors every round."""
        return AB

    # ----------------------------------------------------------------------------- round 0
    def init(
        self,
        specs: Mapping[str, LayerSpec],
        ranks: int | Mapping[int | str | None, int],
        alpha: float,
        seed: int,
        dtype=None,
        device=None,
        dense: Mapping[str, torch.Tensor] | None = None,
    ) -> GlobalState:
        """Round-0 state: A Kaiming-uniform (PEFT default) from ``seed``, B = 0, identical everywhere.

        ``dense`` (optional) are plainly averaged tensors such as a classification head, copied.
        With mixed ranks the server keeps factors of the largest rank and a client of rank r uses
        the first r rows of A and the first r columns of B.
        """
        specs = check_specs(specs)
        rank_map = normalise_ranks(ranks)
        if not self.mixes_ranks:
            check_uniform_ranks(self.name, rank_map)
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not math.isfinite(alpha) or alpha <= 0:
            raise AggregationError(f"alpha must be a positive finite number, got {alpha!r}")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise AggregationError(f"seed must be an int, got {seed!r}")
        dtype = dtype or torch.get_default_dtype()
        if not dtype.is_floating_point:
            raise AggregationError(f"dtype must be a floating type, got {dtype}")
        r = max_rank(rank_map)
        layers = {
            layer: self.init_layer(layer, spec, r, seed, dtype, device) for layer, spec in specs.items()
        }
        return GlobalState(
            round=0, alpha=float(alpha), layers=layers, ranks=rank_map, specs=specs, seed=seed,
            dense=initial_dense(dense),
        )

    def init_layer(self, layer: str, spec: LayerSpec, rank: int, seed: int, dtype, device) -> LayerTensors:
        """A layer's round-0 server tensors (default: shared A, B = 0)."""
        return {
            "A": init_a(layer, spec, rank, seed, dtype, device),
            "B": torch.zeros(spec.out_features, rank, dtype=dtype, device=device),
        }

    def shape_of(self, name: str, spec: LayerSpec, rank: int) -> tuple[int, ...]:
        """Shape of tensor ``name`` for a client of rank ``rank`` (used to validate uploads)."""
        return lora_shape(name, spec, rank)

    # ----------------------------------------------------------------------------- client side
    def client_start(
        self, state: GlobalState, client: int | str, kept: ModelTensors | None, t: int
    ) -> ModelTensors:
        """The complete tensors client ``client`` trains from in round t (fresh copies)."""
        check_round_number(state, t)
        rank = rank_of(state.ranks, client)
        self.check_kept(state, client, kept)
        return {
            layer: self.start_layer(state, layer, rank, None if kept is None else kept[layer], client)
            for layer in state.specs
        }

    def check_kept(self, state: GlobalState, client: int | str, kept: ModelTensors | None) -> None:
        """Validate what a client kept (stateless methods accept and ignore ``None`` only)."""
        if kept is not None:
            raise AggregationError(
                f"client {client!r}: {self.name} clients keep nothing between rounds, got kept state"
            )

    def start_layer(
        self, state: GlobalState, layer: str, rank: int, kept: LayerTensors | None, client: int | str
    ) -> LayerTensors:
        """One layer of a client's starting tensors (default: the server's A, B at the client's rank)."""
        g = state.layers[layer]
        return {"A": g["A"][:rank].clone(), "B": g["B"][:, :rank].clone()}

    # ----------------------------------------------------------------------------- server side
    def aggregate(
        self,
        state: GlobalState,
        updates: Sequence[ClientUpdate],
        t: int,
        weighting: Weighting = "samples",
    ) -> GlobalState:
        """The server's new state after round t. Validates everything before computing."""
        check_updates(state, updates, t, self.uploads(t), self.shape_of)
        check_dense(state, updates)
        weights = client_weights(updates, weighting)
        ranks = [rank_of(state.ranks, u.client) for u in updates]
        with torch.no_grad():
            layers = {
                layer: self.finite_aggregate_layer(state, layer, [u.tensors[layer] for u in updates], weights, ranks, t)
                for layer in state.specs
            }
            dense = average_dense(state, updates, weights)
        return replace(state, round=t, layers=layers, dense=dense)

    def finite_aggregate_layer(
        self, state: GlobalState, layer: str, uploads: list[LayerTensors], weights: list[float], ranks: list[int],
        t: int,
    ) -> LayerTensors:
        """:meth:`aggregate_layer`, refused (AggregationError naming the layer) if its result is not finite."""
        try:
            out = self.aggregate_layer(state, layer, uploads, weights, ranks, t)
        except torch.linalg.LinAlgError as err:  # an SVD or solve fed a matrix that overflowed
            raise AggregationError(
                f"round {t}, layer {layer!r}: the aggregate could not be factorised ({err}); the uploads "
                "are finite, so combining them overflowed; the state is left unchanged"
            ) from err
        check_finite_result(t, layer, out)
        return out

    def aggregate_layer(
        self,
        state: GlobalState,
        layer: str,
        uploads: list[LayerTensors],
        weights: list[float],
        ranks: list[int],
        t: int,
    ) -> LayerTensors:
        """The method's rule for one layer: validated uploads and weights p_k (sum 1) -> new tensors."""
        raise NotImplementedError

    # ----------------------------------------------------------------------------- communication
    def upload_params(self, spec: LayerSpec, rank: int, t: int) -> int:
        """Parameters one client of rank ``rank`` uploads for one layer (default: its uploads' sizes)."""
        return sum(math.prod(self.shape_of(name, spec, rank)) for name in self.uploads(t))

    def download_params(self, spec: LayerSpec, rank: int, t: int, round_ranks: list[int]) -> int:
        """Parameters that client receives for one layer after round t (default: same as upload)."""
        return self.upload_params(spec, rank, t)

    def communication(
        self,
        specs: Mapping[str, LayerSpec],
        ranks: Mapping[int | str | None, int] | int,
        t: int,
        clients: Sequence[int | str] | int = 1,
        bytes_per_param: int = 4,
        dense_params: int = 0,
    ) -> CommCost:
        """Parameters sent per participating client in round t (upload) and received (download).

        ``clients`` is either the number of participants (all of the default rank) or their ids
        (ranks looked up in ``ranks``); some downloads depend on the participants (FLoRA's stack).
        """
        per_rank = participant_ranks(ranks, clients)
        round_ranks = list(per_rank.values())
        per_client = {
            c: (
                dense_params + sum(self.upload_params(spec, r, t) for spec in specs.values()),
                dense_params + sum(self.download_params(spec, r, t, round_ranks) for spec in specs.values()),
            )
            for c, r in per_rank.items()
        }
        ups = [u for u, _ in per_client.values()]
        downs = [d for _, d in per_client.values()]
        return CommCost(
            upload_params=round(sum(ups) / len(ups)),
            download_params=round(sum(downs) / len(downs)),
            bytes_per_param=bytes_per_param,
            per_client=per_client,
        )


class MergesIntoBase(LoRAMethod):
    """A LoRA method that also changes W0: the server keeps a d×n ``base`` (the accumulated change,
    added to the model's frozen weight) and every client, participant or not, starts from it."""

    def init_layer(self, layer: str, spec: LayerSpec, rank: int, seed: int, dtype, device) -> LayerTensors:
        out = super().init_layer(layer, spec, rank, seed, dtype, device)
        out["base"] = torch.zeros(spec.out_features, spec.in_features, dtype=dtype, device=device)
        return out

    def start_layer(self, state, layer, rank, kept, client) -> LayerTensors:
        out = super().start_layer(state, layer, rank, kept, client)
        out["base"] = state.layers[layer]["base"].clone()
        return out
