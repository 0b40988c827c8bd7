"""The report's figures (matplotlib, Agg): accuracy vs round and accuracy vs bytes uploaded.

Each figure has one panel per setting and one line per method: the mean over finished seeds with a
±1 std band (no band where only one seed finished). A figure with no finished cell is not written.
"""

from __future__ import annotations

from itertools import cycle
from pathlib import Path

from rolora.federated.atomic import atomic_file
from rolora.lab.report.lm_curves import mean_curve, seed_curves
from rolora.lab.report.lm_results import METHOD_ORDER, method_order


def _panels(rows, sweep: str, settings: list[str] | None):
    curves = seed_curves(rows, sweep)
    names = sorted({s for s, _ in curves}) if settings is None else [s for s in settings if any(k[0] == s for k in curves)]
    return curves, names


def method_colours(methods) -> dict[str, str]:
    """Matplotlib colours ("C0".."C9") for a figure's methods, distinct within it: a method of
    METHOD_ORDER keeps its own colour in every figure; any other takes the first colours none of the
    figure's known methods use (letting matplotlib's cycle pick would repeat C0, C1: rolora's)."""
    methods = sorted(set(methods), key=method_order)
    known = {m: METHOD_ORDER.index(m) for m in methods if m in METHOD_ORDER}
    free = cycle([i for i in range(10) if i not in known.values()])
    return {m: f"C{known[m] if m in known else next(free)}" for m in methods}


def _save(fig, path: Path) -> Path:
    with atomic_file(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, metadata={"Software": None})
    return path


def accuracy_figure(rows: list[dict[str, str]], sweep: str, settings: list[str], path: Path,
                    x: str = "round", title: str = "") -> Path | None:
    """Test accuracy against ``x`` ('round', or 'upload': cumulative upload per client, log scale)."""
    curves, names = _panels(rows, sweep, settings)
    if not names:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(names), figsize=(max(6.0, 4.2 * len(names)), 3.6), squeeze=False)
    colours = method_colours(m for _, m in curves)  # one colour per method in every panel
    for ax, setting in zip(axes[0], names):
        for method in sorted({m for s, m in curves if s == setting}, key=method_order):
            c = mean_curve(curves[(setting, method)])
            xs = c.rounds if x == "round" else c.upload_per_client / 2**20
            keep = xs > 0 if x == "upload" else xs >= 0
            n = int(c.n.max())
            line, = ax.plot(xs[keep], 100 * c.accuracy[keep], marker=".", color=colours[method],
                            label=f"{method} (n={n})")
            if n > 1:
                ax.fill_between(xs[keep], 100 * (c.accuracy - c.std)[keep], 100 * (c.accuracy + c.std)[keep],
                                color=line.get_color(), alpha=0.2)
        ax.set_title(setting)
        ax.set_xlabel("round" if x == "round" else "uploaded per client (MiB, log)")
        if x == "upload":
            ax.set_xscale("log")
        ax.set_ylabel("test accuracy (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    out = _save(fig, Path(path))
    plt.close(fig)
    return out
