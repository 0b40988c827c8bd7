"""Checks run on a round's input before any arithmetic, so a bad round leaves the state untouched.

Every error names the client, the layer, the tensor and what is wrong.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping, Sequence

import torch
from torch import Tensor

from rolora.federated.api import AggregationError, ClientUpdate, GlobalState, LayerSpec
from rolora.federated.ranks import check_client_id, rank_of

ShapeFn = Callable[[str, LayerSpec, int], tuple[int, ...]]
"""(tensor name, layer spec, client rank) -> the shape that tensor must have."""


def check_specs(specs: Mapping[str, LayerSpec]) -> dict[str, LayerSpec]:
    """Validate the targeted layers: a non-empty mapping name -> LayerSpec with positive sizes."""
    if not isinstance(specs, Mapping) or not specs:
        raise AggregationError("specs: need a non-empty mapping layer name -> LayerSpec")
    for name, spec in specs.items():
        if not isinstance(spec, LayerSpec):
            raise AggregationError(f"layer {name!r}: spec must be a LayerSpec, got {type(spec).__name__}")
        if spec.out_features < 1 or spec.in_features < 1:
            raise AggregationError(f"layer {name!r}: sizes must be >= 1, got {spec}")
    return dict(specs)


def state_dtype_device(state: GlobalState) -> tuple[torch.dtype, torch.device]:
    """The floating dtype and device of the server's tensors (every upload must match them)."""
    for tensors in state.layers.values():
        for x in tensors.values():
            return x.dtype, x.device
    raise AggregationError("global state holds no tensors")


def check_round_number(state: GlobalState, t: int) -> None:
    """Round t must be the one after the state's last completed round."""
    if isinstance(t, bool) or not isinstance(t, int) or t != state.round + 1:
        raise AggregationError(
            f"round {t!r}: the state has completed round {state.round}, so the next round is "
            f"{state.round + 1}"
        )


def check_tensor(
    where: str, x: object, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device
) -> None:
    """One tensor: a Tensor of the expected shape, dtype and device, with only finite values."""
    if not isinstance(x, Tensor):
        raise AggregationError(f"{where}: expected a torch.Tensor, got {type(x).__name__}")
    if tuple(x.shape) != tuple(shape):
        raise AggregationError(f"{where}: shape {tuple(x.shape)}, expected {tuple(shape)}")
    if x.dtype != dtype:
        raise AggregationError(f"{where}: dtype {x.dtype}, expected {dtype} (the server's dtype)")
    if x.device != device:
        raise AggregationError(f"{where}: on device {x.device}, expected {device}")
    if not all_finite(x):
        bad = int((~torch.isfinite(x)).sum())
        raise AggregationError(f"{where}: {bad} non-finite value(s) (NaN or Inf) of {x.numel()}")


def all_finite(x: Tensor) -> bool:
    """Whether every entry is finite.

    Fast path: any NaN or ±Inf makes the sum NaN or ±Inf, so a finite sum proves all entries are
    finite (one reduction, no boolean temporary). A non-finite sum may also be an overflow of
    finite entries, so then the exact element-wise check decides (the reference path).
    """
    if x.numel() == 0 or bool(torch.isfinite(x.sum())):
        return True
    return bool(torch.isfinite(x).all())


def check_finite_result(t: int, layer: str, tensors: Mapping[str, Tensor]) -> None:
    """A layer's aggregate must be finite: finite uploads can still overflow in a sum or a product."""
    for name, x in tensors.items():
        if not all_finite(x):
            raise AggregationError(
                f"round {t}, layer {layer!r}: the aggregate {name!r} holds NaN or ±Inf (the uploads are "
                f"finite, but combining them overflows {x.dtype}); the state is left unchanged"
            )


def check_layer_tensors(
    where: str,
    tensors: object,
    names: frozenset[str],
    spec: LayerSpec,
    rank: int,
    shape_of: ShapeFn,
    dtype: torch.dtype,
    device: torch.device,
) -> None:
    """One layer's dict: exactly ``names``, each with the shape ``shape_of`` gives."""
    if not isinstance(tensors, Mapping):
        raise AggregationError(f"{where}: expected a dict of named tensors, got {type(tensors).__name__}")
    missing = sorted(names - tensors.keys())
    if missing:
        raise AggregationError(f"{where}: missing tensor(s) {missing} (this round needs {sorted(names)})")
    extra = sorted(set(tensors.keys()) - names)
    if extra:
        raise AggregationError(
            f"{where}: unexpected tensor(s) {extra} (this round takes only {sorted(names)}; "
            "refusing to drop them silently)"
        )
    for name in sorted(names):
        check_tensor(f"{where}, tensor {name!r} (rank {rank})", tensors[name], shape_of(name, spec, rank), dtype, device)


def check_updates(
    state: GlobalState,
    updates: Sequence[ClientUpdate],
    t: int,
    names: frozenset[str],
    shape_of: ShapeFn,
) -> None:
    """Everything ``aggregate`` needs to be true of a round's uploads, checked before computing."""
    check_round_number(state, t)
    if isinstance(updates, (str, bytes)) or not isinstance(updates, Sequence):
        raise AggregationError(f"round {t}: updates must be a sequence of ClientUpdate")
    if len(updates) == 0:
        raise AggregationError(f"round {t}: empty round, no client updates to aggregate")
    dtype, device = state_dtype_device(state)
    seen: set[int | str] = set()
    for u in updates:
        if not isinstance(u, ClientUpdate):
            raise AggregationError(f"round {t}: expected ClientUpdate, got {type(u).__name__}")
        check_client_id(u.client)  # before hashing it: a list would raise TypeError
        who = f"round {t}, client {u.client!r}"
        if u.client in seen:
            raise AggregationError(f"{who}: more than one update from this client")
        seen.add(u.client)
        n = u.num_samples
        if isinstance(n, bool) or not isinstance(n, numbers.Real):  # numpy scalars are Real too
            raise AggregationError(f"{who}: num_samples must be a real number, got {type(n).__name__} {n!r}")
        if not math.isfinite(float(n)) or float(n) <= 0:
            raise AggregationError(f"{who}: num_samples must be a positive finite number, got {n!r}")
        rank = rank_of(state.ranks, u.client)
        if not isinstance(u.tensors, Mapping):
            raise AggregationError(f"{who}: tensors must be a dict layer -> named tensors")
        missing = [layer for layer in state.specs if layer not in u.tensors]
        if missing:
            raise AggregationError(f"{who}: missing layer(s) {missing}")
        extra = [layer for layer in u.tensors if layer not in state.specs]
        if extra:
            raise AggregationError(f"{who}: unknown layer(s) {extra} (known: {list(state.specs)})")
        for layer, spec in state.specs.items():
            check_layer_tensors(
                f"{who}, layer {layer!r}", u.tensors[layer], names, spec, rank, shape_of, dtype, device
            )


def check_kept(
    client: int | str,
    kept: object,
    state: GlobalState,
    names: frozenset[str],
    shape_of: ShapeFn,
) -> None:
    """What a client kept from earlier rounds (personalised methods) must still fit the model."""
    dtype, device = state_dtype_device(state)
    rank = rank_of(state.ranks, client)
    if not isinstance(kept, Mapping):
        raise AggregationError(f"client {client!r}: kept state must be a dict, got {type(kept).__name__}")
    missing = [layer for layer in state.specs if layer not in kept]
    if missing:
        raise AggregationError(f"client {client!r}: kept state is missing layer(s) {missing}")
    for layer, spec in state.specs.items():
        check_layer_tensors(
            f"client {client!r}, kept layer {layer!r}", kept[layer], names, spec, rank, shape_of, dtype, device
        )
