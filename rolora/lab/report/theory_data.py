"""``rolora theory``'s outputs (``out/theory``) as the rows the report keeps.

Read: ``summary.json`` (the theorem's contraction per δ0, FFA-LoRA's floor ratios, the method
comparison) and ``fig5_nonconvex_rate.csv`` (per horizon T and seed, the running minimum and the
round average of ‖∇F‖²). Nothing is recomputed here; ``rolora theory`` is the one producer.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rolora.lab.report.csv_files import read_rows

THEOREM_FIELDS = ("delta0_label", "delta0", "bound_rate", "worst_measured_ratio", "worst_ratio_over_bound",
                  "bound_holds_every_round", "mean_measured_rate", "rounds_to_1e6_measured", "rounds_to_1e6_bound")
FLOOR_FIELDS = ("regime", "min_ratio", "median_ratio", "max_ratio")
COMPARISON_FIELDS = ("setting", "rolora", "ffa", "fedavg", "centralised")
RATE_FIELDS = ("T", "seed", "eta", "min_grad_sq", "mean_grad_sq", "final_grad_sq")
RATE_CSV = "fig5_nonconvex_rate.csv"


def _keyed(summary: dict[str, dict[str, Any]], key: str, fields: tuple[str, ...]) -> list[dict[str, Any]]:
    return [{key: name, **{f: v.get(f) for f in fields if f != key}} for name, v in summary.items()]


def has_theory(theory_dir: Path) -> bool:
    """Whether ``theory_dir`` holds a finished ``rolora theory`` run (its summary.json)."""
    return (Path(theory_dir) / "summary.json").exists()


def theory_rows(theory_dir: Path) -> dict[str, list[dict[str, Any]]]:
    """{"theorem", "ffa_floor", "comparison", "nonconvex_rate"} -> rows; empty lists where not run."""
    theory_dir = Path(theory_dir)
    path = theory_dir / "summary.json"
    results = json.loads(path.read_text()).get("results", {}) if path.exists() else {}
    return {
        "theorem": _keyed(results.get("theorem", {}), "delta0_label", THEOREM_FIELDS),
        "ffa_floor": _keyed(results.get("ffa_floor", {}), "regime", FLOOR_FIELDS),
        "comparison": _keyed(results.get("comparison", {}), "setting", COMPARISON_FIELDS),
        "nonconvex_rate": read_rows(theory_dir / RATE_CSV),
    }
