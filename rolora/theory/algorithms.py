"""The analysed federated algorithms, one round at a time, on sufficient statistics (fast path).

Paper convention (x ↦ x A B, A d×r, B r×k; rank 1: a, bᵀ). Uniform client weights (equal m).
The slow raw-data versions live in ``reference`` and are parity-tested against these.

- RoLoRA, the analysed "Alt-min-GD" form: each round, every client minimises f_i over B exactly
  (B_i = (AᵀS_iA)⁻¹AᵀC_i), the server averages; then every client takes ``local_steps`` gradient
  steps (step size η) on A with that shared B, the server averages and re-orthonormalises (QR).
  ``local_steps=1`` is the algorithm of the theorem. The theorem needs η‖b*‖² <= 1 (the population
  step then contracts sin θ by 1 − η‖b*‖²cos²θ); we use η = eta_scale/‖b*‖² with eta_scale = 0.5 by
  default. QR is a reparametrisation: B is multiplied by R, so the product A·B is the averaged one.
- FFA-LoRA: A frozen at A⁰, only the (exact, averaged) B step; this is FFA-LoRA's best case.
- FedAvg-LoRA: ``local_steps`` simultaneous gradient steps on (A, B) per client, both averaged.
- Centralised: gradient descent on the pooled objective, and the exact rank-r optimum (reduced-rank
  regression on the pooled statistics).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from rolora.theory.data import Problem
from rolora.theory.metrics import (
    check_factors,
    gradients,
    population_error,
    sin_theta,
    training_loss,
)

METHODS = ("rolora", "ffa", "fedavg", "centralised_gd")


def _check_step(eta: float, local_steps: int) -> None:
    if not eta > 0:
        raise ValueError(f"step size eta must be > 0, got {eta}")
    if int(local_steps) != local_steps or local_steps < 1:
        raise ValueError(f"local_steps must be a positive integer, got {local_steps}")


def client_exact_b(problem: Problem, A: np.ndarray) -> np.ndarray:
    """Every client's exact minimiser B_i = argmin_B f_i(A, B) = (AᵀS_iA)⁻¹ AᵀC_i, shape (N, r, k)."""
    gram = A.T[None] @ problem.S @ A  # (N, r, r)
    rhs = A.T[None] @ problem.C  # (N, r, k)
    try:
        return np.linalg.solve(gram, rhs)
    except np.linalg.LinAlgError:
        bad = [i for i in range(problem.n_clients) if np.linalg.matrix_rank(gram[i]) < A.shape[1]]
        raise ValueError(f"exact B step: AᵀS_iA is singular for client(s) {bad}") from None


def b_step_exact(problem: Problem, A: np.ndarray) -> np.ndarray:
    """Server B ← mean_i B_i of the clients' exact minimisers."""
    return client_exact_b(problem, A).mean(axis=0)


def rolora_round(
    problem: Problem, A: np.ndarray, B: np.ndarray, eta: float, local_steps: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """One round of the analysed RoLoRA (exact B step, then local GD on A, average, QR)."""
    check_factors(problem, A, B)
    _check_step(eta, local_steps)
    B = b_step_exact(problem, A)
    A_clients = np.broadcast_to(A, (problem.n_clients, *A.shape))
    for _ in range(local_steps):
        residual = problem.C - problem.S @ A_clients @ B  # (N, d, k)
        A_clients = A_clients + eta * residual @ B.T  # A − η ∇_A f_i
    Q, R = np.linalg.qr(A_clients.mean(axis=0))
    return Q, R @ B


def ffa_round(problem: Problem, A: np.ndarray, B: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One round of FFA-LoRA: A stays exactly as it is, B ← mean of exact client minimisers."""
    check_factors(problem, A, B)
    return A, b_step_exact(problem, A)


def fedavg_round(
    problem: Problem, A: np.ndarray, B: np.ndarray, eta: float, local_steps: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """One round of FedAvg-LoRA: K simultaneous GD steps on (A, B) per client, average both."""
    check_factors(problem, A, B)
    _check_step(eta, local_steps)
    n = problem.n_clients
    A_c = np.broadcast_to(A, (n, *A.shape))
    B_c = np.broadcast_to(B, (n, *B.shape))
    for _ in range(local_steps):
        residual = problem.C - problem.S @ A_c @ B_c
        A_c, B_c = A_c + eta * residual @ np.swapaxes(B_c, 1, 2), B_c + eta * np.swapaxes(A_c, 1, 2) @ residual
    return A_c.mean(axis=0), B_c.mean(axis=0)


def centralised_gd_step(
    problem: Problem, A: np.ndarray, B: np.ndarray, eta: float
) -> tuple[np.ndarray, np.ndarray]:
    """One simultaneous gradient step on both factors of the pooled objective (1/N) Σ f_i."""
    check_factors(problem, A, B)
    _check_step(eta, 1)
    grad_A, grad_B = gradients(problem, A, B)
    return A - eta * grad_A, B - eta * grad_B


def centralised_solution(problem: Problem) -> tuple[np.ndarray, np.ndarray]:
    """The exact minimiser of the pooled objective over rank-r products (reduced-rank regression).

    With pooled S, C: minimise ½tr(WᵀSW) − tr(WᵀC) s.t. rank W <= r. Writing M = S^{-1/2}C, the
    optimum is W = S^{-1/2}M_r (M_r the best rank-r approximation, Eckart-Young). Returned as
    A (d×r, orthonormal) and B = AᵀW. Needs pooled S invertible (N·m >= d).
    """
    S = problem.S.mean(axis=0)
    C = problem.C.mean(axis=0)
    evals, evecs = np.linalg.eigh(S)
    if evals[0] <= 1e-12 * evals[-1]:
        raise ValueError(f"pooled X covariance is singular (N·m < d?); smallest eigenvalue {evals[0]:.3g}")
    inv_sqrt = (evecs / np.sqrt(evals)) @ evecs.T
    U, s, Vt = np.linalg.svd(inv_sqrt @ C, full_matrices=False)
    r = problem.config.r
    W = inv_sqrt @ (U[:, :r] * s[:r]) @ Vt[:r]
    A = np.linalg.svd(W, full_matrices=False)[0][:, :r]
    return A, A.T @ W


@dataclass
class History:
    """Metrics per round, index 0 = the initial point: sin θ, population error, training loss."""

    sin_theta: list[float] = field(default_factory=list)
    population_error: list[float] = field(default_factory=list)
    training_loss: list[float] = field(default_factory=list)

    def record(self, problem: Problem, A: np.ndarray, B: np.ndarray) -> None:
        """Append the metrics of the model (A, B)."""
        self.sin_theta.append(sin_theta(A, problem.A_star))
        self.population_error.append(population_error(problem, A, B))
        self.training_loss.append(training_loss(problem, A, B))

    def as_arrays(self) -> dict[str, np.ndarray]:
        """The recorded metrics as NumPy arrays, keyed by metric name."""
        return {k: np.asarray(v) for k, v in vars(self).items()}


def round_function(method: str, eta: float, local_steps: int) -> Callable:
    """(problem, A, B) -> (A, B) for one round of ``method`` (one of METHODS)."""
    if method == "rolora":
        return lambda p, A, B: rolora_round(p, A, B, eta, local_steps)
    if method == "ffa":
        return ffa_round
    if method == "fedavg":
        return lambda p, A, B: fedavg_round(p, A, B, eta, local_steps)
    if method == "centralised_gd":
        return lambda p, A, B: centralised_gd_step(p, A, B, eta)
    raise ValueError(f"unknown method {method!r}; expected one of {METHODS}")


def run(
    problem: Problem,
    method: str,
    A0: np.ndarray,
    rounds: int,
    eta: float = 1.0,
    local_steps: int = 1,
    B0: np.ndarray | None = None,
) -> tuple[History, np.ndarray, np.ndarray]:
    """Run ``rounds`` rounds of ``method`` from (A0, B0 = 0 by default); returns (history, A, B)."""
    if rounds < 0:
        raise ValueError(f"rounds must be >= 0, got {rounds}")
    step = round_function(method, eta, local_steps)
    A = np.array(A0, dtype=float)
    B = np.zeros((problem.config.r, problem.config.k)) if B0 is None else np.array(B0, dtype=float)
    check_factors(problem, A, B)
    history = History()
    history.record(problem, A, B)
    for _ in range(rounds):
        A, B = step(problem, A, B)
        history.record(problem, A, B)
    return history, A, B
