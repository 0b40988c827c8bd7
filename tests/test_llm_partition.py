"""rolora.llm client partitions: complete, disjoint, seeded; Dirichlet skew; k labels; natural groups;
clear errors for empty clients and impossible requests."""

import numpy as np
import pytest

from rolora.llm.data import InstructionDataset, TextDataset
from rolora.llm.partition import natural_client_names, partition


def _ds(n=600, classes=4, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, size=n)
    groups = [["north", "south", "east"][i % 3] for i in range(n)]
    return TextDataset([f"t{i}" for i in range(n)], None, labels, [f"c{c}" for c in range(classes)], groups, "syn")


def _label_skew(ds, parts):
    """Mean total-variation distance between each client's label mix and the whole set's."""
    overall = np.bincount(ds.labels, minlength=ds.num_classes) / len(ds)
    return float(np.mean([
        0.5 * np.abs(np.bincount(ds.labels[p], minlength=ds.num_classes) / len(p) - overall).sum() for p in parts
    ]))


@pytest.mark.parametrize("scheme,options", [
    ("iid", {}), ("dirichlet", {"alpha": 0.3}), ("k-labels", {"labels_per_client": 2}), ("natural", {}),
])
def test_every_scheme_covers_the_set_once_and_is_seeded(scheme, options):
    ds = _ds()
    clients = 3 if scheme == "natural" else 8
    parts = partition(ds, scheme, clients, seed=5, **options)
    assert len(parts) == clients and all(len(p) > 0 for p in parts)
    everything = np.concatenate(parts)
    assert everything.dtype == np.int64 and len(everything) == len(ds)
    assert np.array_equal(np.sort(everything), np.arange(len(ds)))
    assert all(np.array_equal(a, b) for a, b in zip(parts, partition(ds, scheme, clients, seed=5, **options)))


def test_iid_shards_are_equal_sized_and_the_seed_matters():
    ds = _ds()
    parts = partition(ds, "iid", 8, seed=1)
    assert {len(p) for p in parts} == {75}
    other = partition(ds, "iid", 8, seed=2)
    assert not np.array_equal(parts[0], other[0])
    assert _label_skew(ds, parts) < 0.15


def test_dirichlet_skew_grows_as_alpha_shrinks():
    ds = _ds(n=2000)
    skew = {a: _label_skew(ds, partition(ds, "dirichlet", 10, seed=0, alpha=a)) for a in (0.1, 100.0)}
    iid = _label_skew(ds, partition(ds, "iid", 10, seed=0))
    assert skew[0.1] > 0.4 > 0.1 > skew[100.0]
    assert skew[0.1] > 3 * iid


def test_k_labels_gives_each_client_exactly_k_classes():
    ds = _ds()
    for k in (1, 2):
        parts = partition(ds, "k-labels", 8, seed=0, labels_per_client=k)
        assert [len(set(ds.labels[p].tolist())) for p in parts] == [k] * 8


def test_k_labels_that_leave_a_class_unassigned_is_an_error():
    with pytest.raises(ValueError, match="samples on no client.*more clients or more labels per client"):
        partition(_ds(classes=4), "k-labels", 2, seed=0, labels_per_client=1)
    with pytest.raises(ValueError, match="labels_per_client must lie in 1..4"):
        partition(_ds(classes=4), "k-labels", 8, seed=0, labels_per_client=5)


def test_natural_gives_one_client_per_group_in_sorted_order():
    ds = _ds()
    parts = partition(ds, "natural", None, seed=0)
    names = natural_client_names(ds)
    assert names == ["east", "north", "south"]
    for name, p in zip(names, parts):
        assert {ds.groups[i] for i in p} == {name}
        assert len(p) == ds.groups.count(name)
    many = _ds(n=300, classes=12)  # client order is numeric (2 before 10), as natural_client_names says
    by_label = partition(many, "natural", None, seed=0, column="label")
    assert natural_client_names(many, "label") == [str(c) for c in range(12)]
    assert [set(many.labels[p].tolist()) for p in by_label] == [{c} for c in range(12)]


def test_natural_errors_name_the_fix():
    ds = _ds()
    with pytest.raises(ValueError, match=r"3 clients \(east, north, south\); set num_clients to 3"):
        partition(ds, "natural", 5, seed=0)
    bare = TextDataset(["a", "b"], None, np.array([0, 1]), ["x", "y"], None, "bare")
    with pytest.raises(ValueError, match="bare has no group column"):
        partition(bare, "natural", None, seed=0)


def test_a_partition_leaving_a_client_empty_names_the_client_and_a_fix():
    small = _ds(n=30, classes=2)
    with pytest.raises(ValueError, match=r"dirichlet partition leaves client \d+ of 25 with no samples; raise alpha"):
        partition(small, "dirichlet", 25, seed=0, alpha=0.01)
    with pytest.raises(ValueError, match="client 30 and later would get no samples; use at most 30 clients"):
        partition(small, "iid", 40, seed=0)


def test_bad_scheme_column_and_alpha():
    ds = _ds()
    with pytest.raises(ValueError, match="unknown partition scheme 'shards'"):
        partition(ds, "shards", 4, seed=0)
    with pytest.raises(ValueError, match="unknown partition column 'user'"):
        partition(ds, "dirichlet", 4, seed=0, column="user")
    with pytest.raises(ValueError, match="alpha must be > 0"):
        partition(ds, "dirichlet", 4, seed=0, alpha=0)


def test_instruction_data_splits_iid_only():
    ds = InstructionDataset([f"i{k}" for k in range(10)], [""] * 10, [f"o{k}" for k in range(10)], "alpaca")
    parts = partition(ds, "iid", 3, seed=0)
    assert sorted(np.concatenate(parts).tolist()) == list(range(10)) and [len(p) for p in parts] == [4, 3, 3]
    with pytest.raises(ValueError, match="alpaca has no labels or groups .*only 'iid'"):
        partition(ds, "dirichlet", 3, seed=0)
