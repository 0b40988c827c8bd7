"""Plainly averaged tensors: parameters every client trains in full, whatever the LoRA method.

A sequence classifier's head is the usual case: PEFT trains it as ``modules_to_save`` and federated
LoRA papers average it with FedAvg. It lives in ``GlobalState.dense`` (name -> tensor) and in each
``ClientUpdate.dense``; every method's ``aggregate`` averages it with the round's weights p_k, so
that arithmetic stays in ``rolora.federated`` like every other rule. An empty mapping (the
default) means there is nothing of the kind (or the head is frozen).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

from rolora.federated.api import AggregationError, ClientUpdate, GlobalState
from rolora.federated.validation import check_tensor
from rolora.federated.weights import weighted_sum


def initial_dense(dense: Mapping[str, Tensor] | None) -> dict[str, Tensor]:
    """Validated, detached copies of the round-0 dense tensors (floating, finite)."""
    if dense is None:
        return {}
    if not isinstance(dense, Mapping):
        raise AggregationError(f"dense: need a mapping name -> tensor, got {type(dense).__name__}")
    out = {}
    for name, x in dense.items():
        if not isinstance(name, str) or not name:
            raise AggregationError(f"dense: tensor names must be non-empty strings, got {name!r}")
        if not isinstance(x, Tensor) or not x.dtype.is_floating_point:
            raise AggregationError(f"dense tensor {name!r}: need a floating torch.Tensor, got {x!r:.60}")
        check_tensor(f"dense tensor {name!r}", x, tuple(x.shape), x.dtype, x.device)
        out[name] = x.detach().clone()
    return out


def check_dense(state: GlobalState, updates: Sequence[ClientUpdate]) -> None:
    """Every update carries exactly the state's dense tensors, same shape/dtype/device, finite."""
    expected = set(state.dense)
    for u in updates:
        got = set(u.dense)
        if got != expected:
            missing, extra = sorted(expected - got), sorted(got - expected)
            raise AggregationError(
                f"client {u.client!r}: dense tensors differ from the server's (missing {missing}, extra {extra})"
            )
        for name, ref in state.dense.items():
            check_tensor(f"client {u.client!r}, dense tensor {name!r}", u.dense[name], tuple(ref.shape),
                         ref.dtype, ref.device)


def average_dense(state: GlobalState, updates: Sequence[ClientUpdate], weights: Sequence[float]) -> dict[str, Tensor]:
    """sum_k p_k x_k for every dense tensor (call after :func:`check_dense`)."""
    out = {}
    with torch.no_grad():
        for name in state.dense:
            avg = weighted_sum([u.dense[name] for u in updates], weights)
            if not bool(torch.isfinite(avg).all()):
                raise AggregationError(f"dense tensor {name!r}: the weighted mean overflows (non-finite result)")
            out[name] = avg
    return out


def dense_params(state: GlobalState) -> int:
    """Number of dense parameters one client downloads and uploads per round."""
    return sum(x.numel() for x in state.dense.values())
