"""The federated rounds of rolora.theory: fast (statistics) vs slow (raw data) parity, and behaviour."""

import numpy as np
import pytest

from rolora.theory import algorithms as fast
from rolora.theory import reference as slow
from rolora.theory.data import ProblemConfig, make_problem
from rolora.theory.initial_factors import init_at_angle, random_init
from rolora.theory.metrics import gradients, sin_theta, training_loss

# Parity tolerance: both paths do the same arithmetic in a different order (float64).
PARITY = dict(rtol=1e-9, atol=1e-11)


@pytest.fixture(scope="module")
def raw_problem():
    cfg = ProblemConfig(d=9, k=5, r=2, n_clients=4, m=40, noise_std=0.2, b_spread=0.5, cov_spread=0.5, keep_data=True)
    return make_problem(cfg, 3)


def _start(problem, seed=0):
    rng = np.random.default_rng(seed)
    return random_init(problem.config.d, problem.config.r, rng), rng.standard_normal((problem.config.r, problem.config.k))


@pytest.mark.parametrize("local_steps", [1, 3])
def test_rolora_round_matches_raw_data_reference(raw_problem, local_steps):
    A, B = _start(raw_problem)
    for _ in range(3):  # a few rounds: parity must hold along the trajectory
        A_f, B_f = fast.rolora_round(raw_problem, A, B, eta=0.3, local_steps=local_steps)
        A_s, B_s = slow.rolora_round(raw_problem, A, B, eta=0.3, local_steps=local_steps)
        np.testing.assert_allclose(A_f, A_s, **PARITY)
        np.testing.assert_allclose(B_f, B_s, **PARITY)
        A, B = A_f, B_f


def test_ffa_round_matches_raw_data_reference(raw_problem):
    A, B = _start(raw_problem)
    A_f, B_f = fast.ffa_round(raw_problem, A, B)
    A_s, B_s = slow.ffa_round(raw_problem, A, B)
    np.testing.assert_array_equal(A_f, A_s)
    np.testing.assert_allclose(B_f, B_s, **PARITY)


@pytest.mark.parametrize("local_steps", [1, 4])
def test_fedavg_round_matches_raw_data_reference(raw_problem, local_steps):
    A, B = _start(raw_problem)
    A_f, B_f = fast.fedavg_round(raw_problem, A, B, eta=0.1, local_steps=local_steps)
    A_s, B_s = slow.fedavg_round(raw_problem, A, B, eta=0.1, local_steps=local_steps)
    np.testing.assert_allclose(A_f, A_s, **PARITY)
    np.testing.assert_allclose(B_f, B_s, **PARITY)


def test_rolora_qr_keeps_the_averaged_product(raw_problem):
    # QR is a reparametrisation: A_new·B_new equals (mean of client A's)·(mean of exact B's).
    A, B = _start(raw_problem)
    A_new, B_new = fast.rolora_round(raw_problem, A, B, eta=0.3)
    B_avg = fast.b_step_exact(raw_problem, A)
    A_hat = A - 0.3 * gradients(raw_problem, A, B_avg)[0]  # K = 1: mean of client steps = pooled step
    np.testing.assert_allclose(A_new @ B_new, A_hat @ B_avg, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(A_new.T @ A_new, np.eye(2), atol=1e-13)


def test_rolora_drives_sin_theta_below_1e_minus_6():
    p = make_problem(ProblemConfig(d=40, k=8, r=1, n_clients=5, m=200), 0)
    A0 = init_at_angle(p.A_star, 0.9, np.random.default_rng(0))
    hist, _, _ = fast.run(p, "rolora", A0, rounds=40, eta=0.5 / p.b_star_norm_sq)
    assert hist.sin_theta[0] == pytest.approx(0.9)
    assert hist.sin_theta[-1] < 1e-6, hist.sin_theta[-5:]


def test_rolora_converges_on_a_rank_two_instance():
    p = make_problem(ProblemConfig(d=30, k=8, r=2, n_clients=5, m=300, cov_spread=0.3), 1)
    A0 = random_init(30, 2, np.random.default_rng(1))
    hist, A, B = fast.run(p, "rolora", A0, rounds=60, eta=0.5 / p.b_star_norm_sq)
    assert hist.sin_theta[0] > 0.9
    assert hist.sin_theta[-1] < 1e-6, hist.sin_theta[-5:]
    assert hist.population_error[-1] < 1e-10


def test_ffa_never_moves_a():
    p = make_problem(ProblemConfig(d=20, k=5, r=1, n_clients=4, m=100, noise_std=0.1), 2)
    A0 = init_at_angle(p.A_star, 0.5, np.random.default_rng(2))
    A = A0.copy()
    B = np.zeros((1, 5))
    for _ in range(10):
        A, B = fast.ffa_round(p, A, B)
        np.testing.assert_array_equal(A, A0)  # exactly, not approximately
    assert sin_theta(A, p.A_star) == pytest.approx(0.5, abs=1e-14)


def test_fedavg_with_one_local_step_tracks_centralised_gradient_descent():
    p = make_problem(ProblemConfig(d=15, k=6, r=2, n_clients=6, m=50, noise_std=0.1, cov_spread=0.5), 4)
    A0 = random_init(15, 2, np.random.default_rng(4))
    _, A_f, B_f = fast.run(p, "fedavg", A0, rounds=200, eta=0.2, local_steps=1)
    _, A_c, B_c = fast.run(p, "centralised_gd", A0, rounds=200, eta=0.2)
    # Mean of client steps = pooled step exactly in exact arithmetic; rounding differs at 1e-16 per step.
    np.testing.assert_allclose(A_f, A_c, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(B_f, B_c, rtol=1e-10, atol=1e-12)
    assert training_loss(p, A_f, B_f) < 0.5 * training_loss(p, A0, np.zeros((2, 6)))  # it did train


def test_fedavg_with_many_local_steps_differs_from_centralised_gd():
    # The K = 1 equivalence above is not vacuous: with K > 1 client drift makes the paths differ.
    p = make_problem(ProblemConfig(d=15, k=6, r=1, n_clients=6, m=50, cov_spread=0.8, b_spread=0.5), 5)
    A0 = random_init(15, 1, np.random.default_rng(5))
    _, A_f, _ = fast.run(p, "fedavg", A0, rounds=3, eta=0.2, local_steps=5)
    _, A_c, _ = fast.run(p, "centralised_gd", A0, rounds=15, eta=0.2)
    assert np.max(np.abs(A_f - A_c)) > 1e-3


def test_centralised_solution_is_the_rank_r_optimum():
    p = make_problem(ProblemConfig(d=12, k=6, r=2, n_clients=3, m=40, noise_std=0.3, b_spread=0.4), 6)
    A, B = fast.centralised_solution(p)
    g_A, g_B = gradients(p, A, B)
    np.testing.assert_allclose(g_A, 0, atol=1e-10)  # stationary ...
    np.testing.assert_allclose(g_B, 0, atol=1e-10)
    best = training_loss(p, A, B)
    hist, _, _ = fast.run(p, "rolora", random_init(12, 2, np.random.default_rng(6)), rounds=300, eta=0.3)
    assert best <= hist.training_loss[-1] + 1e-12  # ... and no worse than a converged RoLoRA
    rng = np.random.default_rng(7)
    for _ in range(20):  # ... and than random nearby rank-2 points
        assert best <= training_loss(p, A + 1e-2 * rng.standard_normal(A.shape), B + 1e-2 * rng.standard_normal(B.shape))


def test_bad_shapes_and_steps_raise_clear_errors_and_leave_inputs_untouched(raw_problem):
    A, B = _start(raw_problem)
    A_before, B_before = A.copy(), B.copy()
    with pytest.raises(ValueError, match=r"A has shape \(9, 3\)"):
        fast.rolora_round(raw_problem, np.ones((9, 3)), B, eta=0.1)
    with pytest.raises(ValueError, match=r"B has shape \(5, 2\)"):
        fast.fedavg_round(raw_problem, A, B.T, eta=0.1)
    with pytest.raises(ValueError, match="eta"):
        fast.rolora_round(raw_problem, A, B, eta=0.0)
    with pytest.raises(ValueError, match="local_steps"):
        fast.fedavg_round(raw_problem, A, B, eta=0.1, local_steps=0)
    with pytest.raises(ValueError, match="unknown method"):
        fast.run(raw_problem, "flexlora", A, rounds=1)
    fast.rolora_round(raw_problem, A, B, eta=0.1, local_steps=2)
    fast.fedavg_round(raw_problem, A, B, eta=0.1, local_steps=2)
    np.testing.assert_array_equal(A, A_before)
    np.testing.assert_array_equal(B, B_before)


def test_exact_b_step_names_the_singular_client():
    p = make_problem(ProblemConfig(d=4, k=2, r=1, n_clients=3, m=10, keep_data=False), 0)
    S = p.S.copy()
    S[1] = 0.0  # client 1 has no signal along any direction
    broken = type(p)(**{**p.__dict__, "S": S})
    with pytest.raises(ValueError, match=r"client\(s\) \[1\]"):
        fast.b_step_exact(broken, np.eye(4)[:, :1])


def test_reference_needs_raw_data():
    p = make_problem(ProblemConfig(d=4, k=2, m=10), 0)
    with pytest.raises(ValueError, match="keep_data=True"):
        slow.ffa_round(p, np.eye(4)[:, :1], np.zeros((1, 2)))
