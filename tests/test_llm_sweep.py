"""``rolora sweep``: spec parsing and its errors, cell expansion, the lr choice on the validation
split, and real tiny-bert sweeps (interrupted, resumed, skipped when finished, --jobs 2 = --jobs 1)."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from rolora.llm.config import ConfigError, load_config, to_toml
from rolora.lab.sweep.runner import Sweep, dry_run, run_sweep, status_table
from rolora.lab.sweep.spec import SPECS_DIR, load_spec, lr_cells, main_cells, select

TINY = ["model.name=tiny-bert", "model.max_length=24", "data.dataset=rotten_tomatoes", "data.test_size=24",
        "data.val_size=24", "data.max_train_samples=48", "run.eval_batch_size=24", "federated.clients=3",
        "federated.rounds=2", "train.local_steps=1", "train.batch_size=4", "lora.rank=2", "lora.alpha=4.0"]

SPEC = """
    base = "base.toml"
    seeds = [0, 1]
    evals = 2
    [axes.clients]
    short = "n"
    2 = ["federated.clients=2"]
    6 = ["federated.clients=6"]
    [axes.rank]
    short = "r"
    2 = ["lora.rank=2", "lora.alpha=4.0"]
    4 = ["lora.rank=4", "lora.alpha=8.0"]
    [[columns]]
    clients = 2
    rank = 2
    [[columns]]
    clients = 6
    rank = 2
    [[columns]]
    clients = 6
    rank = 4
    only_methods = ["rolora"]
    [[methods]]
    label = "rolora"
    method = "rolora"
    [[methods]]
    label = "galore"
    method = "fedavg-full"
    overrides = ["train.optimizer=galore", "train.galore_rank=2"]
    only_at = [{clients = 2}]
    [[methods]]
    label = "ffa"
    method = "ffa-lora"
    lr = 0.05
    [lr]
    grid = [1e-3, 3e-3, 1e-2]
    at = {clients = 2}
"""


def write_spec(folder: Path, text: str, name: str = "exp") -> str:
    (folder / "base.toml").write_text(to_toml(load_config(None, TINY)))
    path = folder / f"{name}.toml"
    path.write_text(textwrap.dedent(text))
    return str(path)


def test_cells_are_methods_times_columns_times_seeds_with_the_restrictions(tmp_path):
    spec = load_spec(write_spec(tmp_path, SPEC))
    lr = lr_cells(spec)
    # ffa has a fixed lr: only rolora and galore are selected, at the n2-r2 column, seed 0, val only.
    assert [c.id for c in lr] == [f"lr-n2-r2-{m}-lr{x}" for m in ("rolora", "galore") for x in ("0.001", "0.003", "0.01")]
    assert all('run.eval_splits=["val"]' in c.overrides and c.labels["seed"] == 0 for c in lr)
    main = main_cells(spec, {"rolora": 0.003, "galore": 0.01})
    per_seed = ["n2-r2-rolora", "n2-r2-galore", "n2-r2-ffa", "n6-r2-rolora", "n6-r2-ffa", "n6-r4-rolora"]
    assert [c.id for c in main] == [f"exp-{p}-s{s}" for s in (0, 1) for p in per_seed]
    cell = main[1]
    assert cell.labels == {"experiment": "exp", "method": "galore", "seed": 0, "lr": 0.01, "clients": 2, "rank": 2}
    assert cell.overrides == ("federated.clients=2", "lora.rank=2", "lora.alpha=4.0", 'federated.method="fedavg-full"',
                              "train.optimizer=galore", "train.galore_rank=2", "train.lr=0.01", "run.seed=0",
                              "run.eval_every=1")
    assert main[2].labels["lr"] == 0.05 and "train.lr=0.05" in main[2].overrides
    assert not any("eval_splits" in o for c in main for o in c.overrides)  # main cells score val and test
    # Before the choice a selected method's cells have no lr.
    assert main_cells(spec, {})[0].labels["lr"] is None
    assert [c.id for c in select(main, "*-n6-*-s1")] == ["exp-n6-r2-rolora-s1", "exp-n6-r2-ffa-s1", "exp-n6-r4-rolora-s1"]


def test_only_runs_the_matching_cells_and_the_lr_cells_their_methods_need(tmp_path):
    from rolora.lab.sweep.runner import cells_to_run

    sweep = Sweep(load_spec(write_spec(tmp_path, SPEC)), tmp_path / "out")
    lr, main = cells_to_run(sweep, "*-n6-r4-*")
    assert [c.id for c in main] == ["exp-n6-r4-rolora-s0", "exp-n6-r4-rolora-s1"]
    assert [c.id for c in lr] == ["lr-n2-r2-rolora-lr0.001", "lr-n2-r2-rolora-lr0.003", "lr-n2-r2-rolora-lr0.01"]
    lr, main = cells_to_run(sweep, "lr-n2-r2-galore-lr0.01")
    assert [c.id for c in lr] == ["lr-n2-r2-galore-lr0.01"] and main == []
    assert len(cells_to_run(sweep, "s1")[1]) == 6 and len(cells_to_run(sweep, "ffa")[0]) == 0  # ffa: fixed lr


def test_evals_sets_eval_every_from_each_cells_rounds(tmp_path):
    spec = load_spec(write_spec(tmp_path, """
        base = "base.toml"
        overrides = ["federated.reference_clients=10", "federated.rounds=3"]
        evals = 4
        [axes.clients]
        short = "n"
        2 = ["federated.clients=2"]
        10 = ["federated.clients=10"]
        [[methods]]
        label = "rolora"
        method = "rolora"
    """))
    from rolora.lab.sweep.spec import cell_config

    configs = [cell_config(spec, c) for c in main_cells(spec, {})]
    assert [(c.total_rounds, c.run.eval_every) for c in configs] == [(15, 4), (3, 1)]
    assert all(c.labels["lr"] == 5e-4 for c in main_cells(spec, {}))  # no lr table: the base's lr


@pytest.mark.parametrize("text, message", [
    ('base = "base.toml"\nmethod = []', "unknown key 'method'"),
    ('seeds = [0]\n[[methods]]\nlabel = "a"\nmethod = "rolora"', "base: a shipped config"),
    ('base = "nope.toml"\n[[methods]]\nlabel = "a"\nmethod = "rolora"', "config 'nope.toml'"),
    ('base = "base.toml"', "methods: at least one"),
    ('base = "base.toml"\n[[methods]]\nmethod = "rolora"', r"methods\[0\]: label"),
    ('base = "base.toml"\n[[methods]]\nlabel = "a"\nmethod = "rolora"\noverrides = ["train.lrr=1"]',
     "cell exp-a-s0: .*unknown key train.lrr"),
    ('base = "base.toml"\n[[methods]]\nlabel = "a"\nmethod = "rolora"\noverrides = ["lr"]', "'lr' is not section.key=value"),
    ('base = "base.toml"\n[axes.n]\n2 = ["federated.clients=2"]\n[[columns]]\nn = 3\n[[methods]]\nlabel = "a"\nmethod = "rolora"',
     r"columns\[0\]: n = 3 is not a value of axes.n"),
    ('base = "base.toml"\n[axes.n]\n2 = ["federated.clients=2"]\n[[methods]]\nlabel = "a"\nmethod = "rolora"\n'
     '[lr]\ngrid = [0.1]\nat = {n = 5}', "lr.at {'n': 5} must match exactly one column"),
    ('base = "base.toml"\n[axes.n]\n2 = ["federated.clients=2"]\n3 = ["federated.clients=3"]\n[[methods]]\nlabel = "a"\n'
     'method = "rolora"\nonly_at = [{n = 3}]\n[lr]\ngrid = [0.1]\nat = {n = 2}', "'a': does not run at the lr selection column n2"),
    ('base = "base.toml"\n[[methods]]\nlabel = "a"\nmethod = "rolora"\n[lr]\ngrid = [0.1]\nmetric = "test_accuracy"',
     "lr.metric: must be a validation metric"),
    ('base = "base.toml"\n[[methods]]\nlabel = "a"\nmethod = "rolora"\n[[methods]]\nlabel = "a"\nmethod = "ffa-lora"', "a label used twice"),
    ('base = "base.toml"\n[axes.n]\n2 = ["federated.clients=2"]\n[[methods]]\nlabel = "a"\nmethod = "rolora"\n'
     'only_at = [{clients = 2}]', r"methods\[0\]: 'clients' in only_at / lr_at is not an axis \(n\)"),
    ('base = "base.toml"\n[axes.n]\n2 = ["federated.clients=2"]\n[[methods]]\nlabel = "a"\nmethod = "rolora"\n'
     'only_at = [{n = 3}]', "'a' runs in no column"),
    ('base = "base.toml"\n[[methods]]\nlabel = "a"\nmethod = "rolora:ffa_afterr=0.2"', r"methods\[0\].method: 'rolora:ffa_afterr=0.2'"),
    ('base = "base.toml"\n[[methods]]\nlabel = "a"\nmethod = "rolora"\nlr_grid = [0.1, 0]', r"methods\[0\]: lr_grid: must be"),
    ('base = "base.toml"\n[[methods]]\nlabel = "a"\nmethod = "rolora"\n[lr]\ngrid = []', "lr.grid: must be"),
])
def test_a_bad_spec_names_the_key(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message):
        load_spec(write_spec(tmp_path, text))


def test_an_unknown_spec_name_lists_the_shipped_ones():
    with pytest.raises(ConfigError, match="no shipped spec of that name.*clients"):
        load_spec("no-such-sweep")


def test_shipped_specs_expand():
    for path in sorted(SPECS_DIR.glob("*.toml")):
        sweep = Sweep(load_spec(path.stem), Path("/nonexistent/sweep"))
        assert sweep.cells and path.read_text().startswith("#"), path


def _fake_lr_cell(sweep: Sweep, cell, val_acc: float, val_loss: float, test_acc: float) -> None:
    """A finished lr cell on disk: its config, a final row, curves.png."""
    from rolora.lab.sweep.spec import cell_config

    folder = sweep.out / "cells" / cell.id
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(cell_config(sweep.spec, cell).to_dict()))
    rows = [{"round": 0}, {"round": 2, "val_accuracy": val_acc, "val_loss": val_loss, "test_accuracy": test_acc}]
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (folder / "curves.png").write_bytes(b"")


def test_the_lr_choice_takes_the_best_validation_score_and_never_the_test(tmp_path):
    spec = load_spec(write_spec(tmp_path, SPEC))
    sweep = Sweep(spec, tmp_path / "out")
    assert sweep.lr_choice == {}  # nothing tried yet
    scores = {"rolora": [(0.70, 0.5, 0.99), (0.80, 0.4, 0.10), (0.80, 0.3, 0.10)],  # tie: the lower val_loss
              "galore": [(0.60, 0.5, 0.10), (0.90, 0.6, 0.10), (0.85, 0.3, 0.99)]}
    for cell in sweep.lr:
        i = spec.lr.grid.index(cell.labels["lr"])
        _fake_lr_cell(sweep, cell, *scores[cell.labels["method"]][i])
    sweep.refresh()
    assert {k: v["chosen"] for k, v in sweep.lr_choice.items()} == {"rolora": 1e-2, "galore": 3e-3}
    assert sweep.lr_choice["rolora"]["scores"] == {"0.001": 0.70, "0.003": 0.80, "0.01": 0.80}
    assert sweep.lr_choice["galore"]["selected_at"] == {"clients": 2, "rank": 2, "seed": 0}
    galore = [c for c in sweep.main if c.labels["method"] == "galore"]
    assert galore and all(c.labels["lr"] == 3e-3 and "train.lr=0.003" in c.overrides for c in galore)
    assert "(train.lr: chosen" not in dry_run(sweep)
    assert "lr rolora: 0.01" in status_table(sweep)


def test_recorded_cells_are_not_run_again_and_bring_their_lr_choice(tmp_path, capsys):
    """A sweep's lr phase and seed 0 done in one checkout and extracted by the report; a fresh checkout with
    --recorded runs only seed 1 with the same lrs. Another spec's rows are not reused."""
    from rolora.lab.sweep.runner import still_to_run
    from rolora.lab.sweep.record import read_recorded
    from rolora.lab.report.extract import extract_sweeps

    spec = load_spec(write_spec(tmp_path, SPEC))
    first = Sweep(spec, tmp_path / "first")
    for cell in first.lr:  # rolora prefers 3e-3, galore 1e-2
        best = {"rolora": 3e-3, "galore": 1e-2}[cell.labels["method"]]
        _fake_lr_cell(first, cell, 0.8 if cell.labels["lr"] == best else 0.6, 0.5, 0.1)
    first.refresh()
    seed0 = [c for c in first.main if c.labels["seed"] == 0]
    for cell in seed0:
        _fake_lr_cell(first, cell, 0.7, 0.4, 0.7)
    first.refresh()
    first.write()
    assert all(first.status[c.id] == "done" for c in first.lr + seed0)
    data = tmp_path / "data"
    extract_sweeps(first.out, data)

    fresh = Sweep(spec, tmp_path / "fresh", read_recorded(data, spec.name, spec.raw))
    assert {c.id for c in fresh.cells if fresh.status[c.id] == "recorded"} == {c.id for c in first.lr + seed0}
    assert {k: v["chosen"] for k, v in fresh.lr_choice.items()} == {"rolora": 3e-3, "galore": 1e-2}
    assert fresh.lr_choice["rolora"]["scores"] == first.lr_choice["rolora"]["scores"]
    assert [(c.id, c.overrides) for c in fresh.main] == [(c.id, c.overrides) for c in first.main]
    assert [c.id for c in still_to_run(fresh)] == [c.id for c in first.main if c.labels["seed"] == 1]
    assert still_to_run(fresh, "*-s0") == []
    assert "12 recorded" in status_table(fresh)
    # an lr phase recorded only in part (no choice recorded): its cells run again, so a choice can be made
    from rolora.lab.sweep.record import Recorded

    partial = Sweep(spec, tmp_path / "partial", Recorded(frozenset(c.id for c in first.lr[:2]), {}))
    assert [c.id for c in still_to_run(partial, "lr-")] == [c.id for c in first.lr]
    # without --recorded the fresh checkout would run everything, lr phase first
    assert len(still_to_run(Sweep(spec, tmp_path / "bare"))) == len(first.lr) + len(first.main)
    changed = load_spec(write_spec(tmp_path, SPEC.replace("seeds = [0, 1]", "seeds = [0, 1, 2]")))
    stale = read_recorded(data, changed.name, changed.raw)  # its own rows are another experiment's
    assert (stale.cells, stale.lr_choice) == (frozenset(), {})
    assert "different spec" in capsys.readouterr().err
    assert read_recorded(data, "another-sweep", spec.raw).cells == frozenset()
    with pytest.raises(ConfigError, match="lm-sweeps.csv, lm-cells.csv, lm-lr-choice.csv not found"):
        read_recorded(tmp_path / "nowhere", spec.name, spec.raw)


TWIN_A = """
    base = "base.toml"
    seeds = [0, 1]
    evals = 2
    [[methods]]
    label = "rolora"
    method = "rolora"
    lr = 0.01
"""
TWIN_B = """
    base = "base.toml"
    seeds = [0, 1]
    evals = 2
    [axes.clients]
    short = "n"
    3 = []
    6 = ["federated.clients=6"]
    [[methods]]
    label = "rolora"
    method = "rolora"
    lr = 0.01
"""


def test_a_cell_a_sibling_sweep_has_run_is_copied_and_counted_once(tmp_path):
    """Sweep b's 3-client cells are sweep a's cells (same config, other ids): copied from a's finished runs
    (a run that differs in run.threads only counts; an unfinished one does not), never run; the 6-client
    cells have no twin. The report keeps their results and counts their training time in a only."""
    from rolora.lab.sweep.runner import copy_twins
    from rolora.lab.sweep.twins import COPIED_FROM
    from rolora.lab.report.csv_files import read_rows
    from rolora.lab.report.extract import extract_sweeps
    from rolora.lab.report.lm_results import cost_seconds

    root = tmp_path / "sweeps"
    a = Sweep(load_spec(write_spec(tmp_path, TWIN_A, "a")), root / "a")
    for cell in a.main:
        _fake_lr_cell(a, cell, 0.7, 0.4, 0.6 + cell.labels["seed"] / 10)
    unfinished = a.out / "cells" / a.main[1].id
    (unfinished / "curves.png").unlink()  # seed 1 stopped before its end
    config = json.loads((a.out / "cells" / a.main[0].id / "config.json").read_text())
    config["run"]["threads"] = 7
    (a.out / "cells" / a.main[0].id / "config.json").write_text(json.dumps(config))
    for folder in (a.out / "cells").iterdir():
        rows = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
        (folder / "metrics.jsonl").write_text("".join(json.dumps(dict(r, wall_s=5.0)) + "\n" for r in rows))
    a.refresh()
    a.write()
    assert [a.status[c.id] for c in a.main] == ["done", "partial"]

    b = Sweep(load_spec(write_spec(tmp_path, TWIN_B, "b")), root / "b")
    twin_of_a = "b-n3-rolora-s0"
    assert f"{twin_of_a}  [main, pending]" in dry_run(b) and "would be copied from" in dry_run(b, twin_of_a)
    assert "would be copied" not in dry_run(b, "b-n3-rolora-s1") + dry_run(b, "n6")
    lines: list[str] = []
    b = run_sweep(b.spec, b.out, only=twin_of_a, echo=lines.append)  # nothing left to run: no cell process
    assert "b: 0 cells to run" in lines[1]
    assert {c.id: b.status[c.id] for c in b.main} == {twin_of_a: "done", "b-n6-rolora-s0": "pending",
                                                      "b-n3-rolora-s1": "pending", "b-n6-rolora-s1": "pending"}
    copied = b.out / "cells" / twin_of_a
    assert json.loads((copied / COPIED_FROM).read_text())["from"] == str(a.out / "cells" / a.main[0].id)
    assert (copied / "metrics.jsonl").read_text() == (a.out / "cells" / a.main[0].id / "metrics.jsonl").read_text()
    assert lines == [f"[sweep] copied {twin_of_a} from {a.out / 'cells' / a.main[0].id} (the same config, "
                     "finished there)", lines[1]]
    assert copy_twins(b, b.main, lines.append) == 0 and len(lines) == 2  # nothing twice
    assert not list((b.out / "cells").glob(".*"))  # no staging folder left

    data = tmp_path / "data"
    extract_sweeps(root, data)
    cells = {r["cell"]: r for r in read_rows(data / "lm-cells.csv")}
    assert cells[twin_of_a]["final_test_accuracy"] == cells[a.main[0].id]["final_test_accuracy"] == "0.6"
    assert cells[twin_of_a]["copied_from"] and not cells[a.main[0].id]["copied_from"]
    rows = list(cells.values())
    assert cost_seconds(rows, "b") == 0.0 and cost_seconds(rows) == cost_seconds(rows, "a") == 20.0


def test_a_cell_whose_twin_another_sweep_recorded_borrows_its_rows(tmp_path):
    """In a fresh checkout, sweep b's 3-client cells are the twins of sweep a's cells that the report's CSVs
    hold as done: --recorded marks them recorded (not run) and the report fills them with a's results and
    curves under b's names, counting their training time in a only; b's other cells run as usual."""
    from rolora.lab.sweep.runner import still_to_run
    from rolora.lab.sweep.record import read_recorded
    from rolora.lab.report.csv_files import read_rows
    from rolora.lab.report.extract import extract_sweeps
    from rolora.lab.report.lm_results import cost_seconds

    absolute = lambda text: text.replace('base = "base.toml"', f'base = "{tmp_path / "base.toml"}"')  # noqa: E731
    data = tmp_path / "data"
    a = Sweep(load_spec(write_spec(tmp_path, absolute(TWIN_A), "a")), tmp_path / "first" / "a")
    for cell in a.main:
        _fake_lr_cell(a, cell, 0.7, 0.4, 0.6 + cell.labels["seed"] / 10)
    a.refresh()
    a.write()
    extract_sweeps(a.out, data)

    spec_b = load_spec(write_spec(tmp_path, absolute(TWIN_B), "b"))
    b = Sweep(spec_b, tmp_path / "fresh" / "b", read_recorded(data, "b", spec_b.raw))
    assert b.borrowed == {"b-n3-rolora-s0": "a/a-rolora-s0", "b-n3-rolora-s1": "a/a-rolora-s1"}
    assert [c.id for c in still_to_run(b)] == ["b-n6-rolora-s0", "b-n6-rolora-s1"]
    assert "its twin a/a-rolora-s0 is recorded" in dry_run(b, "b-n3-rolora-s0")
    assert Sweep(spec_b, tmp_path / "bare").borrowed == {}  # without --recorded: nothing borrowed
    for cell in still_to_run(b):
        _fake_lr_cell(b, cell, 0.7, 0.4, 0.9)
    b.refresh()
    b.write()
    extract_sweeps(b.out, data)

    cells = {r["cell"]: r for r in read_rows(data / "lm-cells.csv")}
    for seed in (0, 1):
        mine, twin = cells[f"b-n3-rolora-s{seed}"], cells[f"a-rolora-s{seed}"]
        assert mine["status"] == "done" and mine["copied_from"] == f"a/a-rolora-s{seed}" and mine["setting"] == "n3"
        assert mine["final_test_accuracy"] == twin["final_test_accuracy"] == repr(0.6 + seed / 10)
    curves = [r for r in read_rows(data / "lm-curves.csv") if r["cell"] == "b-n3-rolora-s1"]
    assert [(r["sweep"], r["round"], r["test_accuracy"]) for r in curves] == [("b", "2", repr(0.7))]
    sweeps = {r["sweep"]: r for r in read_rows(data / "lm-sweeps.csv")}
    assert sweeps["b"]["done"] == "4" and sweeps["a"]["done"] == "2"
    rows = list(cells.values())
    assert cost_seconds(rows, "b") == cost_seconds(rows, "a") == 0.0  # fake cells log no wall time
    assert cost_seconds([dict(cells["b-n3-rolora-s0"], wall_s="9")]) == 0.0
    # b's spec grows (a third seed): b's own rows are another experiment's now, a's twins still hold
    grown = load_spec(write_spec(tmp_path, absolute(TWIN_B).replace("seeds = [0, 1]", "seeds = [0, 1, 2]"), "b"))
    regrown = Sweep(grown, tmp_path / "grown" / "b", read_recorded(data, "b", grown.raw))
    assert regrown.borrowed == b.borrowed
    assert sorted(c.id for c in still_to_run(regrown)) == sorted(
        ["b-n3-rolora-s2", "b-n6-rolora-s0", "b-n6-rolora-s1", "b-n6-rolora-s2"])


def test_a_cell_folder_of_another_config_is_failed_not_overwritten(tmp_path):
    spec = load_spec(write_spec(tmp_path, SPEC))
    sweep = Sweep(spec, tmp_path / "out")
    cell = sweep.lr[0]
    _fake_lr_cell(sweep, cell, 0.5, 0.5, 0.5)
    (tmp_path / "base.toml").write_text(to_toml(load_config(None, TINY + ["train.batch_size=2"])))
    sweep = Sweep(spec, tmp_path / "out")
    assert sweep.status[cell.id] == "failed"
    assert "different config (train.batch_size)" in sweep.document()["cells"][0]["error"]


TINY_SWEEP = """
    base = "base.toml"
    seeds = [0]
    evals = 2
    [[methods]]
    label = "rolora"
    method = "rolora"
    [lr]
    grid = [1e-3, 1e-2]
"""


def _rows(folder: Path) -> list[dict]:
    rows = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in ("wall_s", "tokens_per_s")} for r in rows]


@pytest.mark.slow  # ten cell processes (each imports torch and builds tiny-bert): about a minute
def test_a_sweep_resumes_skips_finished_cells_and_jobs_2_gives_the_same_numbers(tmp_path, monkeypatch):
    spec = load_spec(write_spec(tmp_path, TINY_SWEEP, "tiny"))
    out, lines = tmp_path / "one", []
    # Every cell process dies in round 2 (as if killed): the lr cells are failed, half done.
    monkeypatch.setenv("ROLORA_TEST_DIE_IN_ROUND", "2")
    sweep = run_sweep(spec, out, jobs=1, cores=1, echo=lines.append)
    assert {sweep.status[c.id] for c in sweep.cells} == {"failed"}
    doc = json.loads((out / "sweep.json").read_text())
    assert "exit status 137" in doc["cells"][0]["error"] and "round 1:" in doc["cells"][0]["error"]  # run.log's tail
    assert doc["lr_choice"]["rolora"]["chosen"] is None and doc["lr_choice"]["rolora"]["scores"] == {"0.001": None, "0.01": None}
    assert "no learning rate chosen" in doc["cells"][-1]["error"]
    monkeypatch.delenv("ROLORA_TEST_DIE_IN_ROUND")
    sweep = run_sweep(spec, out, jobs=1, cores=1, echo=lines.append)
    assert {sweep.status[c.id] for c in sweep.cells} == {"done"}
    assert "resumed from" in (out / "cells" / "lr-rolora-lr0.001" / "run.log").read_text()
    doc = json.loads((out / "sweep.json").read_text())
    assert [c["status"] for c in doc["cells"]] == ["done"] * 3 and not any("error" in c for c in doc["cells"])
    chosen = doc["lr_choice"]["rolora"]["chosen"]
    assert chosen in (1e-3, 1e-2) and doc["cells"][-1]["labels"]["lr"] == chosen
    for cell in doc["cells"]:
        rows = _rows(out / cell["run_dir"])
        assert [r["round"] for r in rows] == [0, 1, 2] and all("val_accuracy" in r for r in rows)
        # lr cells never score the test set; main cells score both.
        assert any(k.startswith("test_") for r in rows for k in r) == (cell["phase"] == "main")
    # A finished sweep runs nothing again.
    stamp = {c["id"]: (out / c["run_dir"] / "metrics.jsonl").stat().st_mtime_ns for c in doc["cells"]}
    run_sweep(spec, out, jobs=1, cores=1, echo=lines.append)
    assert {c["id"]: (out / c["run_dir"] / "metrics.jsonl").stat().st_mtime_ns for c in doc["cells"]} == stamp
    assert "0 cells to run" in lines[-1]
    # Two at a time (1 thread each, like the runs above): the same numbers, cell by cell.
    run_sweep(spec, tmp_path / "two", jobs=2, cores=2, echo=lines.append, copy=False)  # run, not copied from "one"
    for cell in doc["cells"]:
        assert not (tmp_path / "two" / cell["run_dir"] / "copied_from.json").exists()
        assert _rows(tmp_path / "two" / cell["run_dir"]) == _rows(out / cell["run_dir"]), cell["id"]
    assert json.loads((tmp_path / "two" / "sweep.json").read_text())["lr_choice"] == doc["lr_choice"]
