"""``rolora report``'s learning-rate appendix: each lr cell's validation accuracy by round, from fake
sweep folders (the format of ``rolora sweep``) into ``lm-lr-curves.csv`` and the markdown.

The lr cells here log validation scores only at some rounds (as ``run.eval_every`` does), so the
tests check that exactly those rounds and values come through, with the cell's status.
"""

from __future__ import annotations

import json
from pathlib import Path

from rolora.lab.report.csv_files import read_rows
from test_reports import N50, WIN, clients_cells, make_sweep, report, section

APPENDIX = "## Learning-rate selection: validation curves"
LABEL = "validation split, lr phase, seed 0 — used to choose the lr, never a verdict"
VAL = {0: (0.412, 0.699), 6: (0.756, 0.492), 12: (0.812, 0.444), 18: (0.828, 0.420)}
"""round -> (val accuracy, val loss) of the partial cell; the rounds between log training only."""


def add_lr_cell(folder: Path, cid: str, method: str, lr: float, status: str, val: dict[int, tuple[float, float]],
                logged: int, planned: int = 30) -> None:
    """Append an lr-phase cell to the sweep in ``folder``: ``logged`` training rounds, validation at ``val``'s."""
    run = folder / "cells" / cid
    run.mkdir(parents=True)
    rows = []
    for t in range(logged + 1):
        row = {"round": t} if t == 0 else {"round": t, "train_loss": 0.5, "participants": 50, "wall_s": 1.0}
        if t in val:
            row.update(val_accuracy=val[t][0], val_loss=val[t][1])
        rows.append(row)
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (run / "config.json").write_text(json.dumps({"federated": {"clients": 50, "rounds": planned}}))
    (run / "versions.json").write_text(json.dumps({"device": "cuda", "gpu": "NVIDIA H100 80GB HBM3"}))
    meta = json.loads((folder / "sweep.json").read_text())
    labels = {"experiment": folder.name, "method": method, "seed": 0, "lr": lr, **N50}
    meta["cells"].append({"id": cid, "labels": labels, "overrides": [], "run_dir": f"cells/{cid}",
                          "status": status, "phase": "lr"})
    (folder / "sweep.json").write_text(json.dumps(meta))


def paper_sweep(root: Path) -> Path:
    """A sweep with only lr cells scored (its main cell pending): the state of an interrupted GPU sweep."""
    folder = make_sweep(root, "clients-paper", [("rolora", 0, N50, "pending", None)])
    add_lr_cell(folder, "lr-fedavg", "fedavg-lora", 5e-4, "partial", VAL, logged=18)
    add_lr_cell(folder, "lr-ffa", "ffa-lora", 2e-3, "done", {0: VAL[0], 30: (0.9, 0.3)}, logged=30)
    return folder


def curve_rows(tmp_path: Path) -> list[dict[str, str]]:
    return read_rows(tmp_path / "docs" / "reproduction" / "lm-lr-curves.csv")


def test_lr_cells_validated_rounds_become_csv_rows(tmp_path):
    paper_sweep(tmp_path / "sweeps")
    report(tmp_path, tmp_path / "sweeps")
    rows = [r for r in curve_rows(tmp_path) if r["cell"] == "lr-fedavg"]
    assert [(int(r["round"]), float(r["val_accuracy"]), float(r["val_loss"])) for r in rows] == \
        [(t, acc, loss) for t, (acc, loss) in VAL.items()]
    labels = {(r["sweep"], r["method"], r["lr"], r["status"], r["rounds_logged"], r["rounds_planned"], r["device"])
              for r in rows}
    assert labels == {("clients-paper", "fedavg-lora", "0.0005", "partial", "18", "30", "NVIDIA H100 80GB HBM3")}
    assert {r["cell"] for r in curve_rows(tmp_path)} == {"lr-fedavg", "lr-ffa"}  # main cells log no validation


def test_a_partial_lr_cell_is_shown_with_its_status_and_rounds(tmp_path):
    paper_sweep(tmp_path / "sweeps")
    part = section(report(tmp_path, tmp_path / "sweeps"), "### `clients-paper`: learning-rate cells")
    assert LABEL in part and "round 0, the untrained model: 0.412" in part
    assert "| n50-r4 | fedavg-lora | 0.0005 | partial | 18/30 | r6 0.756 · r12 0.812 · r18 0.828 |" in part
    assert "| n50-r4 | ffa-lora | 0.002 | done | 30/30 | r30 0.900 |" in part


def test_a_sweep_with_only_lr_cells_has_no_test_results_and_no_verdict(tmp_path):
    paper_sweep(tmp_path / "sweeps")
    add_lr_cell(make_sweep(tmp_path / "sweeps", "clients", clients_cells(WIN)), "lr-r", "rolora", 1e-2, "done",
                {0: VAL[0], 3: (0.6, 0.6)}, logged=3)
    text = report(tmp_path, tmp_path / "sweeps")
    sentence = "has no test results yet (no main cell has finished), so no verdict is drawn from it."
    assert f"`clients-paper` {sentence}" in section(text, "### `clients-paper`: learning-rate cells")
    assert sentence not in section(text, "### `clients`: learning-rate cells")
    assert text.index(APPENDIX) > text.index("### Number of clients (Table 1)")


def test_the_lr_curve_rows_of_a_sweep_absent_here_are_kept_unless_dropped(tmp_path):
    paper_sweep(tmp_path / "a")
    make_sweep(tmp_path / "b", "local-steps", [("rolora", 0, {"local_steps": 1}, "done", 0.8)])
    first = report(tmp_path, tmp_path / "a")
    kept = curve_rows(tmp_path)
    second = report(tmp_path, tmp_path / "b")
    assert curve_rows(tmp_path) == kept
    assert section(second, "### `clients-paper`") == section(first, "### `clients-paper`")
    assert report(tmp_path, tmp_path / "b", extra=["--from-csv"]) == second
    third = report(tmp_path, tmp_path / "b", extra=["--drop-absent"])
    assert curve_rows(tmp_path) == [] and APPENDIX not in third


def test_planned_rounds_scale_with_the_reference_clients_like_the_run_config():
    from rolora.llm.config import load_config
    from rolora.lab.report.sweep_reader import planned_rounds

    for n in (3, 20, 50):
        config = load_config(None, ["federated.rounds=4", "federated.reference_clients=50", f"federated.clients={n}"])
        assert planned_rounds(config.to_dict()["federated"]) == config.total_rounds
    assert planned_rounds({"rounds": 7, "reference_clients": 0, "clients": 3}) == 7
