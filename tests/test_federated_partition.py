"""rolora.federated.partition: every scheme is complete, disjoint and seeded; Dirichlet skew follows
alpha; k labels; natural groups; label-disjoint blocks; subsampling; clear errors for bad requests."""

import numpy as np
import pytest

from rolora.federated.partition import SCHEMES, natural_client_names, partition, subsample


def _keys(n=600, classes=4, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, classes, size=n)


def _skew(keys, parts) -> float:
    """Mean total-variation distance between each client's key mix and the whole set's."""
    classes = keys.max() + 1
    overall = np.bincount(keys, minlength=classes) / len(keys)
    return float(np.mean([0.5 * np.abs(np.bincount(keys[p], minlength=classes) / len(p) - overall).sum()
                          for p in parts]))


CASES = [("iid", 8, {}), ("dirichlet", 8, {"alpha": 0.3}), ("k-labels", 8, {"labels_per_client": 2}),
         ("natural", 4, {}), ("label-disjoint", 2, {"labels_per_client": 2})]


def test_the_cases_cover_every_scheme():
    assert sorted(scheme for scheme, _, _ in CASES) == sorted(SCHEMES)


@pytest.mark.parametrize("scheme,clients,options", CASES)
def test_every_scheme_is_complete_disjoint_sorted_and_seeded(scheme, clients, options):
    keys = _keys()
    parts = partition(scheme, keys, clients, seed=5, **options)
    assert len(parts) == clients and all(len(p) > 0 for p in parts)
    assert all(p.dtype == np.int64 and np.all(np.diff(p) > 0) for p in parts)
    everything = np.concatenate(parts)
    assert len(everything) == len(keys), "some example is held by two clients or by none"
    np.testing.assert_array_equal(np.sort(everything), np.arange(len(keys)))
    again = partition(scheme, keys, clients, seed=5, **options)
    assert all(np.array_equal(a, b) for a, b in zip(parts, again))


@pytest.mark.parametrize("scheme,options", [("iid", {}), ("dirichlet", {"alpha": 0.3}),
                                            ("k-labels", {"labels_per_client": 2})])
def test_the_seed_changes_the_random_schemes(scheme, options):
    keys = _keys()
    one, other = (partition(scheme, keys, 8, seed=s, **options) for s in (1, 2))
    assert any(not np.array_equal(a, b) for a, b in zip(one, other))


def test_iid_shards_are_equal_sized_and_mixed():
    keys = _keys(n=603)
    parts = partition("iid", keys, 8, seed=1)
    assert {len(p) for p in parts} == {75, 76}
    assert _skew(keys, parts) < 0.15


def test_iid_reads_only_the_number_of_examples():
    by_keys = partition("iid", _keys(n=50), 4, seed=3)
    by_range = partition("iid", range(50), 4, seed=3)
    assert all(np.array_equal(a, b) for a, b in zip(by_keys, by_range))


def test_dirichlet_skew_grows_as_alpha_shrinks():
    keys = _keys(n=2000)
    skew = {a: _skew(keys, partition("dirichlet", keys, 10, seed=0, alpha=a)) for a in (0.1, 100.0)}
    iid = _skew(keys, partition("iid", keys, 10, seed=0))
    assert skew[0.1] > 0.4 > 0.1 > skew[100.0]
    assert skew[0.1] > 3 * iid


def test_dirichlet_honours_the_minimum_client_size():
    keys = _keys(n=1000)
    assert min(map(len, partition("dirichlet", keys, 10, seed=0, alpha=0.2))) < 25  # the bound below binds
    parts = partition("dirichlet", keys, 10, seed=0, alpha=0.2, min_partition_size=25)
    assert min(map(len, parts)) >= 25


def test_k_labels_gives_each_client_exactly_k_keys_and_client_k_key_k():
    keys = _keys()
    for k in (1, 2, 3):
        parts = partition("k-labels", keys, 8, seed=0, labels_per_client=k)
        held = [set(keys[p].tolist()) for p in parts]
        assert [len(h) for h in held] == [k] * 8
        assert all(client % 4 in h for client, h in enumerate(held))  # "first-deterministic"


def test_natural_gives_one_client_per_key_in_sorted_order():
    groups = [["north", "south", "east"][i % 3] for i in range(30)]
    parts = partition("natural", groups, None, seed=0)
    names = natural_client_names(groups)
    assert names == ["east", "north", "south"]
    for name, p in zip(names, parts):
        assert [groups[i] for i in p] == [name] * groups.count(name)
    keys = _keys(n=300, classes=12)  # numeric keys sort numerically: 2 before 10
    assert natural_client_names(keys) == [str(c) for c in range(12)]
    assert [set(keys[p].tolist()) for p in partition("natural", keys, 12, seed=0)] == [{c} for c in range(12)]


@pytest.mark.parametrize("clients,per", [(5, 2), (10, 1), (2, 5)])
def test_label_disjoint_clients_hold_all_examples_of_exactly_their_block(clients, per):
    keys = _keys(n=1000, classes=10)
    parts = partition("label-disjoint", keys, clients, seed=0, labels_per_client=per)
    for k, idx in enumerate(parts):
        own = list(range(k * per, (k + 1) * per))
        np.testing.assert_array_equal(idx, np.flatnonzero(np.isin(keys, own)))


def test_label_disjoint_blocks_follow_the_sorted_keys_not_their_values():
    keys = np.array([30, 7, 100, 7, 30, 2])
    parts = partition("label-disjoint", keys, 2, seed=0, labels_per_client=2)
    assert [p.tolist() for p in parts] == [[1, 3, 5], [0, 2, 4]]


def test_subsample_keeps_a_seeded_fraction_of_each_client():
    parts = partition("label-disjoint", _keys(n=3000, classes=10), 5, seed=0, labels_per_client=2)
    small = subsample(parts, 0.1, seed=1)
    for full, sub in zip(parts, small):
        assert len(sub) == round(0.1 * len(full))
        assert np.isin(sub, full).all() and len(np.unique(sub)) == len(sub) and np.all(np.diff(sub) > 0)
    assert all(np.array_equal(a, b) for a, b in zip(small, subsample(parts, 0.1, seed=1)))
    assert any(not np.array_equal(a, b) for a, b in zip(small, subsample(parts, 0.1, seed=2)))
    assert all(np.array_equal(a, b) for a, b in zip(parts, subsample(parts, 1.0, seed=1)))
    assert [len(p) for p in subsample([np.arange(3)], 0.01, seed=0)] == [1]  # never empties a client


@pytest.mark.parametrize("call,words", [
    (lambda k: partition("shards", k, 4, seed=0), "unknown partition scheme 'shards'; choose one of iid, "),
    (lambda k: partition("iid", k, 0, seed=0), "iid partition needs num_clients >= 1, got 0"),
    (lambda k: partition("dirichlet", k, None, seed=0), "dirichlet partition needs num_clients >= 1, got None"),
    (lambda k: partition("iid", k[:30], 40, seed=0),
     "40 clients for 30 samples: client 30 and later would get no samples; use at most 30 clients"),
    (lambda k: partition("k-labels", k[:0], 2, seed=0), "k-labels partition: there are no examples to split"),
    (lambda k: partition("iid", k, 4, seed=-1), "partition seed must be an integer >= 0, got -1"),
    (lambda k: partition("dirichlet", k, 4, seed=0, alpha=0), "Dirichlet alpha must be > 0, got 0"),
    (lambda k: partition("dirichlet", k, 4, seed=0, min_partition_size=151),
     r"min_partition_size must lie in 1..150 \(600 examples over 4 clients\), got 151"),
    (lambda k: partition("k-labels", k, 8, seed=0, labels_per_client=5),
     r"labels_per_client must lie in 1..4 \(the label values\), got 5"),
    (lambda k: partition("k-labels", k, 2, seed=0, labels_per_client=1),
     "leaves .* of 600 samples on no client .*use more clients or more labels per client"),
    (lambda k: partition("natural", k, 5, seed=0, column="site"),
     r"natural partition by 'site' has 4 clients \(0, 1, 2, 3\); set num_clients to 4 or leave it unset"),
    (lambda k: partition("label-disjoint", k, 3, seed=0, labels_per_client=1),
     r"label-disjoint partition needs num_clients × labels_per_client = 4 \(the distinct label values\), got 3 × 1"),
])
def test_bad_requests_name_what_is_wrong(call, words):
    with pytest.raises(ValueError, match=words):
        call(_keys())


def test_a_dirichlet_split_leaving_a_client_empty_names_the_client_and_a_fix():
    keys = _keys(n=30, classes=2)
    with pytest.raises(ValueError, match=r"dirichlet partition leaves client \d+ of 25 with no samples; raise alpha "
                                         r"\(now 0.01\), use fewer clients \(now 25\) or another seed"):
        partition("dirichlet", keys, 25, seed=0, alpha=0.01)


def test_a_dirichlet_minimum_never_met_says_so():
    keys = _keys(n=200, classes=4)
    with pytest.raises(ValueError, match=r"gives some of 10 clients fewer than min_partition_size = 20 samples in "
                                         r"every draw \(without the minimum, client \d+ gets \d+\); lower the minimum"):
        partition("dirichlet", keys, 10, seed=0, alpha=0.05, min_partition_size=20)


def test_subsample_rejects_a_fraction_outside_0_1():
    for bad in (0.0, 1.5):
        with pytest.raises(ValueError, match=f"subsample fraction must be in \\(0, 1\\], got {bad}"):
            subsample([np.arange(5)], bad, seed=0)
