"""One figure per experiment, drawn from exactly the rows written to the CSV beside it.

Matplotlib is imported lazily with the non-interactive Agg backend, so importing rolora.theory stays
cheap and works without a display.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from rolora.theory.analyses import AnalysisResult
from rolora.theory.outputs import atomic_path

FLOOR = 1e-18  # log-scale plots clip at this (exact zeros and round-off)
COLORS = {"rolora": "C0", "ffa": "C1", "fedavg": "C2", "centralised": "k"}
LABELS = {"rolora": "RoLoRA", "ffa": "FFA-LoRA", "fedavg": "FedAvg-LoRA", "centralised": "centralised optimum"}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _select(rows: list[dict[str, Any]], **match: Any) -> list[dict[str, Any]]:
    return [r for r in rows if all(r[k] == v for k, v in match.items())]


def _save(fig, path: Path) -> Path:
    """Write ``fig`` to ``path`` atomically (the format follows its suffix) and close it."""
    try:
        fig.tight_layout()
        with atomic_path(path) as tmp:  # the temporary name ends in .tmp: name the format
            fig.savefig(tmp, dpi=110, format=path.suffix.lstrip(".") or "png")
    finally:
        _pyplot().close(fig)
    return path


def plot_theorem(res: AnalysisResult, path: Path) -> Path:
    """Left: sin θ per round (seed 0) with the bound's envelope δ0·ρ^t. Right: rates vs bound."""
    plt = _pyplot()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    labels = list(res.summary)
    for i, label in enumerate(labels):
        rows = _select(res.rows, delta0_label=label, seed=0)
        t = [r["round"] for r in rows]
        ax1.semilogy(t, np.maximum([r["sin_theta"] for r in rows], FLOOR), color=f"C{i}",
                     label=f"δ0={res.summary[label]['delta0']:.3f}" + (" (random init)" if label == "random" else ""))
        ax1.semilogy(t, [r["bound_envelope"] for r in rows], color=f"C{i}", ls="--", lw=1)
    ax1.set(xlabel="round t", ylabel="sin θ(a^t, a*)", title="RoLoRA (solid) vs theorem bound δ0·ρ^t (dashed)",
            ylim=(1e-17, 2))
    ax1.legend(fontsize=8)
    x = np.arange(len(labels))
    s = [res.summary[lb] for lb in labels]
    ax2.plot(x, [v["bound_rate"] for v in s], "ks--", label="bound ρ = sqrt(1 − η(1−δ0²)‖b*‖²)")
    ax2.plot(x, [v["worst_measured_ratio"] for v in s], "C3o-", label="worst measured round ratio")
    ax2.plot(x, [v["mean_measured_rate"] for v in s], "C0^-", label="mean measured rate (geometric)")
    ax2.set_xticks(x, [f"{v['delta0']:.3g}" + ("\nrandom" if lb == "random" else "") for lb, v in zip(labels, s)])
    ax2.set(xlabel="δ0 = sin θ(a⁰, a*)", ylabel="per-round contraction of sin θ", ylim=(0, 1.05),
            title="measured rate vs bound (near 1 = nearly vacuous)")
    ax2.legend(fontsize=8, loc="lower left")
    return _save(fig, path)


def plot_ffa_floor(res: AnalysisResult, path: Path) -> Path:
    """Left: FFA-LoRA's error floor vs ‖b*‖²δ0² (and RoLoRA's final error). Right: the ratio 1 + c̃."""
    plt = _pyplot()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    for i, regime in enumerate(res.summary):
        rows = _select(res.rows, regime=regime)
        pred = np.array([r["predicted"] for r in rows])
        ax1.loglog(pred, [r["ffa_floor"] for r in rows], "o", color=f"C{i}", label=f"FFA-LoRA, {regime}")
        ax1.loglog(pred, np.maximum([r["rolora_error"] for r in rows], FLOOR), "x", color=f"C{i}",
                   alpha=0.6, label=f"RoLoRA (30 rounds), {regime}")
        ax2.semilogx([r["delta0"] for r in rows], [r["ratio"] for r in rows], "o", color=f"C{i}", label=regime)
    lim = np.array([min(r["predicted"] for r in res.rows), max(r["predicted"] for r in res.rows)])
    ax1.loglog(lim, lim, "k--", lw=1, label="‖b*‖²δ0² (proposition)")
    ax1.set(xlabel="‖b*‖² δ0²", ylabel="population error ‖AB − a*b*ᵀ‖²", title="FFA-LoRA floor vs prediction")
    ax1.legend(fontsize=7)
    ax2.axhline(1.0, color="k", ls="--", lw=1)
    ax2.set(xlabel="δ0", ylabel="floor / (‖b*‖²δ0²) = 1 + c̃", title="the constant: c̃ >= 0, → 0 as N·m grows")
    ax2.legend(fontsize=8)
    return _save(fig, path)


def plot_comparison(res: AnalysisResult, path: Path) -> Path:
    """Per setting: population error and sin θ over rounds (median over seeds) for every method."""
    plt = _pyplot()
    settings = list(res.summary)
    fig, axes = plt.subplots(2, len(settings), figsize=(3.6 * len(settings), 6.5), squeeze=False)
    for j, setting in enumerate(settings):
        for method in ("rolora", "ffa", "fedavg", "centralised"):
            rows = _select(res.rows, setting=setting, method=method)
            rounds = sorted({r["round"] for r in rows})
            for i, key in enumerate(("population_error", "sin_theta")):
                med = [np.median([r[key] for r in rows if r["round"] == t]) for t in rounds]
                axes[i, j].semilogy(rounds, np.maximum(med, FLOOR), color=COLORS[method], label=LABELS[method],
                                    ls="--" if method == "centralised" else "-")
        axes[0, j].set_title(setting, fontsize=10)
        axes[0, j].set(ylabel="population error" if j == 0 else None)
        axes[1, j].set(xlabel="round", ylabel="sin θ(A, A*)" if j == 0 else None)
    axes[0, 0].legend(fontsize=8)
    return _save(fig, path)


def plot_finite_samples(res: AnalysisResult, path: Path, d: int, n_clients: int) -> Path:
    """Final sin θ vs samples per client m (median, min–max band over seeds)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for i, noise in enumerate(sorted({r["noise_std"] for r in res.rows})):
        rows = _select(res.rows, noise_std=noise)
        ms = sorted({r["m"] for r in rows})
        vals = [np.maximum([r["final_sin_theta"] for r in rows if r["m"] == m], FLOOR) for m in ms]
        ax.loglog(ms, [np.median(v) for v in vals], "o-", color=f"C{i}", label=f"label noise σ={noise}")
        ax.fill_between(ms, [v.min() for v in vals], [v.max() for v in vals], color=f"C{i}", alpha=0.2)
    ax.axvline(d / n_clients, color="k", ls=":", lw=1, label="N·m = d")
    ax.set(xlabel="samples per client m", ylabel="final sin θ(a, a*)",
           title=f"RoLoRA vs sample size (d={d}, N={n_clients})")
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_rate(res: AnalysisResult, path: Path) -> Path:
    """min_{t<=T} ‖∇F‖² vs T (log-log) with the fitted slope printed and a T^(-1/2) reference."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    T = np.array(res.summary["horizons"], float)
    ax.loglog([r["T"] for r in res.rows], [r["min_grad_sq"] for r in res.rows], "o", color="C0", alpha=0.35,
              label="min over rounds, per seed")
    ax.loglog(T, res.summary["mean_min_grad_sq"], "o-", color="C0", label="min over rounds, seed mean")
    mean_avg = [np.mean([r["mean_grad_sq"] for r in res.rows if r["T"] == t]) for t in T]
    ax.loglog(T, mean_avg, "s-", color="C2", label="average over rounds, seed mean")
    slope, icpt = res.summary["slope_min_grad_sq"], res.summary["intercept"]
    ax.loglog(T, np.exp(icpt) * T**slope, "C3--", label=f"fit: slope {slope:.2f}")
    ax.loglog(T, res.summary["mean_min_grad_sq"][0] * (T / T[0]) ** -0.5, "k:", label="O(1/√T) reference")
    ax.text(0.97, 0.97, f"fitted log-log slope (min): {slope:.2f}\n(average over rounds: "
            f"{res.summary['slope_mean_grad_sq']:.2f})\nO(1/√T) is −0.50", transform=ax.transAxes, fontsize=9,
            ha="right", va="top", bbox=dict(facecolor="white", alpha=0.8, edgecolor="none"))
    ax.set(xlabel="horizon T (rounds), η = η0/√T", ylabel="‖∇F(A, B)‖²",
           title="stochastic RoLoRA, non-convex rate")
    ax.legend(fontsize=8, loc="lower left")
    return _save(fig, path)
