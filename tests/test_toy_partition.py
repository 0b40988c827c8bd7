"""The toy's split names: 5x2 and 10x1 are label-disjoint (each client holds all images of its digits),
iid and dirichlet take the configured clients and alpha, and all four stay the splits the committed
results (docs/toy-mnist*.csv) were drawn with. Scheme properties: tests/test_federated_partition.py."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from rolora.toy.partition import DIRICHLET_MIN_CLIENT_SIZE, SPLITS, make_partition


@pytest.fixture(scope="module")
def labels() -> np.ndarray:
    """3,000 labels 0..9 in a seeded random order (a stand-in for MNIST's: the splits only read labels)."""
    return np.random.default_rng(123).integers(0, 10, size=3_000)


@pytest.mark.parametrize("split,clients,per", [("5x2", 5, 2), ("10x1", 10, 1)])
def test_label_disjoint_clients_hold_all_images_of_exactly_their_labels(labels, split, clients, per):
    parts = make_partition(split, labels, seed=0)
    assert len(parts) == clients
    for k, idx in enumerate(parts):
        own = set(range(k * per, (k + 1) * per))
        assert set(np.unique(labels[idx]).tolist()) == own, f"client {k}"
        np.testing.assert_array_equal(idx, np.flatnonzero(np.isin(labels, list(own))))


def _iid_by_hand(n: int, clients: int, seed: int) -> list[np.ndarray]:
    """The documented iid rule: contiguous equal shards (the first n mod clients one longer) of the
    seeded shuffle (``datasets``' ``Dataset.shuffle(seed)``: ``numpy.random.default_rng(seed).permutation``)."""
    return [np.sort(shard) for shard in np.array_split(np.random.default_rng(seed).permutation(n), clients)]


def _dirichlet_by_flwr(labels: np.ndarray, clients: int, seed: int, alpha: float) -> list[np.ndarray]:
    """flwr-datasets' DirichletPartitioner itself, on the labels, with the toy's minimum client size."""
    import datasets
    from flwr_datasets.partitioner import DirichletPartitioner

    flwr = DirichletPartitioner(num_partitions=clients, partition_by="label", alpha=alpha, seed=seed,
                                min_partition_size=DIRICHLET_MIN_CLIENT_SIZE, self_balancing=False, shuffle=True)
    flwr.dataset = datasets.Dataset.from_dict({"index": np.arange(len(labels)), "label": labels})
    with warnings.catch_warnings():  # it warns on every redraw
        warnings.simplefilter("ignore")
        return [np.sort(np.asarray(flwr.load_partition(k)["index"])) for k in range(clients)]


@pytest.mark.parametrize("split", ["iid", "dirichlet"])
def test_random_splits_are_the_ones_the_committed_results_used(labels, split):
    """The committed toy results were drawn with these rules: iid by a seeded shuffle cut into
    contiguous shards, dirichlet by flwr-datasets' DirichletPartitioner (min client size 10). A
    difference means they no longer reproduce: find out why before changing anything."""
    parts = make_partition(split, labels, seed=3, num_clients=7, alpha_dir=0.3)
    expected = (_iid_by_hand(len(labels), 7, 3) if split == "iid" else _dirichlet_by_flwr(labels, 7, 3, 0.3))
    assert [len(p) for p in parts] == [len(e) for e in expected]
    for k, (got, want) in enumerate(zip(parts, expected)):
        np.testing.assert_array_equal(got, want, err_msg=f"client {k}")


def test_dirichlet_clients_hold_at_least_the_minimum(labels):
    parts = make_partition("dirichlet", labels, seed=0, num_clients=20, alpha_dir=0.1)
    assert min(map(len, parts)) >= DIRICHLET_MIN_CLIENT_SIZE == 10


def test_every_split_name_builds_and_a_bad_one_is_named(labels):
    for split in SPLITS:
        assert sum(map(len, make_partition(split, labels, seed=0, num_clients=4))) == len(labels)
    with pytest.raises(ValueError, match=r"unknown split '3x3'; choose one of 5x2, 10x1, iid, dirichlet"):
        make_partition("3x3", labels, seed=0)
    with pytest.raises(ValueError, match="alpha must be > 0"):
        make_partition("dirichlet", labels, seed=0, alpha_dir=0.0)
