"""``rolora report``'s section on the additions: accuracy against ε (the ``privacy`` sweep) and RoLoRA with
FedAdam (``clients-50-fedadam``), and the DP columns of ``lm-cells.csv`` they read.

Cell rows are fabricated (seeded) and pass through the CSV as the report reads them; every expected
number is computed here from the same inputs (the interval with scipy's t directly).
"""

from __future__ import annotations

import csv
import json
import math
import statistics
import tomllib

import numpy as np
import pytest
from scipy import stats

from rolora.lab.report.additions_section import FEDADAM, PRIVACY, additions_section
from rolora.lab.report.claim_list import is_fifty_client_sweep
from rolora.lab.report.csv_files import read_rows, write_rows
from rolora.lab.report.extract import extract_sweeps
from rolora.lab.report.lm_results import group_cells
from rolora.lab.report.regimes import DEPARTURES, control_key
from rolora.lab.report.sweep_reader import CELL_FIELDS, final_privacy, setup_text
from rolora.lab.report.sweep_specs import SweepSpec, expand
from rolora.lab.sweep.spec import SPECS_DIR
from rolora.llm.config import load_config
from test_reports import make_sweep, row_of, section

BASE = str(SPECS_DIR / "base" / "minilm-cpu.toml")
COMMON = ["data.dataset=trec", "federated.clients=7", "train.local_steps=3", "train.batch_size=16", "train.lr=5e-3"]
LEVELS = {"none": None, "strong": 2.0, "weak": 0.5}
"""Level name -> DP-SGD noise (None: no DP); by name 'strong' sorts before 'weak', by noise after it."""
METHODS = ("fedavg-lora", "ffa-lora", "rolora")
SEEDS = (0, 1, 2)


def level_config(noise: float | None):
    dp = ["train.dp=off"] if noise is None else ["train.dp=sample", f"train.dp_noise={noise}", "train.dp_clip=0.7"]
    return load_config(BASE, COMMON + dp)


def row(sweep: str, cell: str, method: str, seed: int, level: str, status: str, accuracy: float | None,
        epsilon: float | None = None, delta: float | None = None) -> dict:
    return dict(sweep=sweep, cell=cell, experiment=sweep, method=method, seed=seed, lr=5e-3, phase="main",
                status=status, setting=f"dp{level}", axes=json.dumps({"privacy": level}),
                final_test_accuracy=accuracy, final_dp_epsilon=epsilon, dp_delta=delta)


def privacy_sweep(tmp_path, rows: list[dict]):
    """The rows through lm-cells.csv, grouped with each level's config (what the report renders from)."""
    write_rows(tmp_path / "lm-cells.csv", CELL_FIELDS, rows)
    configs = {f"{r['sweep']}/{r['cell']}": level_config(LEVELS[json.loads(r["axes"])["privacy"]]) for r in rows}
    return group_cells(read_rows(tmp_path / "lm-cells.csv"), configs)


@pytest.fixture
def fabricated(tmp_path):
    """Every level × method × seed done, accuracies and ε drawn from a seeded generator, plus one unfinished
    RoLoRA seed at 'weak' (only seed 0 finished there)."""
    rng = np.random.default_rng(7)
    acc = {(lv, m, s): float(rng.uniform(0.5, 0.9)) for lv in LEVELS for m in METHODS for s in SEEDS}
    eps = {(lv, m, s): float(rng.uniform(1, 6)) for lv in LEVELS for m in METHODS for s in SEEDS if LEVELS[lv]}
    rows = []
    for (lv, m, s), a in acc.items():
        status = "done" if (lv, m) != ("weak", "rolora") or s == 0 else {1: "partial", 2: "pending"}[s]
        rows.append(row(PRIVACY, f"{lv}-{m}-s{s}", m, s, lv, status, a if status == "done" else None,
                        eps.get((lv, m, s)), 1e-5 if LEVELS[lv] else None))
    return acc, eps, additions_section(privacy_sweep(tmp_path, rows))


def mean_std(values: list[float]) -> str:
    return f"{100 * statistics.fmean(values):.1f} ± {100 * statistics.stdev(values):.1f} (n={len(values)})"


def test_the_table_gives_each_levels_accuracy_and_epsilon_per_method_in_order_of_noise(fabricated):
    acc, eps, text = fabricated
    part = section(text, "#### Accuracy against ε")
    table = part.split("Paired per-seed")[0]
    assert [line.split("|")[1].strip() for line in table.splitlines() if line.startswith("| ") and "level" not in line] \
        == ["none", "weak", "strong"]
    for lv in LEVELS:
        cells = row_of(table, lv)
        for i, m in enumerate(METHODS):
            seeds = [0] if (lv, m) == ("weak", "rolora") else list(SEEDS)
            values = [acc[lv, m, s] for s in seeds]
            shown = mean_std(values) if len(values) > 1 else f"{100 * values[0]:.1f} (n=1, no std)"
            assert cells[1 + 2 * i] == shown
            assert cells[2 + 2 * i] == ("∞ (no DP)" if LEVELS[lv] is None
                                        else f"{statistics.fmean(eps[lv, m, s] for s in seeds):.2f}")
    c = level_config(0.5)  # the regime is read from the configs, not the spec's comments
    assert (f"{c.federated.clients} iid clients × {c.total_rounds} rounds × {c.train.local_steps} local steps × batch "
            f"{c.train.batch_size}") in part
    assert "C = 0.7" in part and "σ = 0.5 / 2" in part


def test_the_paired_differences_are_the_t_intervals_of_the_per_seed_differences(fabricated):
    acc, _, text = fabricated
    table = section(text, "#### Accuracy against ε").split("Paired per-seed")[1]
    for lv in ("none", "strong"):
        for i, y in enumerate(("fedavg-lora", "ffa-lora")):
            d = [acc[lv, "rolora", s] - acc[lv, y, s] for s in SEEDS]
            half = stats.t.ppf(0.975, len(d) - 1) * statistics.stdev(d) / math.sqrt(len(d))
            mean = statistics.fmean(d)
            assert row_of(table, lv)[1 + i] == \
                f"{100 * mean:+.1f} [{100 * (mean - half):+.1f}, {100 * (mean + half):+.1f}] (n=3)"
    one = acc["weak", "rolora", 0] - acc["weak", "fedavg-lora", 0]  # seed 0 alone pairs: no interval
    assert row_of(table, "weak")[1] == f"{100 * one:+.1f} (1 paired seed; an interval needs 2)"


def test_unfinished_seeds_are_said(fabricated):
    part = section(fabricated[2], "#### Accuracy against ε")
    assert "weak RoLoRA: 1 partial, 1 pending" in part
    assert "reproduced" not in fabricated[2]  # no verdict words: these are measurements


def test_fedadam_against_rolora_is_paired_per_seed(tmp_path):
    rng = np.random.default_rng(3)
    plain, adam = rng.uniform(0.6, 0.8, 3), rng.uniform(0.6, 0.8, 2)
    rows = [dict(row(FEDADAM, f"r{s}", "rolora", s, "x", "done", float(a)), setting="default", axes="{}")
            for s, a in enumerate(plain)]
    rows += [dict(row(FEDADAM, f"f{s}", "rolora-fedadam", s, "x", "done", float(a)), setting="default", axes="{}")
             for s, a in zip((2, 0), adam)]  # seeds 2 and 0 finished, listed out of order
    rows.append(dict(row(FEDADAM, "f1", "rolora-fedadam", 1, "x", "pending", None), setting="default", axes="{}"))
    write_rows(tmp_path / "lm-cells.csv", CELL_FIELDS, rows)
    config = load_config(BASE, ["federated.clients=50", 'federated.server_opt="fedadam:lr=1e-2:tau=1e-3"'])
    sweeps = group_cells(read_rows(tmp_path / "lm-cells.csv"), {f"{FEDADAM}/{r['cell']}": config for r in rows})
    part = section(additions_section(sweeps), "#### RoLoRA with FedAdam")
    d = [adam[1] - plain[0], adam[0] - plain[2]]
    half = stats.t.ppf(0.975, 1) * statistics.stdev(d) / math.sqrt(2)
    mean = statistics.fmean(d)
    assert f": {100 * mean:+.1f} [{100 * (mean - half):+.1f}, {100 * (mean + half):+.1f}] (n=2)." in part
    assert row_of(part, "RoLoRA")[1] == mean_std(list(plain))
    assert "fedadam(lr=0.01, beta1=0.9, beta2=0.99, tau=0.001)" in part  # the defaults the run used, spelled out
    assert "50 iid clients" in part and "RoLoRA + FedAdam: 1 pending" in part


def test_a_sweep_not_run_says_so_with_its_command_and_planned_regime():
    text = additions_section({}, {PRIVACY: SweepSpec(PRIVACY, {"c": level_config(2.0)}, False)})
    privacy, fedadam = section(text, "#### Accuracy against ε"), section(text, "#### RoLoRA with FedAdam")
    assert "**Not run yet.**" in privacy and "`rolora sweep privacy`" in privacy
    assert "7 iid clients" in privacy  # the planned regime, from the spec's configs
    assert "**Not run yet.**" in fedadam and "`rolora sweep clients-50-fedadam`" in fedadam


# ------------------------------------------------------------------------------------- extraction
def test_final_epsilon_is_the_last_accounted_rounds_and_none_means_infinite():
    assert final_privacy([{"round": 0}, {"round": 1}]) == (None, None)  # no DP
    rows = [{"round": 0}, {"round": 1, "dp_epsilon": 0.9, "dp_delta": 1e-5}, {"round": 2, "dp_epsilon": 1.4, "dp_delta": 1e-5}]
    assert final_privacy(rows) == (1.4, 1e-5)
    assert final_privacy(rows + [{"round": 3, "dp_epsilon": None, "dp_delta": 1e-5}]) == (math.inf, 1e-5)


def test_old_rows_without_the_dp_columns_load_and_new_ones_carry_epsilon(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    old = [f for f in CELL_FIELDS if f not in ("final_dp_epsilon", "dp_delta")]
    with open(data / "lm-cells.csv", "w", newline="") as fh:  # committed before the columns existed
        w = csv.DictWriter(fh, fieldnames=old, restval="")
        w.writeheader()
        w.writerow(dict(sweep="old", cell="c0", method="rolora", seed="0", phase="main", status="done",
                        setting="default", axes="{}", final_test_accuracy="0.8"))
    folder = make_sweep(tmp_path / "sweeps", PRIVACY, [("rolora", 0, {}, "done", 0.7), ("rolora", 1, {}, "done", 0.75)])
    for cell, epsilon in (("c0", 2.5), ("c1", None)):
        metrics = folder / "cells" / cell / "metrics.jsonl"
        rows = [json.loads(line) for line in metrics.read_text().splitlines()]
        rows = [dict(r, dp_epsilon=epsilon, dp_delta=1e-5) if r["round"] else r for r in rows]
        metrics.write_text("".join(json.dumps(r) + "\n" for r in rows))
    extract_sweeps(tmp_path / "sweeps", data)
    cells = {(r["sweep"], r["cell"]): r for r in read_rows(data / "lm-cells.csv")}
    assert (cells["old", "c0"]["final_dp_epsilon"], cells["old", "c0"]["dp_delta"]) == ("", "")
    assert cells[PRIVACY, "c0"]["final_dp_epsilon"] == "2.5" and cells[PRIVACY, "c1"]["final_dp_epsilon"] == "inf"
    groups = group_cells(list(cells.values()))
    assert groups["old"].groups["default"]["rolora"].privacy == [(None, None)]
    assert groups[PRIVACY].groups["default"]["rolora"].privacy == [(2.5, 1e-5), (math.inf, 1e-5)]


# ------------------------------------------------------------------------------------- elsewhere
def test_the_new_sweeps_claim_nothing_and_compare_only_with_their_like():
    raw = tomllib.loads((SPECS_DIR / f"{FEDADAM}.toml").read_text())
    fedadam = SweepSpec(FEDADAM, expand(raw, FEDADAM, {}), True)
    assert fedadam.configs and not is_fifty_client_sweep(fedadam)  # no LoRA baseline: no 50-client claim
    with_baseline = load_config(BASE, ["federated.clients=50", "federated.method=fedavg-lora"])
    assert is_fifty_client_sweep(SweepSpec("x", {**fedadam.configs, "b": with_baseline}, True))
    local = DEPARTURES[3]  # a DP-SGD run is no controlled comparison for a run without DP
    plain, longer = load_config(BASE, COMMON), load_config(BASE, COMMON[:2] + ["train.local_steps=6", "train.batch_size=8"])
    assert control_key(plain, local) == control_key(longer, local)
    assert control_key(level_config(0.5), local) != control_key(level_config(None), local)


def test_the_setting_line_names_dp_and_the_server_optimiser_only_where_used():
    off = {"train": {"dp": "off"}, "federated": {"server_opt": ""}}
    assert setup_text([off]) == ""
    assert setup_text([off, {"train": {"dp": "sample"}, "federated": {"server_opt": "fedadam"}}]) == \
        "train.dp off / sample; federated.server_opt fedadam / none"
