"""Accuracy curves of finished LM cells (rows of ``lm-curves.csv``), averaged over seeds.

Used by the figures (accuracy vs round, accuracy vs upload) and by the equal-bytes comparison.
A point of the mean curve averages the seeds that logged that round; ``n`` says how many did.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from rolora.lab.report.csv_files import number


@dataclass(frozen=True)
class MeanCurve:
    rounds: np.ndarray
    accuracy: np.ndarray
    std: np.ndarray
    upload_per_client: np.ndarray
    n: np.ndarray


def seed_curves(rows: list[dict[str, str]], sweep: str) -> dict[tuple[str, str], dict[str, list[tuple]]]:
    """{(setting, method): {seed: [(round, accuracy, upload per client), ...]}} of done main cells."""
    out: dict = defaultdict(lambda: defaultdict(list))
    for r in rows:
        if r["sweep"] == sweep and r["phase"] == "main" and r["status"] == "done":
            out[(r["setting"], r["method"])][r["seed"]].append(
                (int(number(r["round"])), number(r["test_accuracy"]), number(r["upload_per_client"]) or 0.0))
    return {k: {s: sorted(v) for s, v in seeds.items()} for k, seeds in out.items()}


def mean_curve(by_seed: dict[str, list[tuple]]) -> MeanCurve:
    """Mean and std over seeds at each logged round (upload: the seeds' mean)."""
    points: dict[int, list[tuple[float, float]]] = defaultdict(list)
    for curve in by_seed.values():
        for t, acc, up in curve:
            points[t].append((acc, up))
    rounds = sorted(points)
    acc = [np.array([a for a, _ in points[t]]) for t in rounds]
    return MeanCurve(
        rounds=np.array(rounds), accuracy=np.array([a.mean() for a in acc]),
        std=np.array([a.std(ddof=1) if a.size > 1 else 0.0 for a in acc]),
        upload_per_client=np.array([np.mean([u for _, u in points[t]]) for t in rounds]),
        n=np.array([a.size for a in acc]))


def accuracy_within(by_seed: dict[str, list[tuple]], budget: float) -> tuple[list[float], list[int]]:
    """Per seed: the accuracy at its last evaluation with cumulative upload per client ≤ ``budget``
    bytes (round 0, the initial model, always qualifies), and that round."""
    accs, rounds = [], []
    for curve in by_seed.values():
        within = [(t, a) for t, a, up in curve if up <= budget * (1 + 1e-9)]
        if within:
            rounds.append(within[-1][0])
            accs.append(within[-1][1])
    return accs, rounds
