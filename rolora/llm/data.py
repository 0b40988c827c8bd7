"""Datasets for rolora.llm: the public entry points, and the fixed train / validation / test split.

Where things live: the containers in :mod:`rolora.llm.text_dataset`, the packaged sets in
:mod:`rolora.llm.builtin_data`, local files in :mod:`rolora.llm.file_data`; this module gathers
them so callers import one place.
"""

from __future__ import annotations

import numpy as np

from rolora.llm.builtin_data import BUILTIN_DATASETS, GENERATION_DEFAULTS, load_builtin
from rolora.llm.file_data import load_file, load_instructions
from rolora.llm.text_dataset import InstructionDataset, TextDataset, deduplicate

__all__ = [
    "BUILTIN_DATASETS", "GENERATION_DEFAULTS", "InstructionDataset", "TextDataset", "deduplicate",
    "load_builtin", "load_file", "load_instructions", "split", "split_sizes",
]


def _count(size, n: int, what: str) -> int:
    """A split size given as a count (int >= 0) or a fraction of the set (float in [0, 1))."""
    if isinstance(size, (bool, np.bool_)):
        raise TypeError(f"{what} must be a count or a fraction, got {size!r}")
    if isinstance(size, (int, np.integer)):
        if size < 0:
            raise ValueError(f"{what} must be >= 0, got {size}")
        return int(size)
    if not 0 <= size < 1:
        raise ValueError(f"{what} as a fraction must lie in [0, 1), got {size}")
    return int(round(size * n))


def split_sizes(n: int, test_size, val_size) -> tuple[int, int, int]:
    """(train, val, test) row counts; at least one training row must remain."""
    n_test = _count(test_size, n, "test_size")
    n_val = _count(val_size, n, "val_size")
    if n_test + n_val >= n:
        raise ValueError(f"test ({n_test}) + validation ({n_val}) rows leave no training rows "
                         f"out of {n}; make test_size or val_size smaller")
    return n - n_test - n_val, n_val, n_test


def split(ds, test_size=0.1, val_size=0.1, seed: int = 0):
    """Split a :class:`TextDataset` or :class:`InstructionDataset` into (train, val, test).

    One seeded permutation of the rows: the first ``test_size`` rows are the test set, the next
    ``val_size`` the validation set, the rest training. So the test set depends only on
    (seed, len(ds), test_size): changing ``val_size`` never moves a row into or out of the test set.
    Sizes are counts (int) or fractions (float, rounded). Not stratified. Each part keeps the
    original row order (sorted indices).
    """
    n = len(ds)
    _, n_val, n_test = split_sizes(n, test_size, val_size)
    order = np.random.default_rng(seed).permutation(n)
    test = np.sort(order[:n_test])
    val = np.sort(order[n_test:n_test + n_val])
    train = np.sort(order[n_test + n_val:])
    return ds.subset(train), ds.subset(val), ds.subset(test)
