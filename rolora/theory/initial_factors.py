"""Initialisations of the down-projection A (the analysis starts from b⁰ = 0, i.e. B⁰ = 0)."""

from __future__ import annotations

import numpy as np

from rolora.theory.sampling import orthonormal_columns, orthonormal_complement


def init_at_angle(A_star: np.ndarray, delta0: float, rng: np.random.Generator) -> np.ndarray:
    """Orthonormal A⁰ (d×r) whose every principal angle θ to span(A*) has sin θ = delta0.

    A⁰ = A*·cos θ + U·sin θ with U orthonormal and orthogonal to A*; needs d >= 2r and 0 <= delta0 < 1
    (delta0 = 1 would start orthogonal, where the b-step gives b = 0 and nothing ever moves).
    """
    if not 0.0 <= delta0 < 1.0:
        raise ValueError(f"delta0 must be in [0, 1), got {delta0}")
    d, r = A_star.shape
    U = orthonormal_complement(rng, A_star, r)
    return A_star * np.sqrt(1.0 - delta0**2) + U * delta0


def random_init(d: int, r: int, rng: np.random.Generator) -> np.ndarray:
    """A uniformly random orthonormal A⁰; in high dimension sin θ(A⁰, A*) ≈ 1 − O(r/d)."""
    return orthonormal_columns(rng, d, r)
