"""Federated splits: label-disjoint clients hold exactly (and all of) their labels; IID and Dirichlet
partitions cover every sample exactly once."""

from __future__ import annotations

import numpy as np
import pytest

from rolora.toy.partition import label_disjoint, make_partition, subsample


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


def _assert_exact_cover(parts, n):
    everything = np.concatenate(parts)
    assert len(everything) == n, "some sample is missing or duplicated"
    np.testing.assert_array_equal(np.sort(everything), np.arange(n))


@pytest.mark.parametrize("split", ["iid", "dirichlet"])
def test_iid_and_dirichlet_cover_every_sample_once(labels, split):
    parts = make_partition(split, labels, seed=3, num_clients=7, alpha_dir=0.3)
    assert len(parts) == 7
    _assert_exact_cover(parts, len(labels))
    if split == "iid":
        assert max(map(len, parts)) - min(map(len, parts)) <= 1
        # shuffled: each IID shard holds (nearly) every label
        assert all(len(np.unique(labels[p])) == 10 for p in parts)
    again = make_partition(split, labels, seed=3, num_clients=7, alpha_dir=0.3)
    for a, b in zip(parts, again):
        np.testing.assert_array_equal(a, b)


def test_dirichlet_skew_follows_alpha(labels):
    def mean_top_label_share(alpha):
        parts = make_partition("dirichlet", labels, seed=0, num_clients=5, alpha_dir=alpha)
        return np.mean([np.bincount(labels[p], minlength=10).max() / len(p) for p in parts])
    assert mean_top_label_share(0.1) > mean_top_label_share(100.0) + 0.2


def test_subsample_keeps_a_seeded_fraction_of_each_client(labels):
    parts = label_disjoint(labels, 5, 2)
    small = subsample(parts, 0.1, seed=1)
    for full, sub in zip(parts, small):
        assert len(sub) == round(0.1 * len(full))
        assert np.isin(sub, full).all() and len(np.unique(sub)) == len(sub)
    for a, b in zip(small, subsample(parts, 0.1, seed=1)):
        np.testing.assert_array_equal(a, b)
    assert any(not np.array_equal(a, b) for a, b in zip(small, subsample(parts, 0.1, seed=2)))
    for a, b in zip(parts, subsample(parts, 1.0, seed=1)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("bad", [dict(split="3x3"), dict(split="dirichlet", alpha_dir=0.0)])
def test_bad_split_arguments_raise(labels, bad):
    with pytest.raises(ValueError):
        make_partition(labels=labels, seed=0, **bad)
    with pytest.raises(ValueError, match="fraction"):
        subsample([np.arange(5)], 0.0, seed=0)
