"""``rolora report``'s statistics and what is built on them: the paired t-interval rule, each run counted
once, which way a broken tie goes, the test set's standard error, the product-averaging gap columns,
the departures table read from the specs, and the headline claim of a new 50-client spec.

Fake sweep folders as in ``test_reports``; every expected number is computed here from the inputs.
"""

from __future__ import annotations

import csv
import json
import math
import statistics
from pathlib import Path

import pytest

from rolora.lab.report import verdicts as v
from rolora.lab.report.claim_list import all_claims
from rolora.lab.report.departures import _settings, controlled, ours
from rolora.lab.report.ledger import Ledger
from rolora.lab.report.lm_results import Group, SweepResults
from rolora.lab.report.lm_tables import cell_text
from rolora.lab.report.paired import paired, sampling_se
from rolora.lab.report.regimes import DEPARTURES
from rolora.lab.report.seeds import over_seeds
from rolora.lab.report.sweep_reader import gap_means
from rolora.lab.report.sweep_specs import sweep_specs
from rolora.lab.sweep.spec import SPECS_DIR
from rolora.llm.config import load_config
from test_reports import make_sweep, report, row_of, section

T_975 = {2: 4.302652729911275, 1: 12.706204736174707}
"""Student's t quantile 0.975 by degrees of freedom (a printed t-table's values), for the hand computations."""
N50 = {"clients": 50, "rank": 4}


def by_hand(diffs: list[float]) -> tuple[float, float, float]:
    mean = sum(diffs) / len(diffs)
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (len(diffs) - 1))
    half = T_975[len(diffs) - 1] * sd / math.sqrt(len(diffs))
    return mean, mean - half, mean + half


# ------------------------------------------------------------------------------------- the rule
def test_the_paired_interval_is_the_t_interval_of_the_per_seed_differences():
    x = over_seeds([0.80, 0.74, 0.77, 0.90], seeds=[0, 1, 2, 5])
    y = over_seeds([0.70, 0.76, 0.75, 0.60], seeds=[2, 0, 1, 7])  # seeds 5 and 7 pair with nothing
    d = paired(x, y)
    assert d.seeds == (0, 1, 2)
    assert d.values == pytest.approx((0.80 - 0.76, 0.74 - 0.75, 0.77 - 0.70))
    mean, low, high = by_hand([0.80 - 0.76, 0.74 - 0.75, 0.77 - 0.70])
    assert d.mean == pytest.approx(mean)
    assert d.interval() == pytest.approx((low, high), abs=1e-9)
    assert paired(over_seeds([0.8]), over_seeds([0.7])).interval() is None  # one seed: no spread, no interval
    # the unpaired spread would call this 'within spread'; the paired one is consistent on every seed
    pair = v.compare("x", over_seeds([0.80, 0.70, 0.90]), "y", over_seeds([0.78, 0.68, 0.88]))
    assert pair.outcome == v.AHEAD and pair.interval()[0] > 0


def test_an_interval_that_spans_zero_is_underpowered_and_the_claim_inconclusive(tmp_path):
    diffs = [0.06, -0.02, 0.01]
    rolora = [0.75 + d for d in diffs]
    mean, low, high = by_hand(diffs)
    assert low < 0 < high
    pair = v.compare("rolora", over_seeds(rolora), "fedavg-lora", over_seeds([0.75] * 3))
    assert pair.outcome == v.UNDERPOWERED and v.win_verdict([pair]) == v.INCONCLUSIVE
    make_sweep(tmp_path / "sweeps", "clients-50", [(m, s, N50, "done", a) for m, accs in
                                                   {"rolora": rolora, "fedavg-lora": [0.75] * 3}.items()
                                                   for s, a in enumerate(accs)])
    part = section(report(tmp_path, tmp_path / "sweeps"), "### Fifty clients where the models learn")
    assert (f"fedavg-lora: underpowered ({100 * mean:+.1f} pts, 95 % CI [{100 * low:+.1f}, {100 * high:+.1f}], "
            "3 seeds)") in part
    assert "**Verdict: inconclusive**" in part


def test_each_run_counts_once_a_twin_pair_is_judged_where_it_ran(tmp_path):
    """local-steps' 10-step cells are clients-50's runs (copied): RoLoRA behind there counts in clients-50's
    verdict only; local-steps is judged on its own 30-step cells, where RoLoRA is ahead."""
    behind = {"rolora": [0.70, 0.71, 0.72], "fedavg-lora": [0.75, 0.76, 0.78]}
    ahead = {"rolora": [0.80, 0.81, 0.83], "fedavg-lora": [0.75, 0.76, 0.77]}
    sweeps = tmp_path / "sweeps"
    home = [(m, s, {}, "done", a) for m, accs in behind.items() for s, a in enumerate(accs)]
    make_sweep(sweeps, "clients-50", home)
    folder = make_sweep(sweeps, "local-steps", [(m, s, {"steps": k}, "done", a) for k, by in ((10, behind), (30, ahead))
                                                for m, accs in by.items() for s, a in enumerate(accs)])
    meta = json.loads((folder / "sweep.json").read_text())
    for i, cell in enumerate(meta["cells"][:len(home)]):  # the same order as clients-50's cells c0..c5
        cell["from"] = f"clients-50/c{i}"
    (folder / "sweep.json").write_text(json.dumps(meta))
    text = report(tmp_path, sweeps)
    part = section(text, "### Local steps per round")
    assert "- steps=10: rolora, fedavg-lora — `clients-50`'s runs" in part
    assert "[twin runs: counted in `clients-50` (default)]" in part
    assert "**Verdict: reproduced in kind**" in part  # on k30 alone
    assert "behind in 0" in part and "(1 twin pairs counted elsewhere)" in part
    assert "**Verdict: not reproduced**" in section(text, "### Fifty clients where the models learn")
    # without the copy the same numbers are new evidence, and the 10-step column refutes the claim
    meta["cells"] = [{k: x for k, x in c.items() if k != "from"} for c in meta["cells"]]
    (folder / "sweep.json").write_text(json.dumps(meta))
    again = section(report(tmp_path / "b", sweeps), "### Local steps per round")
    assert "**Verdict: not reproduced**" in again


def test_a_broken_tie_says_which_way_and_by_how_much(tmp_path):
    accs = {"rolora": [0.80, 0.81, 0.79], "fedavg-lora": [0.60, 0.62, 0.59], "ffa-lora": [0.90, 0.90, 0.91],
            "flexlora": [0.8005, 0.8095, 0.7905]}
    make_sweep(tmp_path / "sweeps", "clients-lr3", [(m, s, {"clients": 3}, "done", a)
                                                    for m, by in accs.items() for s, a in enumerate(by)])
    text = report(tmp_path, tmp_path / "sweeps")
    row = row_of(text, "Three clients, each lr chosen at 3 clients (sensitivity of the tie verdict): ties at the "
                       "fewest clients (n3)")
    up = 100 * statistics.fmean(a - b for a, b in zip(accs["rolora"], accs["fedavg-lora"]))
    down = 100 * statistics.fmean(a - b for a, b in zip(accs["rolora"], accs["ffa-lora"]))
    assert row[3] == "**not reproduced**"
    assert f"broken in rolora's favour: fedavg-lora {up:+.1f} pts" in row[2]
    assert f"broken against rolora: ffa-lora {down:+.1f} pts" in row[2]
    assert "flexlora: tied (" in text  # inside the ±0.8 band: this pair alone would reproduce the tie


# ------------------------------------------------------------------------------------- standard error
def test_each_accuracy_shows_the_test_sets_standard_error():
    config = load_config(str(SPECS_DIR / "base" / "minilm-cpu.toml"), ["data.test_size=1000"])
    group = Group(seeds=[(0, 0.70), (1, 0.74)], config=config)
    se = 100 * math.sqrt(0.72 * 0.28 / 1000)
    assert sampling_se(0.72, 1000) == pytest.approx(se / 100)
    assert cell_text(group) == f"72.0 ± {100 * statistics.stdev([0.70, 0.74]):.1f} (n=2; test SE {se:.1f})"
    assert "test SE" not in cell_text(Group(seeds=[(0, 0.7)]))  # test size unknown: nothing claimed


# ------------------------------------------------------------------------------------- gap columns
def add_gaps(folder: Path, gaps: dict[str, list[float | None]]) -> None:
    """Give each cell of ``folder`` whose method is in ``gaps`` per-round product_gap / client_drift keys
    (drift = 2 × gap); a None gap is a round the server could not measure."""
    meta = json.loads((folder / "sweep.json").read_text())
    for cell in meta["cells"]:
        per_round = gaps.get(cell["labels"]["method"])
        if per_round is None:
            continue
        path = folder / cell["run_dir"] / "metrics.jsonl"
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        for r, g in zip([r for r in rows if r["round"] > 0], per_round):
            r.update(product_gap=g, client_drift=None if g is None else 2 * g, layers={})
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_each_cells_mean_gap_and_drift_reach_the_csv_and_the_table(tmp_path):
    accs = {"rolora": [0.80, 0.81], "fedavg-lora": [0.75, 0.76], "personal": [0.70, 0.71]}
    sweeps = tmp_path / "sweeps"
    new = make_sweep(sweeps, "clients-50-frozen", [(m, s, N50, "done", a) for m, by in accs.items()
                                                   for s, a in enumerate(by)])
    add_gaps(new, {"rolora": [0.0, 0.0, 0.0], "fedavg-lora": [0.1, 0.2, 0.6], "personal": [None, None, None]})
    make_sweep(sweeps, "clients-50", [(m, s, N50, "done", a) for m, by in accs.items() for s, a in enumerate(by)])
    text = report(tmp_path, sweeps)
    rows = [r for r in csv.DictReader(open(tmp_path / "docs" / "reproduction" / "lm-cells.csv"))
            if r["method"] == "fedavg-lora"]
    mean = statistics.fmean([0.1, 0.2, 0.6])
    assert {r["sweep"] for r in rows if r["mean_product_gap"] == ""} == {"clients-50"}  # predates the logging
    assert [float(r["mean_product_gap"]) for r in rows if r["sweep"] == "clients-50-frozen"] == pytest.approx([mean] * 2)
    assert [float(r["mean_client_drift"]) for r in rows if r["sweep"] == "clients-50-frozen"] == pytest.approx([2 * mean] * 2)
    part = section(text, "### Product-averaging gap by regime")
    assert row_of(part, "clients-50") == ["clients-50", "all", "all", "–", "not measured", "not measured"]
    got = {r[2]: r[3:] for r in (row_of(line.replace("| clients-50-frozen |", "| frozen |"), "frozen")
                                  for line in part.splitlines() if line.startswith("| clients-50-frozen |"))}
    assert got["fedavg-lora"] == ["–", f"{mean:.3f} ± 0.000 (n=2)", f"{2 * mean:.3f} ± 0.000 (n=2)"]  # fake: no spec
    assert got["rolora"][1] == "0.000 ± 0.000 (n=2)"
    assert got["personal"][1] == "not logged (the server cannot see the factors)"


def test_gap_means_skip_rounds_without_a_finite_value():
    rows = [{"round": 0}, {"round": 1, "product_gap": 0.2, "client_drift": 1.0},
            {"round": 2, "product_gap": float("inf"), "client_drift": 3.0}, {"round": 3, "product_gap": None}]
    assert gap_means(rows) == (pytest.approx(0.2), pytest.approx(2.0), 1)
    assert gap_means([{"round": 1, "train_loss": 0.5}]) == (None, None, None)  # predates the logging


# ------------------------------------------------------------------------------------- departures, new specs
BASE = (SPECS_DIR / "base" / "minilm-cpu.toml").read_text()


def write_specs(folder: Path) -> Path:
    (folder / "base").mkdir(parents=True)
    (folder / "base" / "b.toml").write_text(BASE)
    (folder / "three.toml").write_text(
        '# Three clients, trained head\nexperiment = "three"\nbase = "base/b.toml"\n'
        'overrides = ["federated.clients=3", "lora.alpha=8.0"]\n'
        '[[methods]]\nlabel = "rolora"\nmethod = "rolora"\nlr = 1e-3\n')
    (folder / "fifty-frozen.toml").write_text(
        '# A frozen head at 50 clients (α = 32, s = 8): RoLoRA and FedAvg-LoRA\nexperiment = "fifty-frozen"\n'
        'base = "base/b.toml"\noverrides = ["federated.clients=50", "lora.alpha=32.0", "lora.train_head=false"]\n'
        '[[methods]]\nlabel = "rolora"\nmethod = "rolora"\nlr = 1e-3\n'
        '[[methods]]\nlabel = "fedavg-lora"\nmethod = "fedavg-lora"\nlr = 1e-3\n')
    return folder


def test_the_departures_are_read_from_the_specs_a_new_one_included(tmp_path):
    specs = sweep_specs([], [], write_specs(tmp_path / "specs"))
    assert {n: s.ran for n, s in specs.items()} == {"fifty-frozen": False, "three": False}
    head = ours(DEPARTURES[0], specs, {})
    assert "frozen at its init: `fifty-frozen` (not run yet)" in head
    assert "trained and averaged every round, with the adapters' optimiser and lr: `three` (not run yet)" in head
    assert "α = 32 at r = 4 (s = 8): `fifty-frozen`" in ours(DEPARTURES[1], specs, {})
    c = load_config(str(tmp_path / "specs" / "base" / "b.toml"), ["federated.clients=50"])
    samples = 50 * c.total_rounds * c.train.local_steps * c.train.batch_size
    assert ours(DEPARTURES[4], specs, {}) == f"{samples:,}: `fifty-frozen` (not run yet)"  # 3 clients: not counted
    claims = {c.sweep: c for c in all_claims(specs)}
    assert claims["fifty-frozen"].title == "A frozen head at 50 clients (α = 32, s = 8)"
    assert claims["fifty-frozen"].against and "three" not in claims


def _group(config, accs: list[float], sweep: str, method: str) -> Group:
    return Group(seeds=list(enumerate(accs)), config=config, cells={s: f"{sweep}/{method}-s{s}" for s in range(len(accs))})


def test_a_controlled_comparison_needs_settings_that_differ_in_one_departure_alone():
    base = str(SPECS_DIR / "base" / "minilm-cpu.toml")
    common = ["federated.clients=50", "federated.reference_clients=0", "federated.rounds=10", "train.local_steps=10",
              "train.batch_size=4"]
    configs = {"s2": load_config(base, common + ["lora.alpha=8.0"]), "s8": load_config(base, common + ["lora.alpha=32.0"]),
               "s8-long": load_config(base, common + ["lora.alpha=32.0", "train.local_steps=30"])}
    accs = {"s2": ([0.70, 0.72, 0.71], [0.75, 0.76, 0.74]), "s8": ([0.78, 0.77, 0.79], [0.74, 0.74, 0.74]),
            "s8-long": ([0.8, 0.8, 0.8], [0.7, 0.7, 0.7])}
    sweeps = {n: SweepResults(n, {"default": {"rolora": _group(configs[n], r, n, "rolora"),
                                              "fedavg-lora": _group(configs[n], f, n, "fedavg-lora")}}, {"default": {}})
              for n, (r, f) in accs.items()}
    lines = controlled(DEPARTURES[1], _settings(sweeps, Ledger()))
    assert len(lines) == 1 and "`s2`" in lines[0] and "`s8`" in lines[0] and "s8-long" not in lines[0]
    mean, low, high = by_hand([a - b for a, b in zip(*accs["s8"])])
    assert f"`s8` {100 * mean:+.1f} [{100 * low:+.1f}, {100 * high:+.1f}] ahead" in lines[0]
    assert controlled(DEPARTURES[0], _settings(sweeps, Ledger())) == []  # the head never differs here


def test_the_report_opens_with_the_departures(tmp_path):
    text = report(tmp_path, tmp_path / "none")
    starts = [text.index(h) for h in ("## Where our sweeps depart from the paper", "## Setting and scale",
                                      "## Claim by claim", "## How verdicts are computed")]
    assert starts == sorted(starts)
    assert row_of(text, "classifier head")[1] == "frozen at its random init (the authors' code)"
