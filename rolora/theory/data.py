"""Federated low-rank linear regression problems (paper convention, row vectors: y = x A* B*_i + e).

Row-vector convention as in the paper's analysis: in PEFT terms lora_A = Aᵀ (r×d), lora_B = Bᵀ (k×r).

Client i holds m samples x ~ N(0, Σ_i) (rows of X_i ∈ R^{m×d}), labels Y_i = X_i A* B*_i + E_i with
E_i iid N(0, σ²). A* ∈ R^{d×r} has orthonormal columns (QR); B*_i ∈ R^{r×k}. Rank 1 is the paper's
Y_i = X_i a* b*ᵀ with ‖a*‖ = 1. Heterogeneity, both off by default:

- ``b_spread``: client-specific heads B*_i = B* + b_spread·‖B*‖_F·U_i (U_i a random unit direction);
  A* stays shared, so the common subspace is still identifiable.
- ``cov_spread``: per-client diagonal covariance Σ_i = diag(exp(cov_spread·u)), u ~ U(−1, 1)^d.

The client objective is f_i(A, B) = (1/2m)‖Y_i − X_i A B‖_F², and everything the algorithms need is
its sufficient statistics S_i = X_iᵀX_i/m, C_i = X_iᵀY_i/m and yy_i = ‖Y_i‖_F²/m. How they are made
(``design``/``sampler``):

- ``design="gaussian"``, ``sampler="rows"``: draw X_i, E_i and form the statistics (the plain way;
  ``keep_data=True`` keeps X_i, Y_i for the raw-data reference implementations).
- ``design="gaussian"``, ``sampler="wishart"``: draw [X_i E_i]ᵀ[X_i E_i] directly from its Wishart law
  (same distribution as "rows", cost independent of m; needs m ≥ d (+k with noise)).
- ``sampler="auto"`` (default): "wishart" when allowed and no raw data is kept, else "rows".
- ``design="population"``: the m → ∞ limit, S_i = Σ_i exactly (the setting of the population check).

All clients hold the same m, so the federated average uses uniform weights p_i = 1/N.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from rolora.theory.sampling import orthonormal_columns, unit_frobenius, wishart_identity

DESIGNS = ("gaussian", "population")
SAMPLERS = ("auto", "rows", "wishart")


@dataclass(frozen=True)
class ProblemConfig:
    """Parameters of one problem instance (see the module docstring for the model).

    d: input dimension; k: output dimension; r: rank of A*B*; n_clients: N; m: samples per client;
    b_norm: ‖B*‖ (for r = 1 this is ‖b*‖; for r > 1 every singular value of B* equals b_norm);
    noise_std: σ of the label noise; b_spread, cov_spread: heterogeneity (0 = homogeneous).
    """

    d: int = 50
    k: int = 10
    r: int = 1
    n_clients: int = 10
    m: int = 1000
    b_norm: float = 1.0
    noise_std: float = 0.0
    b_spread: float = 0.0
    cov_spread: float = 0.0
    design: str = "gaussian"
    sampler: str = "auto"
    keep_data: bool = False

    def validate(self) -> None:
        """Raise ValueError naming the first bad field."""
        for name in ("d", "k", "r", "n_clients", "m"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"ProblemConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.r > min(self.d, self.k):
            raise ValueError(f"ProblemConfig.r={self.r} exceeds min(d={self.d}, k={self.k})")
        for name in ("b_norm",):
            if not getattr(self, name) > 0:
                raise ValueError(f"ProblemConfig.{name} must be > 0, got {getattr(self, name)}")
        for name in ("noise_std", "b_spread", "cov_spread"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"ProblemConfig.{name} must be >= 0, got {getattr(self, name)}")
        if self.design not in DESIGNS:
            raise ValueError(f"ProblemConfig.design must be one of {DESIGNS}, got {self.design!r}")
        if self.sampler not in SAMPLERS:
            raise ValueError(f"ProblemConfig.sampler must be one of {SAMPLERS}, got {self.sampler!r}")
        if self.design == "population" and self.keep_data:
            raise ValueError("ProblemConfig.keep_data needs design='gaussian' (population has no rows)")
        if self.sampler == "wishart":
            if self.keep_data:
                raise ValueError("ProblemConfig.keep_data needs sampler='rows' or 'auto'")
            if self.m < self._wishart_dim():
                raise ValueError(
                    f"sampler='wishart' needs m >= {self._wishart_dim()} (d, plus k with noise); "
                    f"got m={self.m}"
                )

    def _wishart_dim(self) -> int:
        return self.d + (self.k if self.noise_std > 0 else 0)

    def resolved_sampler(self) -> str:
        """The sampler actually used ("rows" or "wishart") for design="gaussian"."""
        if self.sampler != "auto":
            return self.sampler
        return "wishart" if (not self.keep_data and self.m >= self._wishart_dim()) else "rows"


@dataclass(frozen=True)
class Problem:
    """A generated instance: ground truth, per-client sufficient statistics, optional raw data.

    Shapes: A_star (d, r) orthonormal; B_shared (r, k); B_star (N, r, k); cov_diag (N, d);
    S (N, d, d); C (N, d, k); yy (N,); X (N, m, d) and Y (N, m, k) only with keep_data.
    """

    config: ProblemConfig
    A_star: np.ndarray
    B_shared: np.ndarray
    B_star: np.ndarray
    cov_diag: np.ndarray
    S: np.ndarray
    C: np.ndarray
    yy: np.ndarray
    X: np.ndarray | None = field(default=None, repr=False)
    Y: np.ndarray | None = field(default=None, repr=False)

    @property
    def n_clients(self) -> int:
        """N, the number of clients."""
        return self.S.shape[0]

    @property
    def b_star_norm_sq(self) -> float:
        """‖b*‖² of the shared head (largest singular value squared for r > 1): the theorem's scale."""
        return float(np.linalg.norm(self.B_shared, 2) ** 2)


def make_problem(config: ProblemConfig, seed: int) -> Problem:
    """Generate a problem. The truth and the samples use independent streams spawned from ``seed``,
    so changing m or the sampler leaves A*, B*_i and Σ_i unchanged."""
    config.validate()
    truth_rng, data_rng = np.random.default_rng(seed).spawn(2)
    d, k, r, n = config.d, config.k, config.r, config.n_clients

    A_star = orthonormal_columns(truth_rng, d, r)
    B_shared = config.b_norm * orthonormal_columns(truth_rng, k, r).T  # all singular values b_norm
    spread = config.b_spread * np.linalg.norm(B_shared)
    B_star = np.stack([B_shared + spread * unit_frobenius(truth_rng, (r, k)) for _ in range(n)])
    cov_diag = np.exp(config.cov_spread * truth_rng.uniform(-1.0, 1.0, size=(n, d)))
    W_star = A_star[None] @ B_star  # (N, d, k): each client's true map

    if config.design == "population":
        S = np.stack([np.diag(c) for c in cov_diag])
        C = S @ W_star
        yy = np.einsum("nij,nij->n", W_star, C) + k * config.noise_std**2
        return Problem(config, A_star, B_shared, B_star, cov_diag, S, C, yy)

    if config.resolved_sampler() == "wishart":
        S, C, yy = _stats_from_wishart(config, data_rng, cov_diag, W_star)
        return Problem(config, A_star, B_shared, B_star, cov_diag, S, C, yy)

    X = data_rng.standard_normal((n, config.m, d)) * np.sqrt(cov_diag)[:, None, :]
    Y = X @ W_star + config.noise_std * data_rng.standard_normal((n, config.m, k))
    S, C, yy = stats_from_data(X, Y)
    if not config.keep_data:
        X = Y = None
    return Problem(config, A_star, B_shared, B_star, cov_diag, S, C, yy, X, Y)


def stats_from_data(X: np.ndarray, Y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sufficient statistics (S, C, yy) of stacked client data X (N, m, d), Y (N, m, k)."""
    m = X.shape[1]
    S = np.swapaxes(X, 1, 2) @ X / m
    C = np.swapaxes(X, 1, 2) @ Y / m
    yy = np.einsum("nmk,nmk->n", Y, Y) / m
    return S, C, yy


def _stats_from_wishart(
    config: ProblemConfig, rng: np.random.Generator, cov_diag: np.ndarray, W_star: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Exact-in-law statistics: G = [X E]ᵀ[X E]/m = D W D/m with W ~ Wishart(m, I), D = diag(√Σ, σ)."""
    d, m, noisy = config.d, config.m, config.noise_std > 0
    S, C, yy = [], [], []
    for i in range(config.n_clients):
        scale = np.sqrt(cov_diag[i])
        if noisy:
            scale = np.concatenate([scale, np.full(config.k, config.noise_std)])
        G = wishart_identity(rng, m, scale.size) * np.outer(scale, scale) / m
        S_i = G[:d, :d]
        XtE = G[:d, d:] if noisy else np.zeros((d, config.k))
        EtE_trace = float(np.trace(G[d:, d:])) if noisy else 0.0
        S.append(S_i)
        C.append(S_i @ W_star[i] + XtE)
        yy.append(np.sum(W_star[i] * (S_i @ W_star[i])) + 2 * np.sum(W_star[i] * XtE) + EtE_trace)
    return np.stack(S), np.stack(C), np.asarray(yy)
