"""Federated splits of a labelled training set: which sample indices each client holds.

A partition is a list (one entry per client) of sorted int64 index arrays into the training set.
Label-disjoint splits follow the paper (each client holds *all* training images of its labels);
IID and Dirichlet splits go through flwr-datasets' partitioners on an in-memory ``datasets.Dataset``
of (index, label) rows, imported lazily because flwr-datasets takes seconds to import.
"""

from __future__ import annotations

import numpy as np

from rolora.toy.data import NUM_CLASSES

SPLITS = ("5x2", "10x1", "iid", "dirichlet")
"""Split names accepted by :func:`make_partition`."""

Partition = list[np.ndarray]


def label_disjoint(labels: np.ndarray, num_clients: int, labels_per_client: int) -> Partition:
    """Client k holds every sample whose label is in {k·L, ..., k·L + L − 1} (L = labels_per_client)."""
    if num_clients * labels_per_client != NUM_CLASSES:
        raise ValueError(
            f"label-disjoint split needs clients × labels-per-client = {NUM_CLASSES}, "
            f"got {num_clients} × {labels_per_client}"
        )
    return [
        np.flatnonzero((labels >= k * labels_per_client) & (labels < (k + 1) * labels_per_client))
        for k in range(num_clients)
    ]


def _index_dataset(labels: np.ndarray):
    """An in-memory ``datasets.Dataset`` with columns ``index`` and ``label``."""
    import datasets

    return datasets.Dataset.from_dict({"index": np.arange(len(labels)), "label": labels.astype(np.int64)})


def _indices_of(partitioner, num_clients: int) -> Partition:
    """Read the ``index`` column of every partition as sorted int64 arrays.

    ``[:]["index"]`` reads the column in one Arrow call; ``ds["index"]`` is a lazy Column in datasets
    4.x that numpy would iterate row by row (100× slower).
    """
    return [
        np.sort(np.asarray(partitioner.load_partition(k).with_format("numpy")[:]["index"], dtype=np.int64))
        for k in range(num_clients)
    ]


def iid(labels: np.ndarray, num_clients: int, seed: int) -> Partition:
    """Equal-size IID shards: flwr-datasets' ``IidPartitioner`` on a seeded shuffle of the samples.

    (``IidPartitioner`` itself takes contiguous shards, so the shuffle is what makes them IID.)
    """
    from flwr_datasets.partitioner import IidPartitioner

    partitioner = IidPartitioner(num_partitions=num_clients)
    partitioner.dataset = _index_dataset(labels).shuffle(seed=seed)
    return _indices_of(partitioner, num_clients)


def dirichlet(labels: np.ndarray, num_clients: int, alpha: float, seed: int,
              min_partition_size: int = 10) -> Partition:
    """Label-skewed split: flwr-datasets' ``DirichletPartitioner`` with concentration ``alpha``.

    Smaller ``alpha`` means more skew; each client gets at least ``min_partition_size`` samples
    (the partitioner resamples until that holds).
    """
    from flwr_datasets.partitioner import DirichletPartitioner

    if alpha <= 0:
        raise ValueError(f"Dirichlet alpha must be > 0, got {alpha}")
    partitioner = DirichletPartitioner(
        num_partitions=num_clients, partition_by="label", alpha=alpha,
        min_partition_size=min_partition_size, self_balancing=False, shuffle=True, seed=seed,
    )
    partitioner.dataset = _index_dataset(labels)
    return _indices_of(partitioner, num_clients)


def make_partition(split: str, labels: np.ndarray, seed: int, num_clients: int = 10,
                   alpha_dir: float = 0.5) -> Partition:
    """Build a named split. ``num_clients`` and ``alpha_dir`` apply to ``iid`` and ``dirichlet`` only."""
    if split == "5x2":
        return label_disjoint(labels, 5, 2)
    if split == "10x1":
        return label_disjoint(labels, 10, 1)
    if split == "iid":
        return iid(labels, num_clients, seed)
    if split == "dirichlet":
        return dirichlet(labels, num_clients, alpha_dir, seed)
    raise ValueError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")


def subsample(partition: Partition, fraction: float, seed: int) -> Partition:
    """Keep a seeded random ``fraction`` of each client's samples (at least one), without replacement.

    Each client keeps round(fraction · n_k) of its own samples, so the split's shape (who holds which
    labels, relative client sizes) is preserved; ``fraction = 1`` keeps everything. The draw for client
    k depends only on (seed, k).
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"subsample fraction must be in (0, 1], got {fraction}")
    out = []
    for k, idx in enumerate(partition):
        keep = max(1, int(round(fraction * len(idx))))
        if keep >= len(idx):
            out.append(idx.copy())
            continue
        rng = np.random.default_rng([seed, k])
        out.append(np.sort(rng.choice(idx, size=keep, replace=False)))
    return out
