"""The linear-theory part of the report, from the ``theory-*.csv`` rows (``rolora theory``'s outputs).

Three claims: the linear contraction theorem (Theorem 4.5), FFA-LoRA's loss floor (Proposition 4.6)
and the non-convex O(1/√T) rate, where both the running minimum's and the round average's slopes
are shown (:mod:`rolora.lab.report.slopes` says why they differ and which one a proof bounds).
"""

from __future__ import annotations

from collections import defaultdict

from rolora.lab.report import verdicts as v
from rolora.theory import analyses as ex
from rolora.lab.report.claims import ClaimRow
from rolora.lab.report.csv_files import number
from rolora.lab.report.markdown import table
from rolora.lab.report.slopes import per_seed_slopes, slope

SLOPE_TOLERANCE = 0.05
"""The average's slope counts as O(1/√T) when ≤ −0.5 + this (lower-order terms bend a 7-point fit)."""
FLOOR_TOLERANCE = 1e-3
"""FFA-LoRA's floor ratio counts as 1 (the proposition with c̃ → 0) within this at m = 1e5."""
THEOREM, FLOOR, RATE = "Thm 4.5: linear contraction", "Prop 4.6: FFA-LoRA's floor", "Non-convex rate"
NOT_RUN = "**Not run yet.** Run `rolora theory` (NumPy, under a minute), then `rolora report`."


def theorem_part(rows: list[dict[str, str]], summary: list[ClaimRow]) -> str:
    out = ["### Theorem 4.5: RoLoRA's linear contraction", "",
           "**Paper.** In rank-1 federated linear regression, sin θ(a^{t+1}, a*) ≤ sin θ(a^t, a*) · "
           "ρ with ρ = sqrt(1 − η(1 − δ0²)‖b*‖²): exponential convergence to the global optimum.", ""]
    if not rows:
        summary.append(ClaimRow(THEOREM, "sin θ ratio ≤ ρ every round", "–", v.NOT_RUN))
        return "\n".join(out + [NOT_RUN, ""])
    body = [[r["delta0_label"], f"{number(r['delta0']):.4f}", f"{number(r['bound_rate']):.5f}",
             f"{number(r['worst_measured_ratio']):.5f}", f"{number(r['worst_ratio_over_bound']):.4f}",
             f"{number(r['mean_measured_rate']):.3f}",
             "–" if number(r["rounds_to_1e6_measured"]) is None else f"{number(r['rounds_to_1e6_measured']):.0f}",
             f"{number(r['rounds_to_1e6_bound']):,.0f}"] for r in rows]
    holds = all(r["bound_holds_every_round"] in ("true", "True") for r in rows)
    verdict = v.REPRODUCED if holds else v.NOT_REPRODUCED
    worst = max(number(r["worst_ratio_over_bound"]) for r in rows)
    summary.append(ClaimRow(THEOREM, "sin θ ratio ≤ ρ every round", f"largest ratio / ρ = {worst:.4f}", verdict))
    cfg = ex.theorem_grid(quick=False)["config"]
    out += [f"**Ours** (`rolora theory`, d = {cfg.d}, N = {cfg.n_clients} clients, m = {cfg.m:,} samples each, "
            f"η‖b*‖² = {ex.ETA_SCALE}; worst = "
            "the largest measured per-round ratio over rounds and seeds):", "",
            table(["start", "δ0", "bound ρ", "worst ratio", "worst / ρ", "mean rate", "rounds to 1e-6",
                   "rounds to 1e-6 by the bound"], body, "lrrrrrrr"), "",
            f"**Verdict: {verdict}** — the bound {'held in every round of every run' if holds else 'was exceeded in some round'} "
            "(the rule: reproduced when the measured ratio never exceeds ρ). As the critique of the bound says, "
            "it is far from tight: from a random start (1 − δ0² ≈ 1/d) it predicts the number of rounds in the "
            "last column, the measured iteration needs the one before it.", ""]
    return "\n".join(out)


def floor_part(rows: list[dict[str, str]], summary: list[ClaimRow]) -> str:
    out = ["### Proposition 4.6: FFA-LoRA's floor", "",
           "**Paper.** With A frozen at a⁰, even the best B leaves loss ‖b*‖²δ0² times a constant (1 + c̃).", ""]
    if not rows:
        summary.append(ClaimRow(FLOOR, "loss / (‖b*‖²δ0²) = 1 + c̃", "–", v.NOT_RUN))
        return "\n".join(out + [NOT_RUN, ""])
    body = [[r["regime"], f"{number(r['min_ratio']):.6f}", f"{number(r['median_ratio']):.6f}",
             f"{number(r['max_ratio']):.6f}"] for r in rows]
    large = [r for r in rows if r["regime"].startswith("m=1e5")]
    ok = bool(large) and all(abs(number(r[k]) - 1) <= FLOOR_TOLERANCE for r in large for k in ("min_ratio", "max_ratio"))
    span = ", ".join(f"{number(r['min_ratio']):.6f}–{number(r['max_ratio']):.6f}" for r in large) or "–"
    summary.append(ClaimRow(FLOOR, "loss / (‖b*‖²δ0²) = 1 + c̃", f"ratio {span} at m = 10⁵",
                            v.REPRODUCED if ok else v.NOT_REPRODUCED))
    deltas = ex.ffa_grid(quick=False)["deltas"]
    out += [f"**Ours**: FFA-LoRA's final loss / (‖b*‖²δ0²) over δ0 ∈ [{min(deltas)}, {max(deltas)}] and seeds:", "",
            table(["regime", "min", "median", "max"], body, "lrrr"), "",
            f"**Verdict: {v.REPRODUCED if ok else v.NOT_REPRODUCED}** (the rule: the ratio is 1 within "
            f"{FLOOR_TOLERANCE:g} at m = 10⁵ samples per client). With few noisy samples the ratio is above 1, "
            "so the paper's c̃ is ≥ 0 here.", ""]
    return "\n".join(out)


def rate_part(rows: list[dict[str, str]], summary: list[ClaimRow]) -> str:
    out = ["### The non-convex O(1/√T) rate", "",
           "**Paper.** Under smoothness RoLoRA converges at O(1/√T) in the squared gradient norm, like FedAvg. "
           "Our notes on the paper (`shared/reference/rolora-paper.md`; its full text was only partly "
           "reachable) record the bound on min_{t≤T} ‖∇F‖². Proofs of this kind (FedAvg's included) bound "
           "the round average (1/T) Σ_t E‖∇F(x_t)‖² through a telescoped descent inequality, and the minimum "
           "inherits the bound because min ≤ average: the average is the statistic the argument controls.", ""]
    if not rows:
        summary.append(ClaimRow(RATE, "O(1/√T): slope ≤ −0.5", "–", v.NOT_RUN))
        return "\n".join(out + [NOT_RUN, ""])
    stats = {"min": "min_grad_sq", "mean": "mean_grad_sq", "final": "final_grad_sq"}
    by = {k: defaultdict(list) for k in stats}
    for r in rows:
        for k, col in stats.items():
            by[k][int(number(r["T"]))].append(number(r[col]))
    fits = {k: (slope(by[k]), per_seed_slopes(by[k])) for k in stats}
    horizons = sorted(by["min"])
    names = {"min": "running minimum min_{t≤T} ‖∇F‖²", "mean": "round average (1/(T+1)) Σ_t ‖∇F‖²",
             "final": "last round ‖∇F(x_T)‖²"}
    body = [[names[k], f"{s:.2f}", ", ".join(f"{x:.2f}" for x in seeds)] for k, (s, seeds) in fits.items()]
    mean_slope = fits["mean"][0]
    ok = mean_slope <= -0.5 + SLOPE_TOLERANCE
    summary.append(ClaimRow(RATE, "O(1/√T): slope ≤ −0.5",
                            f"round average T^{mean_slope:.2f} (running minimum T^{fits['min'][0]:.2f})",
                            v.REPRODUCED if ok else v.NOT_REPRODUCED))
    out += [f"**Ours** (stochastic RoLoRA, η = 0.5/√T, T ∈ {{{', '.join(map(str, horizons))}}}, "
            f"{len(by['min'][horizons[0]])} seeds; log-log slope of the seed mean against T, and each seed's own):", "",
            table(["statistic", "slope", "per seed"], body, "lrl"), "",
            f"**Verdict: {v.REPRODUCED if ok else v.NOT_REPRODUCED}** — judged on the round average, the statistic "
            f"the rate's proof bounds (the rule: its slope ≤ −0.5 + {SLOPE_TOLERANCE:g}). It decays as "
            f"T^{mean_slope:.2f}: at the theorem's rate, not faster. The running minimum falls faster "
            f"(T^{fits['min'][0]:.2f}) because the minimum of a noisy curve picks the luckiest of T rounds: the "
            f"README's {fits['min'][0]:.2f} is this statistic, and read as the rate it overstates it. Both "
            "statistics are consistent with the O(1/√T) bound; only the average measures the rate.", ""]
    return "\n".join(out)


def theory_section(theorem: list, floor: list, rate: list, summary: list[ClaimRow]) -> str:
    return "\n".join([theorem_part(theorem, summary), floor_part(floor, summary), rate_part(rate, summary)])
