"""Seeded random building blocks. Every function takes an explicit ``numpy.random.Generator``."""

from __future__ import annotations

import numpy as np


def orthonormal_columns(rng: np.random.Generator, rows: int, cols: int) -> np.ndarray:
    """A uniformly random ``rows×cols`` matrix with orthonormal columns (QR of a Gaussian)."""
    if cols > rows:
        raise ValueError(f"cannot have {cols} orthonormal columns in dimension {rows}")
    q, r = np.linalg.qr(rng.standard_normal((rows, cols)))
    # Fix QR's sign ambiguity so that the distribution is exactly uniform (Haar).
    return q * np.sign(np.diag(r))


def orthonormal_complement(rng: np.random.Generator, basis: np.ndarray, cols: int) -> np.ndarray:
    """Random orthonormal columns orthogonal to the (orthonormal) columns of ``basis``."""
    d, r = basis.shape
    if r + cols > d:
        raise ValueError(f"need {r}+{cols} <= d={d} for a complement of {cols} columns")
    g = rng.standard_normal((d, cols))
    g -= basis @ (basis.T @ g)
    g -= basis @ (basis.T @ g)  # second pass: re-orthogonalise against rounding
    q, _ = np.linalg.qr(g)
    return q


def unit_frobenius(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """A Gaussian matrix rescaled to Frobenius norm 1 (a uniformly random direction)."""
    g = rng.standard_normal(shape)
    return g / np.linalg.norm(g)


def wishart_identity(rng: np.random.Generator, dof: int, dim: int) -> np.ndarray:
    """One draw of Wishart(dof, I_dim), i.e. the law of ZᵀZ for Z with ``dof`` iid N(0, I) rows.

    Bartlett decomposition: W = T Tᵀ with T lower-triangular, T_ii = sqrt(χ²(dof − i)) and
    T_ij ~ N(0, 1) below the diagonal. Costs O(dim³) whatever ``dof`` is, which is what lets the
    experiments use population-sized sample counts (m = 10⁵ per client) at no cost.
    """
    if dof < dim:
        raise ValueError(f"the Bartlett sampler needs dof >= dim (got dof={dof}, dim={dim})")
    t = np.tril(rng.standard_normal((dim, dim)), k=-1)
    t[np.diag_indices(dim)] = np.sqrt(rng.chisquare(dof - np.arange(dim)))
    return t @ t.T
