"""``rolora report``: tables, means, stds and verdicts from fake sweep folders; the CSV round trip;
the slope helper on synthetic power laws.

No training runs here: each test writes a small sweep folder in the format ``rolora sweep``
produces (``sweep.json`` + one run folder per cell with ``metrics.jsonl``), with accuracies chosen
by the test, and checks what the report makes of them against numbers computed here from the same
inputs.
"""

from __future__ import annotations

import csv
import json
import statistics
from pathlib import Path

import numpy as np
import pytest

from rolora.lab.report import verdicts as v
from rolora.lab.report.cli import main
from rolora.lab.report.seeds import over_seeds
from rolora.lab.report.slopes import curve_slopes, per_seed_slopes, round_average, running_min, slope

UPLOAD = {"rolora": 1000, "fedavg-lora": 2000, "ffa-lora": 1000, "flexlora": 2000, "galore-fedavg": 90000}


def _cell(folder: Path, cid: str, method: str, seed: int, axes: dict, status: str, final: float | None,
          rounds: int = 3, phase: str = "main", clients: int = 3) -> dict:
    """One cell: a run folder whose accuracy climbs linearly to ``final`` at the last logged round."""
    run = folder / "cells" / cid
    run.mkdir(parents=True)
    logged = {"done": rounds, "partial": rounds - 1, "pending": 0, "failed": 1, "recorded": 0}[status]
    rows = [{"round": 0, "test_loss": 0.7, "test_accuracy": 0.5}] if status not in ("pending", "recorded") else []
    for t in range(1, logged + 1):
        acc = 0.5 + (final - 0.5) * t / rounds
        rows.append({"round": t, "train_loss": 0.6, "participants": clients, "upload_bytes": UPLOAD.get(method, 500) * clients,
                     "download_bytes": 0, "wall_s": 2.0, "tokens": 10, "test_loss": 1 - acc, "test_accuracy": acc})
    config = {"model": {"name": "minilm"}, "lora": {"rank": axes.get("rank", 4)}, "federated": {"clients": clients},
              "train": {"local_steps": 2, "batch_size": 8}}
    (run / "config.json").write_text(json.dumps(config))
    if rows:
        (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        (run / "versions.json").write_text(json.dumps({"device": "cpu"}))
    labels = {"experiment": folder.name, "method": method, "seed": seed, "lr": 1e-3, **axes}
    return {"id": cid, "labels": labels, "overrides": [], "run_dir": f"cells/{cid}", "status": status, "phase": phase}


def make_sweep(root: Path, name: str, cells: list[tuple]) -> Path:
    """cells: (method, seed, axes, status, final accuracy); writes root/name/ with sweep.json."""
    folder = root / name
    folder.mkdir(parents=True)
    meta = [_cell(folder, f"c{i}", m, s, axes, st, acc, clients=axes.get("clients", 3))
            for i, (m, s, axes, st, acc) in enumerate(cells)]
    (folder / "sweep.json").write_text(json.dumps({
        "name": name, "spec": {"grid": "fake"}, "cells": meta,
        "lr_choice": {"rolora": {"grid": [1e-3], "metric": "val_accuracy", "scores": {"0.001": 0.7},
                                 "chosen": 1e-3, "selected_at": "2026-11-26"}}}))
    return folder


def make_toy_csv(path: Path, finals: dict[tuple[str, str], list[float]]) -> Path:
    """A toy CSV with two rounds per (split, method, seed); the last round's accuracy is given."""
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["method", "split", "seed", "round", "test_acc"])
        for (split, method), accs in finals.items():
            for seed, acc in enumerate(accs):
                w.writerow([method, split, seed, 0, 0.1])
                w.writerow([method, split, seed, 1, acc])
    return path


N3, N50 = {"clients": 3, "rank": 4}, {"clients": 50, "rank": 4}
TIE = {"rolora": [0.800, 0.810, 0.790], "fedavg-lora": [0.801, 0.809, 0.790], "ffa-lora": [0.801, 0.811, 0.788]}
"""Paired differences within ±0.2 points of 0 on every seed: their intervals sit inside the paper's ±0.8 tie band."""
WIN = {"rolora": [0.85, 0.86, 0.84], "fedavg-lora": [0.70, 0.72, 0.71], "ffa-lora": [0.75, 0.76, 0.74]}


def clients_cells(at_50: dict[str, list[float]]) -> list[tuple]:
    cells = [(m, s, N3, "done", a) for m, accs in TIE.items() for s, a in enumerate(accs)]
    cells += [(m, s, N50, "done", a) for m, accs in at_50.items() for s, a in enumerate(accs)]
    cells += [("rolora", 3, N50, "pending", None), ("ffa-lora", 3, N50, "partial", 0.9)]
    return cells


def report(tmp_path: Path, sweeps: Path, theory: Path | None = None, toy: Path | None = None,
           extra: list[str] = ()) -> str:
    out = tmp_path / "docs" / "reproduction.md"
    theory = theory or tmp_path / "no-theory"
    for folder in (sweeps, theory):  # a source named on the command line must exist (an empty one holds nothing)
        Path(folder).mkdir(parents=True, exist_ok=True)
    if toy is None:
        toy = tmp_path / "no-toy.csv"
        toy.parent.mkdir(parents=True, exist_ok=True)
        toy.touch()  # no rows: the toy section says it has not run
    argv = ["--sweeps", str(sweeps), "--theory-dir", str(theory), "--out", str(out), "--toy-csv", str(toy), *extra]
    assert main(argv) == 0
    return out.read_text()


def section(text: str, title: str) -> str:
    """From the heading ``title`` to the next heading of level 2 or 3."""
    start = text.index(title)
    ends = [e for e in (text.find("\n### ", start + 1), text.find("\n## ", start + 1)) if e > 0]
    return text[start:min(ends) if ends else None]


def row_of(text: str, method: str) -> list[str]:
    line = next(line for line in text.splitlines() if line.startswith(f"| {method} |"))
    return [c.strip() for c in line.strip("|").split("|")]


def expected(values: list[float]) -> str:
    return f"{100 * statistics.fmean(values):.1f} ± {100 * statistics.stdev(values):.1f} (n={len(values)})"


# ------------------------------------------------------------------------------------- seeds, rule
def test_one_seed_has_no_std_and_says_so():
    assert over_seeds([0.5]).std is None
    assert over_seeds([0.5]).text() == "50.0 (n=1, no std)"
    assert over_seeds([0.5, 0.7]).text() == expected([0.5, 0.7])
    assert over_seeds([]).text() == "–"


@pytest.mark.parametrize("x, y, outcome", [
    ([0.9, 0.92], [0.7, 0.72], v.AHEAD), ([0.7, 0.72], [0.9, 0.92], v.BEHIND),
    ([0.80, 0.82], [0.81, 0.80], v.UNDERPOWERED), ([0.9], [0.7, 0.72], v.NO_INTERVAL),
    ([0.80, 0.82], [0.81, 0.83], v.BEHIND),  # paired: one point behind on both seeds, whatever the spread
])
def test_pairwise_rule(x, y, outcome):
    assert v.compare("x", over_seeds(x), "y", over_seeds(y)).outcome == outcome


def test_claim_verdicts_follow_the_stated_rule():
    a, b, c = over_seeds([0.9, 0.92]), over_seeds([0.7, 0.72]), over_seeds([0.91, 0.90])
    ahead, behind, spans = v.compare("x", a, "y", b), v.compare("x", b, "y", a), v.compare("x", a, "y", c)
    assert spans.outcome == v.UNDERPOWERED
    assert v.win_verdict([ahead, ahead]) == v.IN_KIND
    assert v.win_verdict([ahead], own_setting=True) == v.REPRODUCED
    assert v.win_verdict([ahead, spans]) == v.INCONCLUSIVE
    assert v.win_verdict([ahead, behind]) == v.NOT_REPRODUCED
    assert v.win_verdict([]) == v.NOT_RUN
    band = 0.008
    tied = v.compare("x", over_seeds([0.80, 0.81]), "y", over_seeds([0.801, 0.811]), band=band)
    broken = v.compare("x", a, "y", b, band=band)
    assert (tied.outcome, broken.outcome) == (v.TIED, v.BROKEN_AHEAD)
    assert v.tie_verdict([tied, tied]) == v.IN_KIND
    assert v.tie_verdict([tied, broken]) == v.NOT_REPRODUCED
    assert v.tie_verdict([tied, v.compare("x", a, "y", c, band=band)]) == v.INCONCLUSIVE


def test_two_methods_at_the_majority_class_are_not_judged():
    floor = 0.572
    stuck, stuck2 = over_seeds([0.572, 0.572, 0.575]), over_seeds([0.572, 0.580, 0.572])
    learned = over_seeds([0.70, 0.72, 0.69])
    both = v.compare("x", stuck, "y", stuck2, floor)
    assert both.outcome == v.AT_FLOOR and v.compare("x", stuck, "y", stuck2).outcome == v.UNDERPOWERED  # floor unknown
    assert v.compare("x", learned, "y", stuck, floor).outcome == v.AHEAD  # one learned: judged as usual
    assert v.compare("x", over_seeds([0.572, 0.59]), "y", stuck, floor).outcome != v.AT_FLOOR  # 1.8 pts: not floor
    assert v.win_verdict([both, both]) == v.NOT_TESTABLE and v.tie_verdict([both]) == v.NOT_TESTABLE
    within = v.compare("x", learned, "y", learned, floor)
    assert v.tie_verdict([both, within]) == v.INCONCLUSIVE and v.win_verdict([both, within]) == v.INCONCLUSIVE


def test_a_column_at_the_floor_is_marked_and_not_judged(tmp_path):
    sweeps = tmp_path / "sweeps"
    folder = make_sweep(sweeps, "clients", clients_cells({"rolora": [0.572] * 3, "fedavg-lora": [0.572, 0.575, 0.572],
                                                          "ffa-lora": [0.572] * 3}))
    for cell in json.loads((folder / "sweep.json").read_text())["cells"]:  # a real data section: RT's split
        path = folder / cell["run_dir"] / "config.json"
        config = json.loads(path.read_text())
        config["data"] = {"dataset": "rotten_tomatoes", "test_size": 1000, "val_size": 500, "split_seed": 0}
        path.write_text(json.dumps(config))
    text = section(report(tmp_path, sweeps), "### Number of clients (Table 1)")
    floor = 100 * float(next(r for r in csv.DictReader(open(tmp_path / "docs" / "reproduction" / "lm-cells.csv"))
                             if r["setting"] == "n50-r4" and r["status"] == "done")["test_majority"])
    assert 50 < floor < 60  # Rotten Tomatoes is near-balanced; this split's test set leans negative
    assert "‡" in row_of(text, "rolora")[-1] and "‡" not in row_of(text, "rolora")[-2]  # n3: learned
    assert f"n50-r4 {floor:.1f} %" in text
    assert "**RoLoRA ahead at the most clients (n50-r4)**: **not testable here**" in text


# ------------------------------------------------------------------------------------- LM sweeps
def test_client_count_table_means_stds_unfinished_cells_and_verdicts(tmp_path):
    sweeps = tmp_path / "sweeps"
    make_sweep(sweeps, "clients", clients_cells(WIN))
    text = report(tmp_path, sweeps)
    part = section(text, "### Number of clients (Table 1)")
    header = row_of(part, "method")
    assert header == ["method", "n3-r4: paper", "n3-r4: ours", "n50-r4: paper", "n50-r4: ours"]
    rolora, ffa = row_of(part, "rolora"), row_of(part, "ffa-lora")
    assert rolora[1] == "88.28" and rolora[3] == "85.81"  # the paper's Table 1 averages beside ours
    assert rolora[2] == expected(TIE["rolora"])
    assert rolora[4] == expected(WIN["rolora"]) + "; 1 pending"
    assert ffa[4] == expected(WIN["ffa-lora"]) + "; 1 partial"
    assert "| flexlora |" not in part  # a method that was not run gets no row
    assert "**Ties at the fewest clients (n3-r4)**: **reproduced in kind**" in part
    assert "**RoLoRA ahead at the most clients (n50-r4)**: **reproduced in kind**" in part
    opening = row_of(text, "Number of clients (Table 1): RoLoRA ahead at the most clients (n50-r4)")  # the opening table agrees
    assert opening[1] == "rolora 85.81 / fedavg-lora 70.72 / ffa-lora 76.48" and opening[3] == "**reproduced in kind**"
    gap = 100 * (statistics.fmean(WIN["rolora"]) - statistics.fmean(WIN["fedavg-lora"]))
    assert f"fedavg-lora: ahead ({gap:+.1f} pts" in part
    assert "| clients | 20 | 18 | 1 | 1 | 0 |" in text
    # what ran, from the cells' configs; samples per done cell = rounds × clients × steps × batch
    samples = statistics.median([3 * 3 * 2 * 8] * 9 + [3 * 50 * 2 * 8] * 9)
    assert (f"- `clients`: model.name minilm; lora.rank 4; train.local_steps 2; train.batch_size 8; "
            f"federated.clients 3 / 50; samples {samples:,.0f}") in text


def test_a_reference_column_without_rolora_is_not_the_fewest_clients(tmp_path):
    cells = clients_cells(WIN) + [("centralised", s, {"clients": 1, "rank": 4}, "done", 0.9 + s / 100) for s in range(2)]
    cells += [("flexlora", s, N50, "pending", None) for s in range(2)]
    make_sweep(tmp_path / "sweeps", "clients", cells)
    part = section(report(tmp_path, tmp_path / "sweeps"), "### Number of clients (Table 1)")
    assert row_of(part, "method")[1:3] == ["n1-r4: paper", "n1-r4: ours"]
    assert row_of(part, "centralised")[2] == expected([0.90, 0.91])
    assert row_of(part, "flexlora")[1:] == ["–", "–", "–", "–", "54.67", "– (2 pending)"]
    assert "**Ties at the fewest clients (n3-r4)**: **reproduced in kind**" in part
    assert "- n3-r4 → n50-r4 (mean accuracy, points): rolora +5.0, fedavg-lora -9.0, ffa-lora -5.0" in part


def test_a_baseline_ahead_is_not_reproduced_and_one_seed_is_inconclusive(tmp_path):
    lost = dict(WIN, **{"fedavg-lora": [0.90, 0.91, 0.92]})
    make_sweep(tmp_path / "a", "clients", clients_cells(lost))
    part = section(report(tmp_path / "ra", tmp_path / "a"), "### Number of clients (Table 1)")
    assert "**RoLoRA ahead at the most clients (n50-r4)**: **not reproduced**" in part
    one = {m: accs[:1] for m, accs in WIN.items()}
    make_sweep(tmp_path / "b", "clients", clients_cells(one))
    part = section(report(tmp_path / "rb", tmp_path / "b"), "### Number of clients (Table 1)")
    assert row_of(part, "rolora")[4].startswith(f"{100 * WIN['rolora'][0]:.1f} (n=1, no std)")
    assert "**RoLoRA ahead at the most clients (n50-r4)**: **inconclusive**" in part


def test_lr_phase_cells_are_cost_not_results(tmp_path):
    sweeps = tmp_path / "sweeps"
    folder = make_sweep(sweeps, "clients", clients_cells(WIN))
    meta = json.loads((folder / "sweep.json").read_text())
    extra = _cell(folder, "lr0", "fedavg-lora", 0, N50, "done", 0.99, phase="lr")
    meta["cells"].append(extra)
    (folder / "sweep.json").write_text(json.dumps(meta))
    part = section(report(tmp_path, sweeps), "### Number of clients (Table 1)")
    assert row_of(part, "fedavg-lora")[4] == expected(WIN["fedavg-lora"])


def test_the_chosen_learning_rates_and_their_warnings(tmp_path):
    folder = make_sweep(tmp_path / "sweeps", "clients", clients_cells(WIN))
    meta = json.loads((folder / "sweep.json").read_text())
    meta["lr_choice"] = {
        "rolora": {"grid": [1e-3, 1e-2, 1e-1], "metric": "val_accuracy", "scores": {"0.001": 0.6, "0.01": 0.7, "0.1": 0.65},
                   "chosen": 1e-2, "selected_at": "x"},
        "ffa-lora": {"grid": [1e-3, 1e-2], "metric": "val_accuracy", "scores": {"0.001": 0.59, "0.01": 0.59},
                     "chosen": 1e-2, "selected_at": "x"}}
    (folder / "sweep.json").write_text(json.dumps(meta))
    text = report(tmp_path, tmp_path / "sweeps")
    lines = [line for line in text.splitlines() if line.startswith(("| clients | rolora |", "| clients | ffa-lora |"))]
    assert lines == ["| clients | ffa-lora | 0.01 | 0.001: 0.590, 0.01: 0.590 | at the grid's edge; all scores equal |",
                     "| clients | rolora | 0.01 | 0.001: 0.600, 0.01: 0.700, 0.1: 0.650 |  |"]


def test_a_learning_rate_fixed_in_the_spec_is_listed_as_such(tmp_path):
    folder = make_sweep(tmp_path / "sweeps", "clients", clients_cells(WIN))
    meta = json.loads((folder / "sweep.json").read_text())
    meta["spec"] = {"methods": [{"label": "rolora", "method": "rolora", "lr": 0.5},  # selected: the choice wins
                                {"label": "ffa-lora", "method": "ffa-lora", "lr": 0.03},
                                {"label": "fedavg-lora", "method": "fedavg-lora"}]}  # neither: no row
    (folder / "sweep.json").write_text(json.dumps(meta))
    text = report(tmp_path, tmp_path / "sweeps")
    lines = [line for line in text.splitlines() if line.startswith(("| clients | rolora |", "| clients | ffa-lora |",
                                                                     "| clients | fedavg-lora |"))]
    assert lines == ["| clients | rolora | 0.001 | 0.001: 0.700 |  |",
                     "| clients | ffa-lora | 0.03 | – | fixed in the spec, not selected in this sweep (its header says "
                     "where it comes from) |"]


def test_missing_sweeps_say_not_run_with_the_command(tmp_path, capsys):
    sweeps = tmp_path / "sweeps"
    make_sweep(sweeps, "clients", clients_cells(WIN))
    text = report(tmp_path, sweeps)
    assert "warning" not in capsys.readouterr().err
    for name in ("clients-trec", "fewer-params", "local-steps", "handover", "heterogeneity", "decoder"):
        assert f"No `{name}` sweep was found. Run `rolora sweep {name}`" in text
    assert "No `clients` sweep was found" not in text
    empty = report(tmp_path / "empty", tmp_path / "nothing-here")
    assert f"warning: no sweep in {tmp_path / 'nothing-here'}" in capsys.readouterr().err
    assert "No `clients` sweep was found" in empty
    assert "No language-model sweep has run yet" in empty


def test_handover_is_judged_on_its_variant_against_ffa_lora(tmp_path):
    at = {"clients": 50, "rank": 4}
    accs = {"ffa-lora": [0.70, 0.71], "rolora": [0.80, 0.81], "rolora-then-ffa-0.2": [0.78, 0.79],
            "rolora-then-ffa-0.5": [0.60, 0.61]}
    make_sweep(tmp_path / "sweeps", "handover", [(m, s, at, "done", a) for m, v in accs.items() for s, a in enumerate(v)])
    part = section(report(tmp_path, tmp_path / "sweeps"), "### RoLoRA first, then FFA-LoRA")
    assert "- n50-r4: rolora-then-ffa-0.2 against ffa-lora: ahead (+8.0 pts" in part
    assert "**Verdict: reproduced in kind**" in part


def test_the_trec_client_sweep_is_judged_in_two_halves(tmp_path):
    make_sweep(tmp_path / "sweeps", "clients-trec", clients_cells(WIN))
    text = report(tmp_path, tmp_path / "sweeps")
    assert "**RoLoRA ahead at the most clients (n50-r4)**: **reproduced in kind**" in section(text, "### Number of clients, a second")
    assert row_of(text, "Number of clients, a second task (TREC): ties at the fewest clients (n3-r4)")[3] == \
        "**reproduced in kind**"
    # no Table 1 numbers for TREC: the tie row quotes the paper's 3-client tie, the win row the 50-client win
    tie = row_of(text, "Number of clients, a second task (TREC): ties at the fewest clients (n3-r4)")
    win = row_of(text, "Number of clients, a second task (TREC): RoLoRA ahead at the most clients (n50-r4)")
    assert tie[1] == "all methods within 0.8 points at 3 clients (Table 1)"  # 88.28 − 87.48
    assert win[1] == "RoLoRA ahead on every task at 50 clients"


def test_a_one_column_client_sweep_is_judged_on_its_tie_alone(tmp_path):
    # clients-lr3: the 3-client column with each lr chosen there; a spread-apart result is no tie
    apart = {"rolora": [0.80, 0.81, 0.79], "fedavg-lora": [0.60, 0.61, 0.59], "ffa-lora": [0.80, 0.79, 0.81]}
    make_sweep(tmp_path / "sweeps", "clients-lr3", [(m, s, {"clients": 3}, "done", a)
                                                    for m, accs in apart.items() for s, a in enumerate(accs)])
    text = report(tmp_path, tmp_path / "sweeps")
    title = "Three clients, each lr chosen at 3 clients (sensitivity of the tie verdict)"
    tie = row_of(text, f"{title}: ties at the fewest clients (n3)")
    assert tie[1] == "all methods within 0.8 points at 3 clients (Table 1)"
    assert tie[3] == "**not reproduced**"
    assert "RoLoRA ahead at the most clients" not in section(text, f"### {title}")


def test_the_extra_exact_methods_are_judged_against_flora_and_fedex_lora_alone(tmp_path):
    # clients-50-extra: FLoRA and FedEx-LoRA beside clients-50's runs; FedAvg-LoRA ahead of RoLoRA there
    # is clients-50's verdict, not this one's
    at = {"clients": 50, "rank": 4}
    accs = {"rolora": [0.80, 0.81], "fedavg-lora": [0.90, 0.91], "flora": [0.70, 0.71], "fedex-lora": [0.60, 0.61]}
    make_sweep(tmp_path / "sweeps", "clients-50-extra", [(m, s, at, "done", a) for m, v in accs.items()
                                                         for s, a in enumerate(v)])
    text = report(tmp_path, tmp_path / "sweeps")
    part = section(text, "### Fifty clients: FLoRA and FedEx-LoRA beside RoLoRA")
    assert "- n50-r4: rolora against flora: ahead (+10.0 pts" in part
    assert "fedex-lora: ahead (+20.0 pts" in part and "against fedavg-lora" not in part
    row = row_of(text, "Fifty clients: FLoRA and FedEx-LoRA beside RoLoRA (not in the paper)")
    assert row[3] == "**reproduced in kind**" and "flora +10.0 [" in row[2] and "fedex-lora +20.0 [" in row[2]


def test_the_decoder_claim_is_judged_at_its_most_clients_alone(tmp_path):
    # the paper's decoder claim is made at 50 clients; our 3-client column is context: behind there
    # does not count against a lead at 20
    accs = {3: {"rolora": [0.70, 0.71], "fedavg-lora": [0.80, 0.81], "ffa-lora": [0.75, 0.76]},
            20: {"rolora": [0.80, 0.81], "fedavg-lora": [0.60, 0.61], "ffa-lora": [0.65, 0.66]}}
    make_sweep(tmp_path / "sweeps", "decoder", [(m, s, {"clients": n}, "done", a) for n, by in accs.items()
                                                for m, v in by.items() for s, a in enumerate(v)])
    part = section(report(tmp_path, tmp_path / "sweeps"), "### A decoder model")
    assert "- n3 (context, not judged): rolora against fedavg-lora: behind" in part  # reported
    assert "**Verdict: reproduced in kind** (at the most clients (n20);" in part  # n3 not judged


def test_galore_comparison_says_which_claim_each_result_supports(tmp_path):
    at_20 = {"clients": 20, "rank": 4}
    cells = [(m, s, at_20, "done", a) for m, accs in
             {"rolora": [0.80, 0.81], "ffa-lora": [0.70, 0.71], "galore-fedavg": [0.90, 0.91]}.items()
             for s, a in enumerate(accs)]
    make_sweep(tmp_path / "sweeps", "clients", cells)
    text = report(tmp_path, tmp_path / "sweeps")
    part = section(text, "### GaLore-FedAvg")
    assert "galore-fedavg vs rolora: supports the critique (+10.0 pts" in part
    assert "galore-fedavg vs ffa-lora: supports the critique" in part
    # equal bytes: galore uploads 90× RoLoRA per round, so within RoLoRA's whole-run upload it has only round 0
    assert row_of(part, "galore-fedavg")[3].startswith("50.0 ± 0.0 (n=2), round 0")
    assert (tmp_path / "docs" / "reproduction" / "galore-accuracy-vs-upload.png").exists()
    assert (tmp_path / "docs" / "reproduction" / "clients-accuracy-vs-round.png").exists()
    assert "![clients sweep: test accuracy vs round](reproduction/clients-accuracy-vs-round.png)" in text
    assert "![accuracy vs upload per client, issue 17](reproduction/galore-accuracy-vs-upload.png)" in text


def test_columns_are_named_as_the_sweep_names_them():
    from rolora.lab.report.sweep_reader import setting_label

    assert setting_label({"rank": 4, "clients": 20}) == "n20-r4"
    assert setting_label({"clients": 50, "local_steps": 1}, {"local_steps": "k", "clients": "n"}) == "k1-n50"
    assert setting_label({"alpha": 0.5, "clients": 3}, {"alpha": ""}) == "0.5-n3"
    assert setting_label({"partition": "iid"}) == "partition=iid"


def test_a_sweeps_setting_names_the_default_only_where_a_key_varies():
    from rolora.lab.report.sweep_reader import setup_text

    variants = [{"lora": {"rank": 4, "targets": [], "layers": []}},
                {"lora": {"rank": 4, "targets": ["value"], "layers": []}},
                {"lora": {"rank": 4, "targets": [], "layers": [-2, -1]}}]
    assert setup_text(variants) == "lora.rank 4; lora.targets ['value'] / default; lora.layers [-2, -1] / all"
    assert setup_text(variants[:1]) == "lora.rank 4"  # every cell at the default: nothing to tell apart


def test_a_borrowed_cell_adds_the_setting_its_spec_gives_it(tmp_path):
    """A recorded cell has no run folder here (its twin ran in another sweep): the sweep's setting line counts
    the config rebuilt from the spec's base and the cell's overrides, beside the run folders' configs."""
    from rolora.lab.report.sweep_reader import read_sweep

    folder = make_sweep(tmp_path, "local-steps", [("rolora", 0, {"steps": 30}, "done", 0.8)])
    meta = json.loads((folder / "sweep.json").read_text())
    borrowed = {"id": "k10", "labels": {"experiment": "local-steps", "method": "rolora", "seed": 0, "lr": 1e-3,
                                        "steps": 10},
                "overrides": ["train.local_steps=10"], "run_dir": "cells/k10", "status": "recorded", "phase": "main"}
    spec = {"base": "base/minilm-cpu.toml", "overrides": []}
    (folder / "sweep.json").write_text(json.dumps(dict(meta, spec=spec, cells=meta["cells"] + [borrowed])))
    assert "train.local_steps 10 / 2" in read_sweep(folder)[0]["setup"]  # the fixture's done cell ran 2 steps
    (folder / "sweep.json").write_text(json.dumps(dict(meta, spec={"base": "gone.toml"}, cells=meta["cells"] + [borrowed])))
    assert "train.local_steps 2;" in read_sweep(folder)[0]["setup"]  # a base that no longer loads adds nothing


def test_samples_name_their_range_where_cells_differ():
    from rolora.lab.report.document import samples_text

    assert samples_text([20_000.0, 20_000.0]) == "20,000"
    assert samples_text([20_000.0, 60_000.0, 60_000.0]) == "60,000 (20,000–60,000)"
    assert samples_text([]) == "–"


# ------------------------------------------------------------------------------------- round trip
def test_from_csv_gives_the_same_markdown_without_any_source(tmp_path):
    sweeps = tmp_path / "sweeps"
    make_sweep(sweeps, "clients", clients_cells(WIN))
    theory = tmp_path / "theory"
    theory.mkdir()
    write_rate_csv(theory, min_power=-0.8, mean_power=-0.5)
    toy = make_toy_csv(tmp_path / "toy.csv", {("5x2", "rolora"): [0.8, 0.82], ("5x2", "ffa-lora"): [0.5, 0.52]})
    first = report(tmp_path, sweeps, theory, toy)
    assert expected(WIN["rolora"]) in first
    import shutil

    shutil.rmtree(sweeps)
    shutil.rmtree(theory)
    again = report(tmp_path, sweeps, theory, toy, extra=["--from-csv"])
    assert again == first


def test_a_new_extraction_keeps_the_rows_of_sources_absent_here(tmp_path):
    """Run folders are not committed: extracting sweep B on another machine keeps sweep A's committed
    rows, and a missing out/theory keeps the committed theory rows."""
    make_sweep(tmp_path / "a", "clients", clients_cells(WIN))
    make_sweep(tmp_path / "b", "local-steps", [(m, s, {"local_steps": 1}, "done", a) for m, accs in WIN.items()
                                                for s, a in enumerate(accs)])
    theory = tmp_path / "theory"
    theory.mkdir()
    write_rate_csv(theory, min_power=-0.9, mean_power=-0.5)
    first = report(tmp_path, tmp_path / "a", theory)
    second = report(tmp_path, tmp_path / "b", tmp_path / "no-theory-here")
    assert section(first, "### Number of clients (Table 1)") == section(second, "### Number of clients (Table 1)")
    assert section(first, "### The non-convex") == section(second, "### The non-convex")
    assert "No `local-steps` sweep was found" in first and "No `local-steps` sweep was found" not in second
    assert row_of(section(second, "### Local steps"), "rolora")[1] == expected(WIN["rolora"])
    third = report(tmp_path, tmp_path / "b", extra=["--drop-absent"])
    assert "No `clients` sweep was found" in third and "No `local-steps` sweep was found" not in third


def test_a_sweep_resumed_in_a_fresh_checkout_keeps_its_cells_done_before(tmp_path):
    """Seeds 0-1 extracted on one machine, seed 2 run alone (--only) in a fresh checkout: the CSVs hold all
    three as if the sweep had run in one place; a cell done here replaces its committed rows; a changed spec
    keeps nothing committed."""
    from rolora.lab.report.csv_files import read_rows
    from rolora.lab.report.extract import LM_FILES, extract_sweeps

    cells = [(m, s, N50, "done", a) for m, accs in WIN.items() for s, a in enumerate(accs)]
    early = [(m, s, axes, "done" if s < 2 else "pending", a) for m, s, axes, _, a in cells]
    late = [(m, s, axes, "done" if s == 2 else "recorded", a) for m, s, axes, _, a in cells]  # --recorded
    data, whole = tmp_path / "data", tmp_path / "whole-data"
    extract_sweeps(make_sweep(tmp_path / "early", "clients-50-long", early), data)
    extract_sweeps(make_sweep(tmp_path / "late", "clients-50-long", late), data)
    extract_sweeps(make_sweep(tmp_path / "whole", "clients-50-long", cells), whole)
    for name in LM_FILES:
        ignore = {"folder", "device"} if name == "lm-sweeps.csv" else set()
        strip = lambda rows: [{k: v for k, v in r.items() if k not in ignore} for r in rows]  # noqa: E731
        assert strip(read_rows(data / name)) == strip(read_rows(whole / name)), name
    text = report(tmp_path, tmp_path / "late", extra=["--data", str(data)])  # extracted again: all three seeds
    assert row_of(section(text, "### Fifty clients at the paper's 30 rounds"), "rolora")[1] == expected(WIN["rolora"])
    # the folder's own result wins over a committed one for a cell done in both
    redo = [(m, s, a_, st, 0.6 if (m, s) == ("rolora", 0) else a) for m, s, a_, st, a in early]
    extract_sweeps(make_sweep(tmp_path / "redo", "clients-50-long", redo), data)
    finals = {(r["method"], r["seed"]): float(r["final_test_accuracy"]) for r in read_rows(data / "lm-cells.csv")}
    assert finals[("rolora", "0")] == pytest.approx(0.6) and finals[("rolora", "2")] == pytest.approx(WIN["rolora"][2])
    # another spec: the committed cells belong to another experiment and are dropped
    folder = make_sweep(tmp_path / "other", "clients-50-long", late)
    meta = json.loads((folder / "sweep.json").read_text())
    (folder / "sweep.json").write_text(json.dumps(dict(meta, spec={"grid": "changed"})))
    extract_sweeps(folder, data)
    assert sorted(r["seed"] for r in read_rows(data / "lm-cells.csv") if r["status"] == "done") == ["2", "2", "2"]


def test_from_csv_without_the_csvs_fails(tmp_path, capsys):
    assert main(["--from-csv", "--out", str(tmp_path / "x.md")]) == 2
    assert "--from-csv needs the CSVs" in capsys.readouterr().err


# ------------------------------------------------------------------------------------- theory, toy
def write_rate_csv(folder: Path, min_power: float, mean_power: float) -> None:
    """A `rolora theory` folder holding only the non-convex experiment's CSV (and its summary.json)."""
    (folder / "summary.json").write_text(json.dumps({"results": {}}))
    with open(folder / "fig5_nonconvex_rate.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["T", "seed", "eta", "min_grad_sq", "mean_grad_sq", "final_grad_sq"])
        for T in (32, 64, 128, 256):
            for s in range(2):
                w.writerow([T, s, 0.1, (1 + s) * T**min_power, (2 + s) * T**mean_power, T**-0.6])


def test_theory_section_shows_both_slopes_and_judges_the_average(tmp_path):
    theory = tmp_path / "theory"
    theory.mkdir()
    write_rate_csv(theory, min_power=-0.9, mean_power=-0.5)
    part = section(report(tmp_path, tmp_path / "none", theory), "### The non-convex")
    assert row_of(part, "running minimum min_{t≤T} ‖∇F‖²")[1:] == ["-0.90", "-0.90, -0.90"]
    assert row_of(part, "round average (1/(T+1)) Σ_t ‖∇F‖²")[1:] == ["-0.50", "-0.50, -0.50"]
    assert "**Verdict: reproduced**" in part
    write_rate_csv(theory, min_power=-0.9, mean_power=-0.3)  # the average decays too slowly
    part = section(report(tmp_path / "slow", tmp_path / "none", theory), "### The non-convex")
    assert "**Verdict: not reproduced**" in part


@pytest.mark.parametrize("worst, floor, theorem_verdict, floor_verdict", [
    (0.9, 1.00001, "reproduced", "reproduced"), (1.02, 1.01, "not reproduced", "not reproduced")])
def test_theorem_and_floor_verdicts_from_the_summary(tmp_path, worst, floor, theorem_verdict, floor_verdict):
    theory = tmp_path / "theory"
    theory.mkdir()
    theorem = {"delta0": 0.9, "bound_rate": 0.95, "worst_measured_ratio": 0.95 * worst, "worst_ratio_over_bound": worst,
               "bound_holds_every_round": worst <= 1, "mean_measured_rate": 0.5, "rounds_to_1e6_measured": 20.0,
               "rounds_to_1e6_bound": 275.0}
    ffa = {"min_ratio": 1.0, "median_ratio": 1.0, "max_ratio": floor}
    (theory / "summary.json").write_text(json.dumps({"results": {"theorem": {"0.9": theorem}, "ffa_floor": {"m=1e5": ffa}}}))
    text = report(tmp_path, tmp_path / "none", theory)
    assert f"**Verdict: {theorem_verdict}**" in section(text, "### Theorem 4.5")
    assert f"**Verdict: {floor_verdict}**" in section(text, "### Proposition 4.6")
    assert row_of(text, "Thm 4.5: linear contraction")[2] == f"largest ratio / ρ = {worst:.4f}"


def test_theory_not_run_says_how(tmp_path):
    text = report(tmp_path, tmp_path / "none")
    assert section(text, "### Theorem 4.5").count("**Not run yet.** Run `rolora theory`") == 1


def test_toy_verdicts_from_its_csv(tmp_path):
    toy = make_toy_csv(tmp_path / "toy.csv", {
        ("5x2", "rolora"): [0.80, 0.82], ("5x2", "fedavg-lora"): [0.70, 0.71], ("5x2", "ffa-lora"): [0.50, 0.52],
        ("10x1", "rolora"): [0.70, 0.72], ("10x1", "fedavg-lora"): [0.30, 0.33], ("10x1", "ffa-lora"): [0.50, 0.51],
        ("5x2", "fedavg-full"): [0.90, 0.91], ("10x1", "fedavg-full"): [0.60, 0.61],
    })
    text = report(tmp_path, tmp_path / "none", toy=toy)
    assert row_of(text, "rolora")[2:4] == [expected([0.80, 0.82]), expected([0.70, 0.72])]
    # at RoLoRA's whole-run upload (1 round of one factor) FedAvg-LoRA, sending both factors, has only round 0
    assert row_of(text, "fedavg-lora")[4] == "10.0 ± 0.0, round 0"
    assert row_of(text, "rolora")[4] == f"{100 * statistics.fmean([0.80, 0.82]):.1f} ± {100 * statistics.stdev([0.80, 0.82]):.1f}, round 1"
    assert "- 5x2, FFA-LoRA lowest: **reproduced in kind**" in text
    assert "- 10x1, FFA-LoRA lowest: **not reproduced**" in text
    assert "- 10x1, RoLoRA best of the three: **reproduced in kind**" in text
    assert row_of(text, "Issue 17 (toy): fedavg-full vs rolora")[3] == \
        "**5x2: supports the critique; 10x1: supports RoLoRA's claim**"
    assert "rolora toy --split 5x2,10x1 --seed 0 --methods rolora,fedavg-lora,ffa-lora,fedavg-full\n" in text
    assert "rolora toy --split 5x2,10x1 --seed 1 --methods rolora,fedavg-lora,ffa-lora,fedavg-full\n" in text


# ------------------------------------------------------------------------------------- slopes
HORIZONS = (32, 64, 128, 256, 512, 1024)


@pytest.mark.parametrize("power", [-0.5, -1.0, -0.25])
def test_slope_of_an_exact_power_law(power):
    values = {T: [3.0 * T**power, 5.0 * T**power] for T in HORIZONS}
    assert slope(values) == pytest.approx(power, abs=1e-9)
    assert per_seed_slopes(values) == pytest.approx([power, power], abs=1e-9)


def test_running_min_and_round_average_of_synthetic_curves():
    """A curve sitting at T^-1/2 with one lucky round at T^-1: the minimum falls as T^-1, the average
    as T^-1/2 (the level), which is the point of reporting both."""
    rng = np.random.default_rng(0)
    curves = {}
    for T in HORIZONS:
        seeds = []
        for _ in range(3):
            c = np.full(T + 1, T**-0.5)
            c[rng.integers(1, T + 1)] = T**-1.0
            seeds.append(c)
        curves[T] = seeds
    slopes = curve_slopes(curves)
    assert slopes["min"] == pytest.approx(-1.0, abs=1e-9)
    assert slopes["mean"] == pytest.approx(-0.5, abs=0.01)
    assert running_min([3.0, 1.0, 2.0]) == 1.0 and round_average([3.0, 1.0, 2.0]) == 2.0


# ------------------------------------------------------------------------------------- a real sweep
TINY_BERT = ["model.name=tiny-bert", "model.max_length=24", "data.dataset=rotten_tomatoes", "data.test_size=24",
             "data.val_size=24", "data.max_train_samples=48", "run.eval_batch_size=24", "federated.rounds=2",
             "train.local_steps=1", "train.batch_size=4", "lora.rank=2", "lora.alpha=4.0"]
REAL_SPEC = """
experiment = "clients"
base = "base.toml"
seeds = [0]
[axes.clients]
short = "n"
3 = ["federated.clients=3"]
[[methods]]
label = "rolora"
method = "rolora"
lr = 0.01
[[methods]]
label = "ffa-lora"
method = "ffa-lora"
lr = 0.01
"""


@pytest.mark.slow
def test_a_real_tiny_sweep_reads_as_its_metrics_say(tmp_path):
    """Two tiny-bert cells run by `rolora sweep`'s own code: the report's numbers are the runs'."""
    from rolora.llm.config import load_config, to_toml
    from rolora.llm.data import load_builtin, split
    from rolora.lab.sweep.runner import run_sweep
    from rolora.lab.sweep.spec import load_spec

    (tmp_path / "base.toml").write_text(to_toml(load_config(None, TINY_BERT)))
    (tmp_path / "clients.toml").write_text(REAL_SPEC)
    out = tmp_path / "sweeps" / "clients"
    sweep = run_sweep(load_spec(str(tmp_path / "clients.toml")), out, jobs=1, cores=1, echo=lambda line: None)
    assert {sweep.status[c.id] for c in sweep.cells} == {"done"}
    text = report(tmp_path, tmp_path / "sweeps")
    doc = json.loads((out / "sweep.json").read_text())
    labels = split(load_builtin("rotten_tomatoes"), test_size=24, val_size=24, seed=0)[2].labels
    floor = max(np.mean(labels == k) for k in set(labels.tolist()))  # the test split's majority share
    for cell in doc["cells"]:
        rows = [json.loads(line) for line in (out / cell["run_dir"] / "metrics.jsonl").read_text().splitlines()]
        final = [r["test_accuracy"] for r in rows if "test_accuracy" in r][-1]
        got = row_of(section(text, "### Number of clients (Table 1)"), cell["labels"]["method"])
        mark = " ‡" if abs(final - floor) <= 0.01 else ""  # at the majority-class floor: marked, explained
        assert got[2] == f"{100 * final:.1f} (n=1, no std)" + mark
        assert (f"n3 {100 * floor:.1f} %" in text) == bool(mark)
    assert "| clients | 2 | 2 | 0 | 0 | 0 |" in text
    assert "- `clients`: model.name tiny-bert;" in text


def test_every_method_in_a_figure_has_its_own_colour():
    from rolora.lab.report.lm_results import METHOD_ORDER
    from rolora.lab.report.plots import method_colours

    extra = method_colours(["rolora", "fedavg-lora", "ffa-lora", "flexlora", "flora", "fedex-lora"])
    handover = method_colours(["rolora", "ffa-lora", "rolora-then-ffa-0.2", "rolora-then-ffa-0.5"])
    for colours in (extra, handover):
        assert len(set(colours.values())) == len(colours)
    # a known method keeps its colour whatever else the figure holds
    assert extra["rolora"] == handover["rolora"] == f"C{METHOD_ORDER.index('rolora')}"
    assert extra["ffa-lora"] == handover["ffa-lora"]
    many = method_colours([*METHOD_ORDER, "a", "b", "c"])
    assert len(set(many.values())) == 10


def test_a_sweep_run_on_two_machines_names_both_apart():
    from rolora.lab.report.document import intro

    cells = [{"sweep": "s", "cell": f"c{i}", "status": "done", "phase": "main", "wall_s": "60", "copied_from": "",
              "train_samples": "100", "device": device} for i, device in enumerate(["cpu, 1 thread", "cpu, 2 threads", "cpu, 1 thread"])]
    sweeps = [{"sweep": "s", "cells": "3", "done": "3", "partial": "0", "pending": "0", "failed": "0", "setup": ""}]
    text = intro(cells, sweeps, "reproduction")
    assert "| s | 3 | 3 | 0 | 0 | 0 | 3 min | cpu, 1 thread / cpu, 2 threads |" in text
