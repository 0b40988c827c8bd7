"""Slow, obviously-correct versions of the rounds, written on raw data with explicit client loops.

These are the references that the statistics-based fast paths in ``algorithms`` are tested against.
They need a problem made with ``keep_data=True``. Paper convention: prediction = X_i A B.
"""

from __future__ import annotations

import numpy as np

from rolora.theory.data import Problem


def _client_data(problem: Problem) -> list[tuple[np.ndarray, np.ndarray]]:
    if problem.X is None or problem.Y is None:
        raise ValueError("the reference needs raw data: make the problem with keep_data=True")
    return list(zip(problem.X, problem.Y))


def client_loss(X: np.ndarray, Y: np.ndarray, A: np.ndarray, B: np.ndarray) -> float:
    """f_i(A, B) = (1/2m)‖Y − X A B‖_F²."""
    return float(np.sum((Y - X @ A @ B) ** 2) / (2 * X.shape[0]))


def client_grads(X: np.ndarray, Y: np.ndarray, A: np.ndarray, B: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(∇_A f_i, ∇_B f_i) by the chain rule on the residual E = X A B − Y: (XᵀE Bᵀ/m, AᵀXᵀE/m)."""
    E = X @ A @ B - Y
    m = X.shape[0]
    return X.T @ E @ B.T / m, A.T @ X.T @ E / m


def rolora_round(problem: Problem, A: np.ndarray, B: np.ndarray, eta: float, local_steps: int = 1):
    """Analysed RoLoRA round: least-squares B per client, average; local GD on A, average; QR."""
    data = _client_data(problem)
    B_new = np.mean([np.linalg.lstsq(X @ A, Y, rcond=None)[0] for X, Y in data], axis=0)
    A_clients = []
    for X, Y in data:
        A_i = A.copy()
        for _ in range(local_steps):
            A_i = A_i - eta * client_grads(X, Y, A_i, B_new)[0]
        A_clients.append(A_i)
    Q, R = np.linalg.qr(np.mean(A_clients, axis=0))
    return Q, R @ B_new


def ffa_round(problem: Problem, A: np.ndarray, B: np.ndarray):
    """FFA-LoRA round: A untouched, B = mean of the clients' least-squares fits."""
    data = _client_data(problem)
    return A, np.mean([np.linalg.lstsq(X @ A, Y, rcond=None)[0] for X, Y in data], axis=0)


def fedavg_round(problem: Problem, A: np.ndarray, B: np.ndarray, eta: float, local_steps: int = 1):
    """FedAvg-LoRA round: each client K simultaneous GD steps on (A, B); average both factors."""
    A_out, B_out = [], []
    for X, Y in _client_data(problem):
        A_i, B_i = A.copy(), B.copy()
        for _ in range(local_steps):
            g_A, g_B = client_grads(X, Y, A_i, B_i)
            A_i, B_i = A_i - eta * g_A, B_i - eta * g_B
        A_out.append(A_i)
        B_out.append(B_i)
    return np.mean(A_out, axis=0), np.mean(B_out, axis=0)


def pooled_loss(problem: Problem, A: np.ndarray, B: np.ndarray) -> float:
    """The federated objective (1/N) Σ_i f_i on raw data."""
    return float(np.mean([client_loss(X, Y, A, B) for X, Y in _client_data(problem)]))
