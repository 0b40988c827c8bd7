"""RoLoRA with local minibatch SGD on one factor: the setting of the non-convex convergence rate.

Objective (smooth, non-convex in (A, B)): the population federated low-rank regression loss
F(A, B) = (1/N) Σ_i E_{x~N(0,Σ_i)} ½‖y − x A B‖², y = x A*B*_i + e. Clients see fresh minibatches
(streaming data), so each local step is an unbiased stochastic gradient step of F_i on one factor.
RoLoRA here is the practical algorithm: B is trained on odd rounds, A on even rounds (B first, since
B⁰ = 0 makes ∇_A vanish); each client takes ``local_steps`` SGD steps with step size η on its
factor, the server averages it. No normalisation. The stationarity measure is the full gradient
‖∇F(A^t, B^t)‖² (both blocks), evaluated exactly; the theorem bounds min_{t<=T} of it by O(1/√T)
when η ∝ 1/√T, which is the schedule ``rate_curve`` uses.
"""

from __future__ import annotations

import numpy as np

from rolora.theory.data import Problem
from rolora.theory.metrics import population_gradients


def grad_norm_sq(problem: Problem, A: np.ndarray, B: np.ndarray) -> float:
    """‖∇_A F‖² + ‖∇_B F‖² of the population objective."""
    g_A, g_B = population_gradients(problem, A, B)
    return float(np.sum(g_A**2) + np.sum(g_B**2))


def rolora_sgd(
    problem: Problem,
    A0: np.ndarray,
    rounds: int,
    eta: float,
    local_steps: int,
    batch_size: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """Run stochastic RoLoRA from (A0, B = 0); return ‖∇F‖² at rounds 0..rounds (length rounds+1)."""
    if not eta > 0 or local_steps < 1 or batch_size < 1 or rounds < 0:
        raise ValueError(
            f"need eta > 0, local_steps >= 1, batch_size >= 1, rounds >= 0; got "
            f"eta={eta}, local_steps={local_steps}, batch_size={batch_size}, rounds={rounds}"
        )
    cfg = problem.config
    n, d, k = problem.n_clients, cfg.d, cfg.k
    W_star = problem.A_star[None] @ problem.B_star  # (N, d, k)
    scale = np.sqrt(problem.cov_diag)[:, None, :]  # (N, 1, d)
    A = np.array(A0, dtype=float)
    B = np.zeros((cfg.r, k))
    out = [grad_norm_sq(problem, A, B)]
    for t in range(1, rounds + 1):
        train_b = t % 2 == 1
        A_c = np.repeat(A[None], n, axis=0)
        B_c = np.repeat(B[None], n, axis=0)
        for _ in range(local_steps):
            X = rng.standard_normal((n, batch_size, d)) * scale
            Y = X @ W_star + cfg.noise_std * rng.standard_normal((n, batch_size, k))
            XtE = np.swapaxes(X, 1, 2) @ (X @ A_c @ B_c - Y) / batch_size  # (N, d, k)
            if train_b:
                B_c = B_c - eta * np.swapaxes(A_c, 1, 2) @ XtE
            else:
                A_c = A_c - eta * XtE @ np.swapaxes(B_c, 1, 2)
        if train_b:
            B = B_c.mean(axis=0)
        else:
            A = A_c.mean(axis=0)
        out.append(grad_norm_sq(problem, A, B))
    return np.asarray(out)


def loglog_slope(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Least-squares fit log y = slope·log x + intercept; returns (slope, intercept)."""
    slope, intercept = np.polyfit(np.log(x), np.log(y), 1)
    return float(slope), float(intercept)
