"""Client partitions of a training set: which row indices each simulated client holds.

Every scheme runs a flwr-datasets partitioner over an in-memory ``datasets.Dataset`` of
(row index, partition column) pairs and reads back each client's row indices; flwr-datasets is
imported lazily (it takes seconds, and the GPU image does not have it). Choices:

- ``iid``: ``IidPartitioner`` (contiguous equal shards) over a seeded shuffle of the rows.
- ``dirichlet``: ``DirichletPartitioner`` with concentration ``alpha`` over the column (smaller is
  more skewed), ``min_partition_size=1`` so that it redraws (up to its 10 tries) rather than
  leave a client empty; ``self_balancing=False``.
- ``k-labels``: ``PathologicalPartitioner`` with ``labels_per_client`` classes per client in the
  ``first-deterministic`` mode of the paper it implements (client k gets class k mod C, the rest
  drawn with the seed); each class is split evenly among the clients that hold it. A class held by
  no client would silently drop its rows, so that is an error.
- ``natural``: ``NaturalIdPartitioner``, one client per distinct value, clients in sorted order of
  the value (see :func:`natural_client_names`).

``column`` is the partition column: ``"label"`` (default for dirichlet and k-labels) or ``"group"``
(the set's ``groups``; default for natural). Each client's indices are sorted, so a partition is a
pure function of (data, scheme, options, seed). A client left with no rows is an error naming it.
"""

from __future__ import annotations

import contextlib
import io
import warnings

import numpy as np

from rolora.llm.text_dataset import TextDataset

SCHEMES = ("iid", "dirichlet", "k-labels", "natural")

Partition = list[np.ndarray]


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
    return [str(v) for v in sorted(set(np.asarray(_column_values(ds, column)).tolist()))]


def _flwr():
    try:
        import datasets
        from flwr_datasets import partitioner
    except ImportError as err:
        raise ImportError("client partitions need flwr-datasets: `pip install flwr-datasets`") from err
    return datasets, partitioner


def _run(partitioner, values, num_clients: int, shuffle_seed: int | None = None) -> Partition:
    """Attach an (index, key) dataset to a partitioner and read each client's sorted row indices.

    ``[:]["index"]`` reads the column in one Arrow call (datasets 4.x ``ds["col"]`` is a lazy Column).
    """
    datasets, _ = _flwr()
    table = datasets.Dataset.from_dict({"index": np.arange(len(values)), "key": values})
    partitioner.dataset = table if shuffle_seed is None else table.shuffle(seed=shuffle_seed)
    return [np.sort(np.asarray(partitioner.load_partition(k)[:]["index"], dtype=np.int64))
            for k in range(num_clients)]


def _check_clients(parts: Partition, scheme: str, remedy: str) -> Partition:
    for client, idx in enumerate(parts):
        if len(idx) == 0:
            raise ValueError(f"{scheme} partition leaves client {client} of {len(parts)} with no samples; {remedy}")
    return parts


def partition(ds, scheme: str, num_clients: int | None, seed: int, *, alpha: float = 0.5,
              labels_per_client: int = 2, column: str | None = None) -> Partition:
    """Split ``ds`` over clients: one sorted int64 array of row indices per client.

    ``ds`` is a :class:`TextDataset`, or for ``iid`` any set with a length (e.g. instruction data).

    Schemes and their choices are in the module docstring. ``num_clients`` may be None for
    ``natural`` (one client per value); otherwise it must equal the number of distinct values.
    """
    if scheme not in SCHEMES:
        raise ValueError(f"unknown partition scheme {scheme!r}; choose one of {', '.join(SCHEMES)}")
    column = column or ("group" if scheme == "natural" else "label")
    # iid needs no column, so it also splits sets without labels (instruction data)
    values = np.zeros(len(ds), dtype=np.int64) if scheme == "iid" else _column_values(ds, column)
    if scheme == "natural":
        return _natural(ds, values, num_clients, column)
    if num_clients is None or num_clients < 1:
        raise ValueError(f"{scheme} partition needs num_clients >= 1, got {num_clients}")
    if num_clients > len(ds):
        raise ValueError(f"{num_clients} clients for {len(ds)} samples: client {len(ds)} and later would "
                         f"get no samples; use at most {len(ds)} clients")
    _, partitioners = _flwr()
    if scheme == "iid":
        parts = _run(partitioners.IidPartitioner(num_partitions=num_clients), values, num_clients, seed)
        return _check_clients(parts, scheme, "use fewer clients")
    if scheme == "dirichlet":
        return _dirichlet(partitioners, values, num_clients, alpha, seed, column)
    return _k_labels(partitioners, values, num_clients, labels_per_client, seed, column)


def _natural(ds: TextDataset, values, num_clients: int | None, column: str) -> Partition:
    _, partitioners = _flwr()
    names = natural_client_names(ds, column)
    if num_clients is not None and num_clients != len(names):
        raise ValueError(f"natural partition by {column!r} has {len(names)} clients ({', '.join(names)}); "
                         f"set num_clients to {len(names)} or leave it unset")
    with contextlib.redirect_stderr(io.StringIO()):  # its unconditional tqdm bar would break --quiet
        # raw values (ints for labels): flwr orders clients by sorted value, as natural_client_names does
        parts = _run(partitioners.NaturalIdPartitioner(partition_by="key"), values, len(names))
    return _check_clients(parts, "natural", "this cannot happen for a value present in the data")


def _dirichlet(partitioners, values, num_clients: int, alpha: float, seed: int, column: str) -> Partition:
    if not alpha > 0:
        raise ValueError(f"Dirichlet alpha must be > 0, got {alpha}")
    remedy = f"raise alpha (now {alpha}), use fewer clients (now {num_clients}) or another seed"

    def draw(min_size: int) -> Partition:
        partitioner = partitioners.DirichletPartitioner(
            num_partitions=num_clients, partition_by="key", alpha=alpha, min_partition_size=min_size,
            self_balancing=False, shuffle=True, seed=seed,
        )
        with warnings.catch_warnings():  # flwr warns on every redraw; the outcome is what matters
            warnings.simplefilter("ignore")
            return _run(partitioner, values, num_clients)

    try:
        parts = draw(1)
    except ValueError:
        # flwr gave up after its redraws without saying which client: one unconstrained draw names it
        _check_clients(draw(0), "dirichlet", remedy)
        raise ValueError(f"Dirichlet partition by {column!r} left some of {num_clients} clients "
                         f"empty in every draw; {remedy}") from None
    return _check_clients(parts, "dirichlet", remedy)


def _k_labels(partitioners, values, num_clients: int, k: int, seed: int, column: str) -> Partition:
    classes = sorted(set(np.asarray(values).tolist()))
    if not 1 <= k <= len(classes):
        raise ValueError(f"labels_per_client must lie in 1..{len(classes)} (the {column} values), got {k}")
    partitioner = partitioners.PathologicalPartitioner(
        num_partitions=num_clients, partition_by="key", num_classes_per_partition=k,
        class_assignment_mode="first-deterministic", shuffle=True, seed=seed,
    )
    remedy = f"use fewer clients (now {num_clients}) or fewer labels per client (now {k})"
    try:
        with warnings.catch_warnings():  # flwr warns about unused classes; covered below as an error
            warnings.simplefilter("ignore")
            parts = _run(partitioner, values, num_clients)
    except ValueError as err:
        raise ValueError(f"k-labels partition failed: {err}; {remedy}") from err
    covered = sum(len(p) for p in parts)
    if covered != len(values):
        raise ValueError(f"k-labels partition with {num_clients} clients × {k} labels leaves "
                         f"{len(values) - covered} of {len(values)} samples on no client (some {column} "
                         f"values are assigned to nobody); use more clients or more labels per client")
    return _check_clients(parts, "k-labels", remedy)
