"""rolora.llm client partitions: the keys come from a TextDataset's labels or groups (natural groups by
name), instruction data splits iid only, and a missing column is a clear error. The schemes' own
properties are tested in tests/test_federated_partition.py."""

import numpy as np
import pytest

from rolora.llm.data import InstructionDataset, TextDataset
from rolora.llm.partition import natural_client_names, partition


def _ds(n=600, classes=4, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, size=n)
    groups = [["north", "south", "east"][i % 3] for i in range(n)]
    return TextDataset([f"t{i}" for i in range(n)], None, labels, [f"c{c}" for c in range(classes)], groups, "syn")


@pytest.mark.parametrize("scheme,options", [
    ("iid", {}), ("dirichlet", {"alpha": 0.3}), ("k-labels", {"labels_per_client": 2}), ("natural", {}),
])
def test_every_config_scheme_covers_the_set_once(scheme, options):
    ds = _ds()
    clients = 3 if scheme == "natural" else 8
    parts = partition(ds, scheme, clients, seed=5, **options)
    assert len(parts) == clients and all(len(p) > 0 for p in parts)
    everything = np.concatenate(parts)
    assert everything.dtype == np.int64 and np.array_equal(np.sort(everything), np.arange(len(ds)))


def test_k_labels_and_dirichlet_read_the_label_column_by_default():
    ds = _ds()
    held = [set(ds.labels[p].tolist()) for p in partition(ds, "k-labels", 8, seed=0, labels_per_client=1)]
    assert held == [{k % 4} for k in range(8)]
    by_group = partition(ds, "k-labels", 3, seed=0, labels_per_client=1, column="group")
    assert [{ds.groups[i] for i in p} for p in by_group] == [{"east"}, {"north"}, {"south"}]


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
    with pytest.raises(ValueError, match=r"natural partition by 'group' has 3 clients \(east, north, south\); "
                                         r"set num_clients to 3"):
        partition(ds, "natural", 5, seed=0)
    bare = TextDataset(["a", "b"], None, np.array([0, 1]), ["x", "y"], None, "bare")
    with pytest.raises(ValueError, match="bare has no group column"):
        partition(bare, "natural", None, seed=0)


def test_bad_scheme_and_column():
    ds = _ds()
    with pytest.raises(ValueError, match="unknown partition scheme 'shards'"):
        partition(ds, "shards", 4, seed=0)
    with pytest.raises(ValueError, match="unknown partition column 'user'; choose 'label' or 'group'"):
        partition(ds, "dirichlet", 4, seed=0, column="user")


def test_instruction_data_splits_iid_only():
    ds = InstructionDataset([f"i{k}" for k in range(10)], [""] * 10, [f"o{k}" for k in range(10)], "alpaca")
    parts = partition(ds, "iid", 3, seed=0)
    assert sorted(np.concatenate(parts).tolist()) == list(range(10)) and [len(p) for p in parts] == [4, 3, 3]
    with pytest.raises(ValueError, match="alpaca has no labels or groups .*only 'iid'"):
        partition(ds, "dirichlet", 3, seed=0)
    with pytest.raises(ValueError, match="unknown partition scheme 'shards'"):  # the scheme is checked first
        partition(ds, "shards", 3, seed=0)
