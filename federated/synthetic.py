"""Synthetic rounds: a seeded stand-in for local training, for property tests and the benchmark.

Local training is replaced by adding seeded Gaussian noise (times ``scale``) to every tensor the
method trains that round, so the server sees realistic, distinct uploads at no training cost.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from rolora.federated.api import ClientUpdate, GlobalState, Method, ModelTensors
from rolora.federated.seeding import derive_seed


def perturb_trained(
    method: Method, start: ModelTensors, t: int, seed: int, client: int | str, scale: float = 1.0
) -> ModelTensors:
    """``start`` with seeded noise added to the tensors trained in round t (others untouched)."""
    trained = method.trains(t)
    out: ModelTensors = {}
    for layer, tensors in start.items():
        out[layer] = {}
        for name, x in tensors.items():
            if name in trained:
                g = torch.Generator(device="cpu").manual_seed(derive_seed(seed, "local", client, t, layer, name))
                noise = torch.randn(x.shape, generator=g, dtype=torch.float64).to(dtype=x.dtype, device=x.device)
                out[layer][name] = x + scale * noise
            else:
                out[layer][name] = x
    return out


def synthetic_round(
    method: Method,
    state: GlobalState,
    clients: Sequence[int | str],
    num_samples: Mapping[int | str, float] | None = None,
    kept: Mapping[int | str, ModelTensors | None] | None = None,
    seed: int = 0,
    scale: float = 1.0,
) -> tuple[dict[int | str, ModelTensors], list[ClientUpdate], dict[int | str, ModelTensors | None]]:
    """One round t = state.round + 1 for ``clients``: their trained tensors, uploads and kept state.

    Returns (local tensors after "training", the ClientUpdates, what each client keeps).
    """
    t = state.round + 1
    kept = kept or {}
    locals_: dict[int | str, ModelTensors] = {}
    updates: list[ClientUpdate] = []
    keeps: dict[int | str, ModelTensors | None] = {}
    for c in clients:
        start = method.client_start(state, c, kept.get(c), t)
        local = perturb_trained(method, start, t, seed, c, scale)
        locals_[c] = local
        keeps[c] = method.client_keep(local, t)
        n = 1.0 if num_samples is None else num_samples[c]
        updates.append(ClientUpdate(c, n, method.client_upload(local, t)))
    return locals_, updates, keeps
