"""Per-round metrics: principal angles, population error, training loss, and the exact gradients.

All take the paper-convention factors A (d×r) and B (r×k) and a ``Problem``'s sufficient statistics.
"""

from __future__ import annotations

import numpy as np

from rolora.theory.data import Problem


def check_factors(problem: Problem, A: np.ndarray, B: np.ndarray) -> None:
    """Raise ValueError naming the factor whose shape does not fit the problem."""
    d, k, r = problem.config.d, problem.config.k, problem.config.r
    if A.shape != (d, r):
        raise ValueError(f"A has shape {A.shape}, expected (d, r) = {(d, r)}")
    if B.shape != (r, k):
        raise ValueError(f"B has shape {B.shape}, expected (r, k) = {(r, k)}")


def principal_sines(A: np.ndarray, A_star: np.ndarray) -> np.ndarray:
    """Sines of the principal angles between span(A) and span(A_star), largest first.

    Computed as the singular values of (I − P*)Q (Q, Q* orthonormal bases): accurate down to 1e-16,
    unlike sqrt(1 − cos²) which bottoms out near 1e-8.
    """
    if A.ndim != 2 or A.shape != A_star.shape:
        raise ValueError(f"A has shape {A.shape}; expected the shape of A_star {A_star.shape}")
    Q, _ = np.linalg.qr(A)
    Q_star, _ = np.linalg.qr(A_star)
    residual = Q - Q_star @ (Q_star.T @ Q)
    return np.clip(np.linalg.svd(residual, compute_uv=False), 0.0, 1.0)


def sin_theta(A: np.ndarray, A_star: np.ndarray) -> float:
    """sin of the largest principal angle (|sin θ(a, a*)| for rank 1)."""
    return float(principal_sines(A, A_star)[0])


def population_error(problem: Problem, A: np.ndarray, B: np.ndarray) -> float:
    """Client-averaged excess population risk ×2: (1/N) Σ_i E‖x(AB − A*B*_i)‖² with x ~ N(0, Σ_i).

    Homogeneous, isotropic case: ‖AB − A*B*‖_F², the quantity of the FFA-LoRA proposition.
    (The objective's own population value is half of this plus the noise term kσ²/2.)
    """
    delta = (A @ B)[None] - problem.A_star[None] @ problem.B_star
    return float(np.mean(np.einsum("nd,ndk->n", problem.cov_diag, delta**2)))


def training_loss(problem: Problem, A: np.ndarray, B: np.ndarray) -> float:
    """The federated objective (1/N) Σ_i f_i(A, B), f_i = (1/2m)‖Y_i − X_i A B‖_F², from statistics."""
    W = A @ B
    per_client = problem.yy - 2 * np.einsum("dk,ndk->n", W, problem.C) + np.einsum(
        "dk,ndk->n", W, problem.S @ W
    )
    return float(np.mean(per_client) / 2)


def client_residuals(problem: Problem, A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """R_i = C_i − S_i A B (N, d, k): minus the gradient of f_i with respect to the product W = AB."""
    return problem.C - problem.S @ (A @ B)


def gradients(problem: Problem, A: np.ndarray, B: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exact gradients (∇_A, ∇_B) of the federated objective (1/N) Σ_i f_i at (A, B)."""
    R = client_residuals(problem, A, B).mean(axis=0)
    return -R @ B.T, -A.T @ R


def population_gradients(problem: Problem, A: np.ndarray, B: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Gradients of the population objective F = (1/N) Σ_i E (1/2)‖y − x A B‖² (x ~ N(0, Σ_i))."""
    delta = (A @ B)[None] - problem.A_star[None] @ problem.B_star
    R = -(problem.cov_diag[:, :, None] * delta).mean(axis=0)
    return -R @ B.T, -A.T @ R
