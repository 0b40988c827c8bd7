"""Client partitions of a text set: which of its rows each simulated client holds.

The schemes (the config offers ``iid``, ``dirichlet``, ``k-labels`` and ``natural``) live in
:mod:`rolora.federated.partition`; this module only reads their keys from a :class:`TextDataset`.
``column`` picks them: ``"label"`` (default for dirichlet and k-labels) or ``"group"`` (the set's
``groups``; default for natural). ``iid`` reads no column, so it also splits sets without labels
(instruction data). Dirichlet clients need at least one row each (flwr redraws until they have it).
"""

from __future__ import annotations

import numpy as np

from rolora.federated import partition as federated_partition
from rolora.llm.text_dataset import TextDataset


def _column_values(ds: TextDataset, column: str) -> np.ndarray | list[str]:
    if not isinstance(ds, TextDataset):
        raise ValueError(f"{ds.name} has no labels or groups ({type(ds).__name__}); only 'iid' can split it")
    if column == "label":
        return ds.labels
    if column == "group":
        if ds.groups is None:
            raise ValueError(f"{ds.name} has no group column; load it with a group column "
                             f"(load_file(..., group_column=...)) or partition by 'label'")
        return list(ds.groups)
    raise ValueError(f"unknown partition column {column!r}; choose 'label' or 'group'")


def natural_client_names(ds: TextDataset, column: str = "group") -> list[str]:
    """The value each client of a ``natural`` partition holds, client 0 first."""
    return federated_partition.natural_client_names(_column_values(ds, column))


def partition(ds, scheme: str, num_clients: int | None, seed: int, *, alpha: float = 0.5,
              labels_per_client: int = 2, column: str | None = None) -> federated_partition.Partition:
    """Split ``ds`` over clients: one sorted int64 array of row indices per client.

    ``ds`` is a :class:`TextDataset`, or for ``iid`` any set with a length (e.g. instruction data).
    ``num_clients`` may be None for ``natural`` (one client per value); otherwise it must equal the
    number of distinct values.
    """
    federated_partition.check_scheme(scheme)
    column = column or ("group" if scheme == "natural" else "label")
    keys = range(len(ds)) if scheme == "iid" else _column_values(ds, column)
    return federated_partition.partition(scheme, keys, num_clients, seed, alpha=alpha,
                                         labels_per_client=labels_per_client, column=column)
