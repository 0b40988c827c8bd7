"""Figures and numbers of the toy experiment: accuracy and loss vs round (PNG) plus a CSV of all values."""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path

from rolora.federated.atomic import atomic_file
from rolora.toy.train import History

SPLIT_TITLES = {
    "5x2": "5 clients × 2 labels",
    "10x1": "10 clients × 1 label",
    "iid": "IID",
    "dirichlet": "Dirichlet",
}


def write_csv(histories: Sequence[History], path: str | Path) -> Path:
    """One row per (split, method, round) with the full configuration and the metrics (written atomically)."""
    rows = [row for h in histories for row in h.rows()]
    path = Path(path)
    with atomic_file(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def plot_histories(histories: Sequence[History], path: str | Path, title: str | None = None) -> Path:
    """Test accuracy (top) and test loss (bottom) vs round; one column per split, one line per method
    (written atomically; the format follows ``path``'s suffix)."""
    import matplotlib

    matplotlib.use("Agg")  # files only; never needs a display
    import matplotlib.pyplot as plt

    splits = list(dict.fromkeys(h.config.split for h in histories))
    methods = list(dict.fromkeys(h.config.method for h in histories))
    colors = {m: plt.get_cmap("tab10")(i % 10) for i, m in enumerate(methods)}
    fig, axes = plt.subplots(2, len(splits), figsize=(5.2 * len(splits), 7.0), squeeze=False, sharex="col")
    for col, split in enumerate(splits):
        for h in (h for h in histories if h.config.split == split):
            style = dict(color=colors[h.config.method], label=h.config.method, lw=1.8)
            axes[0, col].plot(h.rounds, [100 * a for a in h.test_acc], **style)
            axes[1, col].plot(h.rounds, h.test_loss, **style)
        name = SPLIT_TITLES.get(split, split)
        if split == "dirichlet":
            name += f" (α={histories[0].config.alpha_dir:g})"
        axes[0, col].set_title(name)
        axes[0, col].set_ylabel("test accuracy (%)")
        axes[1, col].set_ylabel("test loss (cross-entropy)")
        axes[1, col].set_xlabel("round")
        axes[0, col].set_ylim(0, 100)
        finite = [v for h in histories if h.config.split == split for v in h.test_loss if math.isfinite(v)]
        if finite and max(finite) > 10 * min(finite):
            axes[1, col].set_yscale("log")
        for ax in axes[:, col]:
            ax.grid(alpha=0.3)
    axes[0, 0].legend(loc="lower right")
    cfg = histories[0].config
    fig.suptitle(title or (f"MNIST, {cfg.model} model, rank {cfg.rank}, {cfg.local_epochs} local epochs, "
                           f"{cfg.optimizer} lr {cfg.lr:g}, {100 * cfg.subsample:g}% of each client's data, seed {cfg.seed}"))
    fig.tight_layout()
    path = Path(path)
    try:
        with atomic_file(path) as tmp:  # the temporary name ends in .tmp: name the format
            fig.savefig(tmp, dpi=120, format=path.suffix.lstrip(".") or "png")
    finally:
        plt.close(fig)
    return path
