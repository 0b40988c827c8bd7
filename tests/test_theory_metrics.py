"""Metrics, problem generation and initialisation of rolora.theory (NumPy only)."""

import numpy as np
import pytest

from rolora.theory.data import ProblemConfig, make_problem, stats_from_data
from rolora.theory.initial_factors import init_at_angle, random_init
from rolora.theory.metrics import (
    gradients,
    population_error,
    principal_sines,
    sin_theta,
    training_loss,
)
from rolora.theory.reference import client_grads, pooled_loss
from rolora.theory.sampling import orthonormal_columns, wishart_identity


def test_principal_angles_same_subspace_is_zero_and_orthogonal_is_one():
    rng = np.random.default_rng(0)
    Q = orthonormal_columns(rng, 12, 3)
    mix = rng.standard_normal((3, 3)) + 3 * np.eye(3)  # an invertible change of basis
    np.testing.assert_allclose(principal_sines(Q @ mix, Q), 0.0, atol=1e-14)
    full = orthonormal_columns(rng, 12, 6)
    np.testing.assert_allclose(principal_sines(full[:, 3:], full[:, :3]), 1.0, rtol=0, atol=1e-14)


def test_rank_one_sin_theta_matches_the_vector_formula():
    rng = np.random.default_rng(1)
    a, a_star = rng.standard_normal((2, 20, 1))
    cos = abs(a[:, 0] @ a_star[:, 0]) / (np.linalg.norm(a) * np.linalg.norm(a_star))
    assert sin_theta(a, a_star) == pytest.approx(np.sqrt(1 - cos**2), rel=1e-12)


def test_principal_angles_reject_mismatched_shapes():
    with pytest.raises(ValueError, match="shape"):
        principal_sines(np.ones((5, 2)), np.ones((5, 1)))


@pytest.mark.parametrize("delta0", [0.0, 0.3, 0.99])
def test_init_at_angle_has_every_principal_sine_equal_to_delta0(delta0):
    rng = np.random.default_rng(2)
    A_star = orthonormal_columns(rng, 30, 3)
    A0 = init_at_angle(A_star, delta0, rng)
    np.testing.assert_allclose(A0.T @ A0, np.eye(3), atol=1e-13)
    np.testing.assert_allclose(principal_sines(A0, A_star), delta0, atol=1e-12)


def test_init_at_angle_rejects_delta_outside_unit_interval():
    with pytest.raises(ValueError, match="delta0"):
        init_at_angle(np.eye(4)[:, :1], 1.0, np.random.default_rng(0))


def test_wishart_sampler_has_the_right_mean_and_variance():
    # E[W] = dof·I, Var(W_ij) = dof (i != j), Var(W_ii) = 2·dof. 4000 draws: standard errors ~1.6%.
    rng = np.random.default_rng(3)
    dof, dim, draws = 7, 4, 4000
    W = np.stack([wishart_identity(rng, dof, dim) for _ in range(draws)])
    np.testing.assert_allclose(W.mean(axis=0), dof * np.eye(dim), atol=0.25)
    var = W.var(axis=0)
    expected = dof * (np.ones((dim, dim)) + np.eye(dim))
    np.testing.assert_allclose(var, expected, rtol=0.12)


def test_wishart_and_row_samplers_agree_in_distribution():
    # Mean training loss at a fixed (A, B) over many problems: same law, so means agree (5 s.e.).
    base = dict(d=6, k=3, r=1, n_clients=1, m=20, noise_std=0.5)
    A = np.eye(6)[:, :1]
    B = np.ones((1, 3))
    losses = {}
    for sampler in ("rows", "wishart"):
        cfg = ProblemConfig(**base, sampler=sampler)
        losses[sampler] = np.array([training_loss(make_problem(cfg, s), A, B) for s in range(600)])
    se = np.sqrt(losses["rows"].var() / 600 + losses["wishart"].var() / 600)
    assert abs(losses["rows"].mean() - losses["wishart"].mean()) < 5 * se, (losses["rows"].mean(), losses["wishart"].mean(), se)


def test_same_seed_same_problem_and_truth_independent_of_m():
    cfg = ProblemConfig(d=8, k=4, r=2, n_clients=3, m=50, noise_std=0.1, b_spread=0.5, cov_spread=0.5)
    p1, p2 = make_problem(cfg, 7), make_problem(cfg, 7)
    np.testing.assert_array_equal(p1.S, p2.S)
    np.testing.assert_array_equal(p1.C, p2.C)
    p3 = make_problem(ProblemConfig(**{**vars(cfg), "m": 500}), 7)
    np.testing.assert_array_equal(p1.A_star, p3.A_star)
    np.testing.assert_array_equal(p1.B_star, p3.B_star)
    assert not np.array_equal(p1.S, make_problem(cfg, 8).S)


@pytest.mark.parametrize(
    "field, value, match",
    [("m", 0, "m must be"), ("r", 9, "exceeds"), ("noise_std", -1.0, "noise_std"), ("design", "x", "design")],
)
def test_bad_problem_config_names_the_field(field, value, match):
    cfg = ProblemConfig(**{**vars(ProblemConfig(d=8, k=4)), field: value})
    with pytest.raises(ValueError, match=match):
        make_problem(cfg, 0)


def test_wishart_sampler_refuses_too_few_samples():
    with pytest.raises(ValueError, match="m >= 8"):
        make_problem(ProblemConfig(d=8, k=4, m=5, sampler="wishart"), 0)


def _raw_problem(**kw):
    base = dict(d=7, k=4, r=2, n_clients=3, m=25, noise_std=0.3, b_spread=0.5, cov_spread=0.7, keep_data=True)
    return make_problem(ProblemConfig(**{**base, **kw}), 11)


def test_statistics_training_loss_equals_raw_data_loss():
    p = _raw_problem()
    rng = np.random.default_rng(4)
    A, B = rng.standard_normal((7, 2)), rng.standard_normal((2, 4))
    assert training_loss(p, A, B) == pytest.approx(pooled_loss(p, A, B), rel=1e-12)


def test_gradients_match_raw_data_and_finite_differences():
    p = _raw_problem()
    rng = np.random.default_rng(5)
    A, B = rng.standard_normal((7, 2)), rng.standard_normal((2, 4))
    g_A, g_B = gradients(p, A, B)
    raw = [client_grads(X, Y, A, B) for X, Y in zip(p.X, p.Y)]
    np.testing.assert_allclose(g_A, np.mean([g[0] for g in raw], axis=0), rtol=1e-11, atol=1e-12)
    np.testing.assert_allclose(g_B, np.mean([g[1] for g in raw], axis=0), rtol=1e-11, atol=1e-12)
    h = 1e-6  # central differences: error O(h²) ≈ 1e-12 relative, well inside atol 1e-7
    for (i, j) in [(0, 0), (3, 1), (6, 0)]:
        E = np.zeros_like(A)
        E[i, j] = h
        fd = (training_loss(p, A + E, B) - training_loss(p, A - E, B)) / (2 * h)
        assert fd == pytest.approx(g_A[i, j], abs=1e-7)


def test_population_design_loss_is_half_population_error_plus_noise():
    cfg = ProblemConfig(d=6, k=3, r=1, n_clients=4, noise_std=0.2, cov_spread=0.5, b_spread=0.3, design="population")
    p = make_problem(cfg, 0)
    rng = np.random.default_rng(6)
    A, B = rng.standard_normal((6, 1)), rng.standard_normal((1, 3))
    expected = population_error(p, A, B) / 2 + cfg.k * cfg.noise_std**2 / 2
    assert training_loss(p, A, B) == pytest.approx(expected, rel=1e-12)


def test_population_error_is_frobenius_distance_when_homogeneous():
    p = make_problem(ProblemConfig(d=6, k=3, r=1, n_clients=2, m=10), 0)
    A, B = random_init(6, 1, np.random.default_rng(0)), np.ones((1, 3))
    assert population_error(p, A, B) == pytest.approx(np.sum((A @ B - p.A_star @ p.B_shared) ** 2), rel=1e-12)


def test_stats_from_data_shapes():
    X, Y = np.ones((2, 5, 3)), np.ones((2, 5, 4))
    S, C, yy = stats_from_data(X, Y)
    assert S.shape == (2, 3, 3) and C.shape == (2, 3, 4) and yy.shape == (2,)
