"""The five analyses of the linear model, one function each. Every function returns an ``AnalysisResult`` whose
``rows`` are the plotted numbers (written as CSV beside the figure) and whose ``summary`` feeds the
results table. ``quick=True`` shrinks grids (for tests); ``tick()`` is called once per unit of work
so that the caller can drive a progress bar; ``n_units(name, quick)`` says how many ticks to expect.

Seeds: run j of experiment e under base seed s uses ``numpy.random.default_rng([s, e, j, ...])``;
no global RNG is touched, so the same seed gives the same numbers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from rolora.theory.algorithms import centralised_solution, run
from rolora.theory.data import ProblemConfig, make_problem
from rolora.theory.initial_factors import init_at_angle, random_init
from rolora.theory.metrics import population_error, sin_theta
from rolora.theory.stochastic import loglog_slope, rolora_sgd

Tick = Callable[[], None]
ETA_SCALE = 0.5  # η = ETA_SCALE/‖b*‖²; the theorem's reading needs η‖b*‖² <= 1
ROUNDOFF = 1e-10  # sin θ below this is at round-off level: per-round ratios are not measured there


def _noop() -> None:
    pass


@dataclass
class AnalysisResult:
    """Numbers of one experiment: long-format ``rows`` (one dict per point) and a ``summary``."""

    name: str
    rows: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)


def _rng(seed: int, *keys: int) -> np.random.Generator:
    return np.random.default_rng([seed, *keys])


def _seed_int(seed: int, *keys: int) -> int:
    return int(_rng(seed, *keys).integers(2**31))


# ---------------------------------------------------------------- 1. the theorem ---------------
THEOREM_DELTAS: list[float | str] = [0.3, 0.6, 0.9, 0.99, "random"]


def theorem_grid(quick: bool) -> dict[str, Any]:
    """Grid of experiment 1: d = 100, m = 10⁵ per client (population-sized, Wishart-sampled)."""
    return dict(deltas=THEOREM_DELTAS, seeds=2 if quick else 5, rounds=40 if quick else 60,
                config=ProblemConfig(d=100, k=10, r=1, n_clients=10, m=100_000))


def theorem_contraction(seed: int, quick: bool = False, tick: Tick = _noop) -> AnalysisResult:
    """Per-round contraction of sin θ under analysed RoLoRA against sqrt(1 − η(1 − δ0²)‖b*‖²).

    For each δ0 (and a random init, where 1 − δ0² ≈ 1/d makes the bound nearly vacuous) and seed:
    the worst per-round ratio sin θ^{t+1}/sin θ^t (over rounds with sin θ^t > ROUNDOFF), the mean
    rate (geometric mean of the ratios) and the rounds to reach 1e-6, measured vs predicted.
    """
    g = theorem_grid(quick)
    res = AnalysisResult("theorem")
    for j, delta in enumerate(g["deltas"]):
        worst, rates, reach, starts, bounds = [], [], [], [], []
        for s in range(g["seeds"]):
            problem = make_problem(g["config"], _seed_int(seed, 1, j, s))
            beta = problem.b_star_norm_sq
            rng = _rng(seed, 1, j, s, 1)
            A0 = random_init(g["config"].d, 1, rng) if delta == "random" else init_at_angle(problem.A_star, delta, rng)
            eta = ETA_SCALE / beta
            hist, _, _ = run(problem, "rolora", A0, g["rounds"], eta=eta)
            sins = np.asarray(hist.sin_theta)
            delta0 = sins[0]
            bound = float(np.sqrt(1 - eta * (1 - delta0**2) * beta))
            live = sins[:-1] > ROUNDOFF
            ratios = sins[1:][live] / sins[:-1][live]
            worst.append(float(ratios.max()))
            rates.append(float(np.exp(np.mean(np.log(ratios)))))
            below = np.nonzero(sins < 1e-6)[0]
            reach.append(int(below[0]) if below.size else -1)
            starts.append(float(delta0))
            bounds.append(bound)
            for t, v in enumerate(sins):
                res.rows.append(dict(delta0_label=str(delta), seed=s, round=t, sin_theta=float(v),
                                     bound_envelope=float(delta0 * bound**t), bound_rate=bound))
            tick()
        predicted = [np.log(1e-6 / d0) / np.log(b) for d0, b in zip(starts, bounds)]
        res.summary[str(delta)] = dict(
            delta0=float(np.mean(starts)), bound_rate=float(np.mean(bounds)),
            worst_measured_ratio=float(np.max(worst)), mean_measured_rate=float(np.mean(rates)),
            worst_ratio_over_bound=float(np.max(np.asarray(worst) / np.asarray(bounds))),
            bound_holds_every_round=bool(np.all(np.asarray(worst) <= np.asarray(bounds))),
            rounds_to_1e6_measured=float(np.mean(reach)) if min(reach) >= 0 else float("nan"),  # nan: a seed never got there
            rounds_to_1e6_bound=float(np.mean(predicted)),
        )
    return res


# ---------------------------------------------------------------- 2. the FFA-LoRA floor ---------
def ffa_grid(quick: bool) -> dict[str, Any]:
    """Grid of experiment 2: a large-m regime (the proposition) and a small-m, noisy one."""
    regimes = {"m=1e5": ProblemConfig(d=50, k=10, n_clients=10, m=100_000),
               "m=60, noise 0.1": ProblemConfig(d=50, k=10, n_clients=10, m=60, noise_std=0.1)}
    deltas = [0.1, 0.5, 0.9] if quick else [0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 0.95]
    return dict(regimes=regimes, deltas=deltas, seeds=2 if quick else 5, rounds=3)


def ffa_floor(seed: int, quick: bool = False, tick: Tick = _noop) -> AnalysisResult:
    """FFA-LoRA's population error after training B (A frozen at A⁰) vs ‖b*‖²δ0².

    With a frozen, every b has ‖a⁰bᵀ − a*b*ᵀ‖² >= ‖b*‖²δ0² (equality at b = b*cos θ0), so the
    paper's constant is (1 + c̃) with c̃ >= 0; c̃ → 0 as N·m grows. RoLoRA from the same start is shown
    for contrast.
    """
    g = ffa_grid(quick)
    res = AnalysisResult("ffa_floor")
    for e, (label, config) in enumerate(g["regimes"].items()):
        ratios = []
        for j, delta in enumerate(g["deltas"]):
            for s in range(g["seeds"]):
                problem = make_problem(config, _seed_int(seed, 2, e, j, s))
                beta = problem.b_star_norm_sq
                A0 = init_at_angle(problem.A_star, delta, _rng(seed, 2, e, j, s, 1))
                ffa, _, _ = run(problem, "ffa", A0, g["rounds"])
                rolora, _, _ = run(problem, "rolora", A0, 30, eta=ETA_SCALE / beta)
                predicted = beta * delta**2
                floor = ffa.population_error[-1]
                ratios.append(floor / predicted)
                res.rows.append(dict(regime=label, delta0=delta, seed=s, predicted=predicted,
                                     ffa_floor=floor, ratio=floor / predicted,
                                     rolora_error=rolora.population_error[-1]))
                tick()
        res.summary[label] = dict(min_ratio=float(np.min(ratios)), max_ratio=float(np.max(ratios)),
                                  median_ratio=float(np.median(ratios)))
    return res


# ---------------------------------------------------------------- 3. method comparison ----------
def comparison_grid(quick: bool) -> dict[str, Any]:
    """Grid of experiment 3: d = 30, m = 150, σ = 0.1; N, K and heterogeneity varied one at a time."""
    base = ProblemConfig(d=30, k=10, r=1, n_clients=10, m=150, noise_std=0.1)
    settings = {
        "N=10, K=1": (base, 1),
        "N=10, K=10": (base, 10),
        "N=50, K=10": (ProblemConfig(**{**vars(base), "n_clients": 50}), 10),
        "N=10, K=10, hetero B*": (ProblemConfig(**{**vars(base), "b_spread": 1.0}), 10),
        "N=10, K=10, hetero X": (ProblemConfig(**{**vars(base), "cov_spread": 1.0}), 10),
    }
    return dict(settings=settings, seeds=1 if quick else 3, rounds=25 if quick else 60)


COMPARED = ("rolora", "ffa", "fedavg")


def method_comparison(seed: int, quick: bool = False, tick: Tick = _noop) -> AnalysisResult:
    """RoLoRA vs FFA-LoRA vs FedAvg-LoRA vs the centralised optimum, from the same random A⁰, B⁰ = 0.

    Same step size η = ETA_SCALE/‖b*‖² and the same K local steps for RoLoRA's A step and FedAvg-LoRA.
    """
    g = comparison_grid(quick)
    res = AnalysisResult("comparison")
    for e, (label, (config, K)) in enumerate(g["settings"].items()):
        finals: dict[str, list[float]] = {m: [] for m in (*COMPARED, "centralised")}
        for s in range(g["seeds"]):
            problem = make_problem(config, _seed_int(seed, 3, e, s))
            A0 = random_init(config.d, config.r, _rng(seed, 3, e, s, 1))
            eta = ETA_SCALE / problem.b_star_norm_sq
            for method in COMPARED:
                hist, _, _ = run(problem, method, A0, g["rounds"], eta=eta, local_steps=K)
                for t in range(g["rounds"] + 1):
                    res.rows.append(dict(setting=label, method=method, seed=s, round=t,
                                         sin_theta=hist.sin_theta[t],
                                         population_error=hist.population_error[t],
                                         training_loss=hist.training_loss[t]))
                finals[method].append(hist.population_error[-1])
            A_c, B_c = centralised_solution(problem)
            err_c, sin_c = population_error(problem, A_c, B_c), sin_theta(A_c, problem.A_star)
            finals["centralised"].append(err_c)
            for t in range(g["rounds"] + 1):
                res.rows.append(dict(setting=label, method="centralised", seed=s, round=t, sin_theta=sin_c,
                                     population_error=err_c, training_loss=float("nan")))
            tick()
        res.summary[label] = {m: float(np.median(v)) for m, v in finals.items()}
    return res


# ---------------------------------------------------------------- 4. finite samples -------------
def samples_grid(quick: bool) -> dict[str, Any]:
    """Grid of experiment 4: d = 50, N = 10, δ0 = 0.9; m per client from 1 to 2000."""
    ms = [1, 5, 20, 100, 1000] if quick else [1, 2, 5, 10, 20, 50, 100, 200, 500, 2000]
    return dict(ms=ms, noises=[0.0, 0.1], seeds=2 if quick else 5, rounds=40 if quick else 100,
                delta0=0.9, config=ProblemConfig(d=50, k=10, r=1, n_clients=10))


def finite_samples(seed: int, quick: bool = False, tick: Tick = _noop) -> AnalysisResult:
    """Final sin θ of analysed RoLoRA against the per-client sample size m (with and without noise).

    Without noise a* is a fixed point for every m; the question is from which m the iteration
    reaches it. With noise, the reachable sin θ is limited by the statistical error ~σ·sqrt(d/(N·m)).
    """
    g = samples_grid(quick)
    res = AnalysisResult("finite_samples")
    for e, noise in enumerate(g["noises"]):
        for j, m in enumerate(g["ms"]):
            config = ProblemConfig(**{**vars(g["config"]), "m": m, "noise_std": noise})
            finals = []
            for s in range(g["seeds"]):
                problem = make_problem(config, _seed_int(seed, 4, e, j, s))
                A0 = init_at_angle(problem.A_star, g["delta0"], _rng(seed, 4, e, j, s, 1))
                hist, _, _ = run(problem, "rolora", A0, g["rounds"], eta=ETA_SCALE / problem.b_star_norm_sq)
                finals.append(hist.sin_theta[-1])
                res.rows.append(dict(noise_std=noise, m=m, seed=s, final_sin_theta=hist.sin_theta[-1],
                                     final_population_error=hist.population_error[-1]))
            tick()
        converged = [r["m"] for r in res.rows if r["noise_std"] == noise and r["final_sin_theta"] < 1e-6]
        counts = {m: converged.count(m) for m in g["ms"]}
        all_ok = [m for m in g["ms"] if counts[m] == g["seeds"]]
        res.summary[f"noise={noise}"] = dict(
            smallest_m_all_seeds_below_1e6=min(all_ok) if all_ok else None,
            median_final_sin_theta={str(m): float(np.median([r["final_sin_theta"] for r in res.rows
                                                             if r["noise_std"] == noise and r["m"] == m]))
                                    for m in g["ms"]})
    return res


# ---------------------------------------------------------------- 5. non-convex rate ------------
def rate_grid(quick: bool) -> dict[str, Any]:
    """Grid of experiment 5: d = 20, k = 10, r = 2, N = 5, K = 5 local SGD steps, batch 10, σ = 0.5."""
    horizons = [16, 32, 64, 128] if quick else [32, 64, 128, 256, 512, 1024, 2048]
    return dict(horizons=horizons, seeds=1 if quick else 3, eta0=0.5, local_steps=5, batch_size=10,
                config=ProblemConfig(d=20, k=10, r=2, n_clients=5, noise_std=0.5, design="population"))


def nonconvex_rate(seed: int, quick: bool = False, tick: Tick = _noop) -> AnalysisResult:
    """min_{t<=T} ‖∇F‖² of stochastic RoLoRA with η = eta0/√T, against T; log-log slope fitted.

    F is the population federated low-rank regression loss (``stochastic`` module); the slope of the
    seed-averaged minimum should be <= −1/2 if it decays at least like O(1/√T).
    """
    g = rate_grid(quick)
    res = AnalysisResult("nonconvex_rate")
    problem = make_problem(g["config"], _seed_int(seed, 5))
    mins = []
    for j, T in enumerate(g["horizons"]):
        eta = g["eta0"] / np.sqrt(T)
        per_seed = []
        for s in range(g["seeds"]):
            rng = _rng(seed, 5, j, s)
            A0 = random_init(g["config"].d, g["config"].r, rng)
            curve = rolora_sgd(problem, A0, T, eta, g["local_steps"], g["batch_size"], rng)
            per_seed.append(float(curve.min()))
            res.rows.append(dict(T=T, seed=s, eta=eta, min_grad_sq=float(curve.min()),
                                 mean_grad_sq=float(curve.mean()), final_grad_sq=float(curve[-1])))
            tick()
        mins.append(float(np.mean(per_seed)))
    slope, intercept = loglog_slope(np.asarray(g["horizons"], float), np.asarray(mins))
    mean_curve = [np.mean([r["mean_grad_sq"] for r in res.rows if r["T"] == T]) for T in g["horizons"]]
    res.summary = dict(slope_min_grad_sq=slope, intercept=intercept,
                       slope_mean_grad_sq=loglog_slope(np.asarray(g["horizons"], float), np.asarray(mean_curve))[0],
                       horizons=g["horizons"], mean_min_grad_sq=mins)
    return res


EXPERIMENTS: dict[str, Callable[..., AnalysisResult]] = {
    "theorem": theorem_contraction,
    "ffa_floor": ffa_floor,
    "comparison": method_comparison,
    "finite_samples": finite_samples,
    "nonconvex_rate": nonconvex_rate,
}


def n_units(name: str, quick: bool) -> int:
    """How many times experiment ``name`` calls ``tick``."""
    if name == "theorem":
        g = theorem_grid(quick)
        return len(g["deltas"]) * g["seeds"]
    if name == "ffa_floor":
        g = ffa_grid(quick)
        return len(g["regimes"]) * len(g["deltas"]) * g["seeds"]
    if name == "comparison":
        g = comparison_grid(quick)
        return len(g["settings"]) * g["seeds"]
    if name == "finite_samples":
        g = samples_grid(quick)
        return len(g["noises"]) * len(g["ms"])
    if name == "nonconvex_rate":
        g = rate_grid(quick)
        return len(g["horizons"]) * g["seeds"]
    raise ValueError(f"unknown experiment {name!r}; expected one of {list(EXPERIMENTS)}")
