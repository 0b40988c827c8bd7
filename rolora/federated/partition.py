"""Who holds which examples: seeded client partitions of a training set.

A partition is a list, one entry per client, of sorted int64 arrays of row indices into the set; the
clients' arrays are disjoint and together cover every row (a split that would drop rows or leave a
client empty is an error naming the client and a fix). Schemes read one *key* per example: its label,
or a natural group such as a user or domain id; ``column`` only names that key in error messages.

- ``iid``: flwr-datasets' ``IidPartitioner`` (contiguous equal shards) over a seeded shuffle of the
  rows; the keys are not read.
- ``dirichlet``: ``DirichletPartitioner`` with concentration ``alpha`` over the keys (smaller is more
  skewed), ``self_balancing=False``; it redraws (up to its 10 tries) until every client holds at
  least ``min_partition_size`` examples.
- ``k-labels``: ``PathologicalPartitioner`` with ``labels_per_client`` keys per client in the
  ``first-deterministic`` mode of the paper it implements (client k gets key k mod C, the rest drawn
  with the seed); each key's examples are split evenly among the clients that hold it. A key held by
  no client would silently drop its examples, so that is an error.
- ``natural``: ``NaturalIdPartitioner``, one client per distinct key, clients in sorted key order
  (see :func:`natural_client_names`); the seed is not used.
- ``label-disjoint``: no randomness; client k holds *all* examples of the sorted keys
  k·L .. k·L + L − 1 (L = ``labels_per_client``), the RoLoRA paper's label-disjoint split.

Every scheme is a pure function of (keys, options, seed). flwr-datasets (an optional extra) is
imported lazily: it takes seconds to import.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Sequence

import numpy as np

SCHEMES = ("iid", "dirichlet", "k-labels", "natural", "label-disjoint")
"""Scheme names accepted by :func:`partition`."""

Partition = list[np.ndarray]


def check_scheme(scheme: str) -> str:
    """Return ``scheme`` if it is one of :data:`SCHEMES`, else raise a ValueError listing them."""
    if scheme not in SCHEMES:
        raise ValueError(f"unknown partition scheme {scheme!r}; choose one of {', '.join(SCHEMES)}")
    return scheme


def partition(scheme: str, keys: Sequence, num_clients: int | None, seed: int, *, alpha: float = 0.5,
              labels_per_client: int = 2, min_partition_size: int = 1, column: str | None = None) -> Partition:
    """Split the examples whose keys are ``keys`` over clients with the named scheme.

    ``num_clients`` may be None for ``natural`` only (one client per key). ``alpha`` and
    ``min_partition_size`` apply to ``dirichlet``, ``labels_per_client`` to ``k-labels`` and
    ``label-disjoint``. ``column`` names the keys in errors ("label", or "group" for ``natural``).
    """
    check_scheme(scheme)
    named = {} if column is None else {"column": column}
    if scheme == "natural":
        return natural(keys, num_clients, **named)
    if scheme == "iid":
        return iid(len(keys), num_clients, seed)
    if scheme == "dirichlet":
        return dirichlet(keys, num_clients, seed, alpha=alpha, min_partition_size=min_partition_size, **named)
    if scheme == "k-labels":
        return k_labels(keys, num_clients, seed, labels_per_client=labels_per_client, **named)
    return label_disjoint(keys, num_clients, labels_per_client, **named)


def iid(num_examples: int, num_clients: int, seed: int) -> Partition:
    """Equal-size IID shards (sizes differ by at most one): contiguous shards of a seeded shuffle."""
    _check_clients_for(num_examples, num_clients, "iid")
    _check_seed(seed)
    _, partitioners = _flwr()
    parts = _run(partitioners.IidPartitioner(num_partitions=num_clients), np.zeros(num_examples, dtype=np.int64),
                 num_clients, shuffle_seed=seed)
    return _check_no_empty_client(parts, "iid", "use fewer clients")


def dirichlet(keys: Sequence, num_clients: int, seed: int, *, alpha: float, min_partition_size: int = 1,
              column: str = "label") -> Partition:
    """Key-skewed split: each key's examples are shared out by a Dirichlet(``alpha``) draw."""
    _check_clients_for(len(keys), num_clients, "dirichlet")
    _check_seed(seed)
    if not alpha > 0:
        raise ValueError(f"Dirichlet alpha must be > 0, got {alpha}")
    if not 1 <= min_partition_size <= len(keys) // num_clients:
        raise ValueError(f"Dirichlet min_partition_size must lie in 1..{len(keys) // num_clients} "
                         f"({len(keys)} examples over {num_clients} clients), got {min_partition_size}")
    _, partitioners = _flwr()
    remedy = f"raise alpha (now {alpha}), use fewer clients (now {num_clients}) or another seed"

    def draw(min_size: int) -> Partition:
        partitioner = partitioners.DirichletPartitioner(
            num_partitions=num_clients, partition_by="key", alpha=alpha, min_partition_size=min_size,
            self_balancing=False, shuffle=True, seed=seed,
        )
        with warnings.catch_warnings():  # flwr warns on every redraw; the outcome is what matters
            warnings.simplefilter("ignore")
            return _run(partitioner, keys, num_clients)

    try:
        parts = draw(min_partition_size)
    except ValueError:
        # flwr gave up after its redraws without saying which client: an unconstrained draw (the same as
        # flwr's first, which failed) names the smallest
        sizes = [len(p) for p in draw(0)]
        smallest = int(np.argmin(sizes))
        if min_partition_size == 1:
            raise ValueError(f"dirichlet partition leaves client {smallest} of {num_clients} with no samples; "
                             f"{remedy}") from None
        raise ValueError(f"Dirichlet partition by {column!r} gives some of {num_clients} clients fewer than "
                         f"min_partition_size = {min_partition_size} samples in every draw (without the minimum, "
                         f"client {smallest} gets {sizes[smallest]}); lower the minimum, {remedy}") from None
    return _check_no_empty_client(parts, "dirichlet", remedy)


def k_labels(keys: Sequence, num_clients: int, seed: int, *, labels_per_client: int,
             column: str = "label") -> Partition:
    """Each client holds exactly ``labels_per_client`` keys; a key's examples are split among its holders."""
    _check_clients_for(len(keys), num_clients, "k-labels")
    _check_seed(seed)
    classes = _distinct(keys)
    k = labels_per_client
    if not 1 <= k <= len(classes):
        raise ValueError(f"labels_per_client must lie in 1..{len(classes)} (the {column} values), got {k}")
    _, partitioners = _flwr()
    partitioner = partitioners.PathologicalPartitioner(
        num_partitions=num_clients, partition_by="key", num_classes_per_partition=k,
        class_assignment_mode="first-deterministic", shuffle=True, seed=seed,
    )
    remedy = f"use fewer clients (now {num_clients}) or fewer labels per client (now {k})"
    try:
        with warnings.catch_warnings():  # flwr warns about unused keys; covered below as an error
            warnings.simplefilter("ignore")
            parts = _run(partitioner, keys, num_clients)
    except ValueError as err:
        raise ValueError(f"k-labels partition failed: {err}; {remedy}") from err
    covered = sum(len(p) for p in parts)
    if covered != len(keys):
        raise ValueError(f"k-labels partition with {num_clients} clients × {k} labels leaves "
                         f"{len(keys) - covered} of {len(keys)} samples on no client (some {column} "
                         f"values are assigned to nobody); use more clients or more labels per client")
    return _check_no_empty_client(parts, "k-labels", remedy)


def natural_client_names(keys: Sequence) -> list[str]:
    """The key each client of a ``natural`` partition holds, client 0 first (numeric keys in numeric order)."""
    return [str(v) for v in _distinct(keys)]


def natural(keys: Sequence, num_clients: int | None = None, *, column: str = "group") -> Partition:
    """One client per distinct key, in sorted key order; ``num_clients``, if given, must match."""
    if len(keys) == 0:
        raise ValueError(f"natural partition by {column!r}: there are no examples to split")
    names = natural_client_names(keys)
    if num_clients is not None and num_clients != len(names):
        raise ValueError(f"natural partition by {column!r} has {len(names)} clients ({', '.join(names)}); "
                         f"set num_clients to {len(names)} or leave it unset")
    _, partitioners = _flwr()
    with contextlib.redirect_stderr(io.StringIO()):  # its unconditional tqdm bar would break --quiet
        # raw keys (ints stay ints): flwr orders clients by sorted key, as natural_client_names does
        parts = _run(partitioners.NaturalIdPartitioner(partition_by="key"), keys, len(names))
    return _check_no_empty_client(parts, "natural", "this cannot happen for a key present in the data")


def label_disjoint(keys: Sequence, num_clients: int, labels_per_client: int, *, column: str = "label") -> Partition:
    """Client k holds every example whose key is among the sorted keys k·L .. k·L + L − 1."""
    _check_clients_for(len(keys), num_clients, "label-disjoint")
    classes = _distinct(keys)
    if labels_per_client < 1 or num_clients * labels_per_client != len(classes):
        raise ValueError(f"label-disjoint partition needs num_clients × labels_per_client = {len(classes)} "
                         f"(the distinct {column} values), got {num_clients} × {labels_per_client}")
    values = np.asarray(keys)
    return [np.flatnonzero(np.isin(values, classes[k * labels_per_client:(k + 1) * labels_per_client]))
            .astype(np.int64) for k in range(num_clients)]


def subsample(parts: Partition, fraction: float, seed: int) -> Partition:
    """Keep a seeded random ``fraction`` of each client's examples (at least one), without replacement.

    Each client keeps round(fraction · n_k) of its own examples, so the split's shape (who holds which
    keys, relative client sizes) is preserved; ``fraction = 1`` keeps everything. The draw for client
    k depends only on (seed, k).
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"subsample fraction must be in (0, 1], got {fraction}")
    _check_seed(seed)
    out = []
    for k, idx in enumerate(parts):
        keep = max(1, int(round(fraction * len(idx))))
        if keep >= len(idx):
            out.append(idx.copy())
            continue
        rng = np.random.default_rng([seed, k])
        out.append(np.sort(rng.choice(idx, size=keep, replace=False)))
    return out


def _distinct(keys: Sequence) -> list:
    """The distinct keys in sorted order, as Python values (so 2 sorts before 10)."""
    return sorted(set(np.asarray(keys).tolist()))


def _check_clients_for(num_examples: int, num_clients, scheme: str) -> None:
    if isinstance(num_clients, bool) or not isinstance(num_clients, (int, np.integer)) or num_clients < 1:
        raise ValueError(f"{scheme} partition needs num_clients >= 1, got {num_clients!r}")
    if num_examples == 0:
        raise ValueError(f"{scheme} partition: there are no examples to split")
    if num_clients > num_examples:
        raise ValueError(f"{num_clients} clients for {num_examples} samples: client {num_examples} and later would "
                         f"get no samples; use at most {num_examples} clients")


def _check_seed(seed) -> None:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"partition seed must be an integer >= 0, got {seed!r}")


def _check_no_empty_client(parts: Partition, scheme: str, remedy: str) -> Partition:
    for client, idx in enumerate(parts):
        if len(idx) == 0:
            raise ValueError(f"{scheme} partition leaves client {client} of {len(parts)} with no samples; {remedy}")
    return parts


def _flwr():
    try:
        import datasets
        from flwr_datasets import partitioner
    except ImportError as err:
        raise ImportError("client partitions need flwr-datasets: `pip install flwr-datasets`") from err
    return datasets, partitioner


def _run(partitioner, keys: Sequence, num_clients: int, shuffle_seed: int | None = None) -> Partition:
    """Attach an (index, key) dataset to a partitioner and read each client's sorted row indices.

    ``[:]["index"]`` reads the column in one Arrow call (datasets 4.x ``ds["col"]`` is a lazy Column
    that numpy would iterate row by row).
    """
    datasets, _ = _flwr()
    table = datasets.Dataset.from_dict({"index": np.arange(len(keys)), "key": keys})
    partitioner.dataset = table if shuffle_seed is None else table.shuffle(seed=shuffle_seed)
    return [np.sort(np.asarray(partitioner.load_partition(k)[:]["index"], dtype=np.int64))
            for k in range(num_clients)]
