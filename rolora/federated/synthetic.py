"""Synthetic rounds: a seeded stand-in for local training, for property tests and the benchmark.

Local training is replaced by adding seeded Gaussian noise (times ``scale``) to every tensor the
method trains that round (and to the plainly averaged ``dense`` tensors), so the server sees
realistic, distinct uploads at no training cost. The round itself is :mod:`rolora.federated.round`'s:
:func:`synthetic_training` plugs into ``run_round``; :func:`synthetic_round` stops before the
aggregation, for tests that inspect or tamper with the uploads first.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

from rolora.federated.api import ClientUpdate, GlobalState, Method, ModelTensors
from rolora.federated.round import ClientResult, ClientStart, LocalTraining, client_starts, client_uploads, one_by_one
from rolora.federated.seeding import derive_seed


def _noise(x: Tensor, seed: int) -> Tensor:
    g = torch.Generator(device="cpu").manual_seed(seed)
    return torch.randn(x.shape, generator=g, dtype=torch.float64).to(dtype=x.dtype, device=x.device)


def perturb_trained(
    method: Method, start: ModelTensors, t: int, seed: int, client: int | str, scale: float = 1.0
) -> ModelTensors:
    """``start`` with seeded noise added to the tensors trained in round t (others untouched)."""
    trained = method.trains(t)
    return {
        layer: {
            name: x + scale * _noise(x, derive_seed(seed, "local", client, t, layer, name)) if name in trained else x
            for name, x in tensors.items()
        }
        for layer, tensors in start.items()
    }


def synthetic_training(
    method: Method, num_samples: Mapping[int | str, float] | None = None, seed: int = 0, scale: float = 1.0
) -> LocalTraining:
    """A :data:`~rolora.federated.round.LocalTraining` that "trains" by :func:`perturb_trained`.

    n_k is ``num_samples[k]`` (default 1.0); dense tensors get the same kind of seeded noise.
    """

    def train(t: int, start: ClientStart) -> ClientResult:
        k = start.client
        dense = {n: x + scale * _noise(x, derive_seed(seed, "local", k, t, "dense", n)) for n, x in start.dense.items()}
        return ClientResult(
            tensors=perturb_trained(method, start.tensors, t, seed, k, scale),
            num_samples=1.0 if num_samples is None else num_samples[k],
            dense=dense,
        )

    return one_by_one(train)


def synthetic_round(
    method: Method,
    state: GlobalState,
    clients: Sequence[int | str],
    num_samples: Mapping[int | str, float] | None = None,
    kept: Mapping[int | str, ModelTensors | None] | None = None,
    seed: int = 0,
    scale: float = 1.0,
) -> tuple[dict[int | str, ModelTensors], list[ClientUpdate], dict[int | str, ModelTensors | None]]:
    """Round t = state.round + 1 for ``clients`` up to (not including) the aggregation.

    Returns (each client's tensors after "training", the ClientUpdates, what each client keeps).
    """
    t = state.round + 1
    starts = client_starts(method, state, clients, kept)
    updates, keeps, results, _ = client_uploads(
        method, t, starts, synthetic_training(method, num_samples, seed, scale)(t, starts)
    )
    return {k: r.tensors for k, r in results.items()}, updates, keeps
