"""The paper's linear-model claims, checked where their assumptions hold."""

import numpy as np
import pytest

from rolora.theory.algorithms import run
from rolora.theory.data import ProblemConfig, make_problem
from rolora.theory.initial_factors import init_at_angle, random_init
from rolora.theory.stochastic import grad_norm_sq, loglog_slope, rolora_sgd

ETA_SCALE = 0.5  # η‖b*‖² = 0.5 <= 1, the theorem's condition in our reading
ROUNDOFF = 1e-10


def _worst_ratio_and_bound(problem, A0, rounds):
    beta = problem.b_star_norm_sq
    eta = ETA_SCALE / beta
    sins = np.asarray(run(problem, "rolora", A0, rounds, eta=eta)[0].sin_theta)
    bound = np.sqrt(1 - eta * (1 - sins[0] ** 2) * beta)
    live = sins[:-1] > ROUNDOFF
    ratios = sins[1:][live] / sins[:-1][live]
    return ratios, bound


@pytest.mark.parametrize("design, m", [("population", 1), ("gaussian", 100_000)])
@pytest.mark.parametrize("delta0", [0.3, 0.9, 0.99])
def test_theorem_bound_holds_in_every_round(design, m, delta0):
    # Population-sized data (exact population, or 10⁵ samples per client via the Wishart sampler).
    cfg = ProblemConfig(d=60, k=8, r=1, n_clients=8, m=m, design=design)
    for seed in range(3):
        p = make_problem(cfg, seed)
        A0 = init_at_angle(p.A_star, delta0, np.random.default_rng(100 + seed))
        ratios, bound = _worst_ratio_and_bound(p, A0, rounds=40)
        assert ratios.size >= 10
        assert np.all(ratios <= bound), (
            f"seed {seed}: worst per-round ratio {ratios.max():.6f} > bound {bound:.6f}"
        )
        print(f"{design} δ0={delta0} seed {seed}: worst ratio {ratios.max():.4f} vs bound {bound:.4f}")


def test_theorem_bound_with_random_init_in_high_dimension_holds_but_is_nearly_vacuous():
    cfg = ProblemConfig(d=100, k=8, r=1, n_clients=10, m=1, design="population")
    p = make_problem(cfg, 0)
    A0 = random_init(100, 1, np.random.default_rng(0))
    ratios, bound = _worst_ratio_and_bound(p, A0, rounds=60)
    assert np.all(ratios <= bound), (ratios.max(), bound)
    assert bound > 0.99  # 1 − δ0² ≈ 1/d: the bound promises almost nothing ...
    assert np.exp(np.mean(np.log(ratios))) < 0.7, ratios  # ... while the measured mean rate is fast


def test_ffa_floor_matches_b_star_squared_delta0_squared_at_large_m():
    cfg = ProblemConfig(d=40, k=8, r=1, n_clients=10, m=100_000)
    for seed, delta0 in enumerate([0.1, 0.4, 0.8, 0.95]):
        p = make_problem(cfg, seed)
        A0 = init_at_angle(p.A_star, delta0, np.random.default_rng(seed))
        floor = run(p, "ffa", A0, rounds=3)[0].population_error[-1]
        predicted = p.b_star_norm_sq * delta0**2
        np.testing.assert_allclose(floor, predicted, rtol=0.01)
        assert floor >= predicted * (1 - 1e-12)  # c̃ >= 0: no b can beat the frozen-a optimum


def test_ffa_floor_is_never_below_the_prediction_even_with_few_noisy_samples():
    cfg = ProblemConfig(d=30, k=6, r=1, n_clients=4, m=40, noise_std=0.3)
    for seed in range(5):
        p = make_problem(cfg, seed)
        A0 = init_at_angle(p.A_star, 0.5, np.random.default_rng(seed))
        floor = run(p, "ffa", A0, rounds=2)[0].population_error[-1]
        assert floor >= p.b_star_norm_sq * 0.25 * (1 - 1e-12)


def test_loglog_slope_recovers_a_power_law():
    T = np.array([10.0, 100.0, 1000.0])
    slope, intercept = loglog_slope(T, 3.0 * T**-0.5)
    assert slope == pytest.approx(-0.5, abs=1e-12)
    assert intercept == pytest.approx(np.log(3.0), abs=1e-12)


def test_stochastic_rolora_decreases_the_gradient_norm_and_is_seeded():
    cfg = ProblemConfig(d=10, k=5, r=2, n_clients=3, noise_std=0.5, design="population")
    p = make_problem(cfg, 0)
    A0 = random_init(10, 2, np.random.default_rng(0))
    curve = rolora_sgd(p, A0, 200, eta=0.05, local_steps=3, batch_size=8, rng=np.random.default_rng(1))
    again = rolora_sgd(p, A0, 200, eta=0.05, local_steps=3, batch_size=8, rng=np.random.default_rng(1))
    np.testing.assert_array_equal(curve, again)
    assert curve[0] == pytest.approx(grad_norm_sq(p, A0, np.zeros((2, 5))))
    assert curve[-20:].mean() < 0.05 * curve[0], (curve[0], curve[-20:].mean())
    with pytest.raises(ValueError, match="batch_size"):
        rolora_sgd(p, A0, 5, eta=0.05, local_steps=1, batch_size=0, rng=np.random.default_rng(0))
