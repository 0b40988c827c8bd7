"""A ``rolora sweep`` folder as flat rows: one per sweep, per cell, per evaluated round, per lr choice,
per validation round of an lr-phase cell.

The folder (``runs/sweeps/<name>/``, not committed) holds ``sweep.json`` (cells with their labels,
status and ``run_dir``) and one ordinary run folder per cell (``config.json``, ``metrics.jsonl``,
``versions.json``). Sweeps are read as they are: a pending cell has no metrics, a partial one has some
rounds, a failed one may have any; each row keeps the cell's status so the report decides what counts.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Callable

from rolora.llm.config import ConfigError, load_config
from rolora.lab.sweep.record import RECORDED
from rolora.lab.sweep.runner import read_record
from rolora.lab.sweep.spec import SPECS_DIR, resolve_base
from rolora.lab.sweep.twins import COPIED_FROM

Majority = Callable[[dict[str, Any]], "float | None"]

COUNTED = ("done", "partial", "pending", "failed")
"""Cell statuses a sweep row counts (a ``recorded`` cell, done elsewhere, counts once its rows are merged in)."""
SWEEP_FIELDS = ("sweep", "folder", "cells", *COUNTED, "setup", "spec")
CELL_FIELDS = ("sweep", "cell", "experiment", "method", "seed", "lr", "phase", "status", "setting", "axes",
               "rounds_logged", "final_round", "final_test_accuracy", "final_test_loss", "wall_s",
               "upload_bytes", "train_samples", "device", "test_majority", "copied_from", "mean_product_gap",
               "mean_client_drift", "gap_rounds", "final_dp_epsilon", "dp_delta")
CURVE_FIELDS = ("sweep", "cell", "method", "seed", "phase", "status", "setting", "round", "test_accuracy",
                "test_loss", "upload_per_client")
LR_FIELDS = ("sweep", "method", "metric", "chosen", "grid", "scores")
LR_CURVE_FIELDS = ("sweep", "cell", "method", "seed", "phase", "status", "setting", "lr", "rounds_logged",
                   "rounds_planned", "device", "round", "val_accuracy", "val_loss")
NOT_AXES = {"experiment", "method", "seed", "lr"}
SETUP_KEYS = ("model.name", "model.max_length", "model.dtype", "data.dataset", "data.partition", "data.test_size",
              "lora.rank", "lora.targets", "lora.layers", "lora.dropout", "train.optimizer", "train.local_steps", "train.batch_size",
              "train.dp", "federated.clients", "federated.server_opt")
"""Config keys whose values (over a sweep's main cells) describe its setting in the report."""
EMPTY_MEANS = {"lora.targets": "default", "lora.layers": "all", "train.dp": "off", "federated.server_opt": "none"}
"""What an empty value (an empty list or string, or the OFF value) means for a key; named only where the key
varies within a sweep (else left out)."""
OFF = {"train.dp": "off"}
"""A key's value that says the feature is not used: left out like an empty one (every sweep before it has it)."""
FIXED_LR = "fixed in the spec"
"""An lr row's ``metric`` for a method whose spec gives its lr (no selection in this sweep)."""
SHORT = {"clients": "n", "rank": "r"}
"""Axis letters when the spec names none (the sweep's own ``[axes.X] short`` wins)."""


def find_sweeps(root: Path) -> list[Path]:
    """Sweep folders under ``root`` (or ``root`` itself when it holds a sweep.json), by name."""
    root = Path(root)
    if (root / "sweep.json").exists():
        return [root]
    return sorted(p.parent for p in root.glob("*/sweep.json")) if root.is_dir() else []


def setting_label(axes: dict[str, Any], shorts: dict[str, str] | None = None) -> str:
    """The column id the sweep uses: 'n20-r4' for {clients: 20, rank: 4} with letters n and r (lettered
    axes in letter order, then the others); an axis without a letter is key=value, one whose letter is
    "" its bare value."""
    shorts = {**(shorts or {}), **{k: v for k, v in SHORT.items() if k not in (shorts or {})}}  # spec order first
    order = list(shorts)
    parts = []
    for k in sorted(axes, key=lambda k: (order.index(k) if k in shorts else len(order), k)):
        parts.append(f"{k}={axes[k]}" if k not in shorts else f"{shorts[k]}{axes[k]}")
    return "-".join(parts) or "default"


def axis_letters(spec: Any) -> dict[str, str]:
    """{axis: letter} from a sweep.json spec's ``axes`` (each axis' ``short``), in the spec's order."""
    axes = spec.get("axes", {}) if isinstance(spec, dict) else {}
    return {name: str(a["short"]) for name, a in axes.items() if isinstance(a, dict) and "short" in a}


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """metrics.jsonl's rows; a missing file or a torn last line (a run killed mid-write) is skipped."""
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def gap_means(metrics: list[dict[str, Any]]) -> tuple[float | None, float | None, int | None]:
    """(mean product gap, mean client drift, rounds that logged a finite gap) over a run's rounds; all None
    for a run that predates the gap logging (no row has the key), means None where every round logged
    None (a personalised method: the server cannot see the clients' factors)."""
    if not any("product_gap" in r for r in metrics):
        return None, None, None

    def finite(key: str) -> list[float]:
        return [float(r[key]) for r in metrics
                if isinstance(r.get(key), (int, float)) and not isinstance(r.get(key), bool) and math.isfinite(r[key])]

    gaps, drifts = finite("product_gap"), finite("client_drift")
    return (math.fsum(gaps) / len(gaps) if gaps else None, math.fsum(drifts) / len(drifts) if drifts else None,
            len(gaps))


def final_privacy(metrics: list[dict[str, Any]]) -> tuple[float | None, float | None]:
    """(ε, δ) of the last round that accounted for privacy; (None, None) for a run without differential privacy
    (no row has the key). A logged ε of None means no noise, no guarantee: ``math.inf`` here, which the CSV
    keeps apart from the empty cell of a run without DP."""
    spent = [r for r in metrics if "dp_epsilon" in r]
    if not spent:
        return None, None
    epsilon, delta = spent[-1]["dp_epsilon"], spent[-1].get("dp_delta")
    return (math.inf if epsilon is None else float(epsilon)), (None if delta is None else float(delta))


def _copied_from(run_dir: Path) -> str:
    """The run folder a sweep copied this cell from (a sibling sweep's run of the same config), or ""."""
    path = run_dir / COPIED_FROM
    return str(json.loads(path.read_text()).get("from", "")) if path.is_file() else ""


def _config(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "config.json"
    return json.loads(path.read_text()) if path.exists() else {}


def _borrowed_config(spec: Any, cell: dict[str, Any]) -> dict[str, Any]:
    """A recorded cell's config (it has no run folder here: its twin ran in another sweep), rebuilt from its
    spec's base and its overrides as the sweep would have run it; {} when the base no longer loads."""
    base = spec.get("base") if isinstance(spec, dict) else None
    if not isinstance(base, str):
        return {}
    try:
        return load_config(resolve_base(base, SPECS_DIR), list(cell.get("overrides", []))).to_dict()
    except ConfigError:
        return {}


def setup_text(configs: list[dict[str, Any]]) -> str:
    """'model.name minilm; lora.rank 4 / 8; ...': each SETUP_KEYS value (or values) over the configs."""
    parts = []
    for key in SETUP_KEYS:
        section, name = key.split(".")
        values = []
        for c in configs:
            value = c.get(section, {}).get(name)
            if isinstance(value, float) and value.is_integer():
                value = int(value)
            if key in OFF and value == OFF[key]:
                value = ""
            if value is not None and value not in values:
                values.append(value)
        named = [v for v in values if v not in ([], "")]
        if not named:
            continue  # every cell at the default: nothing to tell apart
        if len(named) < len(values) and key in EMPTY_MEANS:
            named.append(EMPTY_MEANS[key])
        parts.append(f"{key} " + " / ".join(str(x) for x in sorted(named, key=str)))
    return "; ".join(parts)


def _device(run_dir: Path) -> str:
    path = run_dir / "versions.json"
    if not path.exists():
        return ""
    v = json.loads(path.read_text())
    if v.get("gpu"):
        return str(v["gpu"])
    threads = v.get("threads")
    if threads:
        return f"{v.get('device', '?')}, {threads} thread{'s' if threads != 1 else ''}"
    return str(v.get("device") or "")


def cell_rows(sweep: str, folder: Path, cell: dict[str, Any], shorts: dict[str, str] | None = None,
              majority: Majority | None = None, spec: Any = None) -> tuple[dict, list[dict], list[dict], dict]:
    """(one row of the cell's result, its evaluated rounds as curve rows, an lr-phase cell's validated rounds
    as lr-curve rows, its config). ``majority`` maps a cell's config to its test split's majority-class
    accuracy (the caller's: this reader works on the JSON alone); ``spec`` (sweep.json's) rebuilds a recorded
    cell's config, which has no run folder here."""
    labels = cell.get("labels", {})
    axes = {k: v for k, v in labels.items() if k not in NOT_AXES}
    run_dir = folder / cell.get("run_dir", f"cells/{cell['id']}")
    metrics = read_metrics(run_dir)
    common = dict(sweep=sweep, cell=cell["id"], method=labels.get("method", ""), seed=labels.get("seed", ""),
                  phase=cell.get("phase", "main"), status=cell.get("status", "pending"), setting=setting_label(axes, shorts))
    config = _config(run_dir)
    steps, batch = config.get("train", {}).get("local_steps", 0), config.get("train", {}).get("batch_size", 0)
    curve, uploaded = [], 0.0
    for row in metrics:
        if row.get("upload_bytes") is not None:
            uploaded += row["upload_bytes"] / max(1, row.get("participants") or 1)
        if row.get("test_accuracy") is not None:
            curve.append(dict(common, round=row["round"], test_accuracy=row["test_accuracy"],
                              test_loss=row.get("test_loss"), upload_per_client=uploaded))
    last = curve[-1] if curve else {}
    gap, drift, gap_rounds = gap_means(metrics)
    epsilon, delta = final_privacy(metrics)
    result = dict(common, experiment=labels.get("experiment", sweep), lr=labels.get("lr", ""),
                  axes=json.dumps(axes, sort_keys=True),
                  rounds_logged=max((r["round"] for r in metrics), default=0),
                  final_round=last.get("round"), final_test_accuracy=last.get("test_accuracy"),
                  final_test_loss=last.get("test_loss"),
                  wall_s=sum(r.get("wall_s") or 0.0 for r in metrics),
                  upload_bytes=sum(r.get("upload_bytes") or 0 for r in metrics),
                  train_samples=sum((r.get("participants") or 0) * steps * batch for r in metrics),
                  device=_device(run_dir), test_majority=majority(config) if majority and config else None,
                  copied_from=_copied_from(run_dir) or cell.get("from", ""),
                  mean_product_gap=gap, mean_client_drift=drift, gap_rounds=gap_rounds,
                  final_dp_epsilon=epsilon, dp_delta=delta)
    if not config and cell.get("status") == RECORDED:  # for the setting line only; its results come from the twin
        config = _borrowed_config(spec, cell)
    return result, curve, validation_rows(result, metrics, config), config


def planned_rounds(federated: dict[str, Any]) -> int | None:
    """The run's round count: ``rounds``, or with ``reference_clients`` > 0 that count scaled by 1/N (as
    RunConfig.total_rounds; the reader works on the JSON alone)."""
    rounds, ref, n = federated.get("rounds"), federated.get("reference_clients") or 0, federated.get("clients")
    if rounds is None or not ref or not n:
        return rounds
    return max(1, math.ceil(rounds * ref / n))


def validation_rows(result: dict[str, Any], metrics: list[dict[str, Any]], config: dict[str, Any]) -> list[dict]:
    """An lr-phase cell's validation accuracy and loss at each round it scored (none for other phases: only the
    lr phase scores the validation split, to choose the lr)."""
    if result["phase"] != "lr":
        return []
    common = {k: result[k] for k in LR_CURVE_FIELDS if k in result}  # the cell's labels, as in lm-cells.csv
    common["rounds_planned"] = planned_rounds(config.get("federated", {}))
    return [dict(common, round=r["round"], val_accuracy=r["val_accuracy"], val_loss=r.get("val_loss"))
            for r in metrics if r.get("val_accuracy") is not None]


def status_counts(cells: list[dict[str, Any]]) -> dict[str, int]:
    """{status: cells with it} over :data:`COUNTED`, for a sweep row."""
    return {s: sum(c.get("status") == s for c in cells) for s in COUNTED}


def read_sweep(folder: Path, majority: Majority | None = None
               ) -> tuple[dict[str, Any], list[dict], list[dict], list[dict], list[dict]]:
    """(the sweep's row, its cells' rows, their curve rows, its lr choices, its lr cells' validation rows)
    from one sweep folder; ``majority`` as in :func:`cell_rows`."""
    folder = Path(folder)
    meta = read_record(folder / "sweep.json")
    name = meta.get("name") or folder.name
    cells, curves, validation, configs = [], [], [], []
    for cell in meta.get("cells", []):
        row, curve, val, config = cell_rows(name, folder, cell, axis_letters(meta.get("spec")), majority,
                                            meta.get("spec"))
        cells.append(row)
        curves += curve
        validation += val
        if config:  # lr cells differ from main cells only in lr, seed and evaluation: same setting
            configs.append(config)
    sweep = dict(sweep=name, folder=str(folder), cells=len(cells), **status_counts(cells), setup=setup_text(configs),
                 spec=json.dumps(meta.get("spec"), sort_keys=True))
    lrs = [dict(sweep=name, method=m, metric=c.get("metric"), chosen=c.get("chosen"),
                grid=json.dumps(c.get("grid")), scores=json.dumps(c.get("scores"), sort_keys=True))
           for m, c in sorted((meta.get("lr_choice") or {}).items())]
    selected = {r["method"] for r in lrs}
    lrs += [dict(sweep=name, method=m["label"], metric=FIXED_LR, chosen=m["lr"], grid="[]", scores="{}")
            for m in sorted(_spec_methods(meta.get("spec")), key=lambda m: m["label"])
            if m.get("lr") is not None and m["label"] not in selected]
    return sweep, cells, curves, lrs, validation



def _spec_methods(spec: Any) -> list[dict[str, Any]]:
    methods = spec.get("methods", []) if isinstance(spec, dict) else []
    return [m for m in methods if isinstance(m, dict) and "label" in m]
