"""The toy's split names, mapped onto the shared client partitions (:mod:`rolora.federated.partition`).

``5x2`` and ``10x1`` are the paper's label-disjoint MNIST splits (5 clients × 2 digits, 10 × 1; each
client holds *all* training images of its digits); ``iid`` and ``dirichlet`` take the client count
and concentration from the run's config.
"""

from __future__ import annotations

import numpy as np

from rolora.federated.partition import Partition, partition

SPLITS = ("5x2", "10x1", "iid", "dirichlet")
"""Split names accepted by :func:`make_partition`."""

LABEL_DISJOINT = {"5x2": (5, 2), "10x1": (10, 1)}
"""Label-disjoint split name -> (clients, digits per client)."""

DIRICHLET_MIN_CLIENT_SIZE = 10
"""Every Dirichlet client holds at least this many images (flwr redraws until it does); the committed
results in docs/toy-mnist*.csv were drawn with it, so changing it changes them."""


def make_partition(split: str, labels: np.ndarray, seed: int, num_clients: int = 10,
                   alpha_dir: float = 0.5) -> Partition:
    """Build a named split. ``num_clients`` and ``alpha_dir`` apply to ``iid`` and ``dirichlet`` only."""
    if split in LABEL_DISJOINT:
        clients, digits = LABEL_DISJOINT[split]
        return partition("label-disjoint", labels, clients, seed, labels_per_client=digits)
    if split == "iid":
        return partition("iid", labels, num_clients, seed)
    if split == "dirichlet":
        return partition("dirichlet", labels, num_clients, seed, alpha=alpha_dir,
                         min_partition_size=DIRICHLET_MIN_CLIENT_SIZE)
    raise ValueError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
