"""``rolora toy`` and ``rolora theory`` on bad input: exit 2 with one clear line, nothing written, and
every output file written atomically (a failed write leaves the old file as it was)."""

from __future__ import annotations

import pytest

from rolora.theory import analyses
from rolora.theory.cli import main as theory_main
from rolora.theory.outputs import write_csv as theory_write_csv
from rolora.theory.outputs import write_json
from rolora.toy.cli import main as toy_main
from rolora.toy.data import load_mnist
from rolora.toy.plots import plot_histories
from rolora.toy.plots import write_csv as toy_write_csv
from rolora.toy.train import History, ToyConfig

TINY = ["--methods", "rolora", "--rounds", "1", "--subsample", "0.01", "--local-epochs", "1", "--no-progress"]


def _boom(*args, **kwargs):
    raise AssertionError("the run should have been refused before this")


def _files(folder):
    return sorted(p.name for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


class _Rows:
    """A stand-in History whose second row has a key the first lacks: the CSV writer fails mid-file."""

    def rows(self):
        return [{"round": 0, "acc": 0.1}, {"round": 1, "acc": 0.2, "surprise": 1}]


def _failing_savefig(self, fname, *args, **kwargs):
    with open(fname, "wb") as fh:  # half a file, then the failure
        fh.write(b"\x89PNG half")
    raise OSError("disk full")


def test_toy_too_many_clients_for_the_data_exits_2_before_any_training(tmp_path, capsys, monkeypatch):
    out = tmp_path / "toy"
    monkeypatch.setattr("rolora.toy.grid.run_grid", _boom)  # 5x2 would train first without the early check
    assert toy_main(["--split", "5x2,iid", "--num-clients", "100000", *TINY, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("rolora toy: error: --split iid: 100000 clients") and "Traceback" not in err
    assert not out.exists()


def test_toy_missing_data_file_exits_2_and_says_so(tmp_path, capsys):
    out = tmp_path / "toy"
    assert toy_main(["--data", str(tmp_path / "nope.pkl.gz"), *TINY, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "nope.pkl.gz: no such file" in err and "pip install" not in err
    assert toy_main(["--data", str(tmp_path), *TINY, "--out", str(out)]) == 2
    assert "a folder, not a file" in capsys.readouterr().err
    assert not out.exists()


def test_load_mnist_names_a_missing_explicit_file_without_the_install_hint(tmp_path):
    with pytest.raises(Exception, match="nope.pkl.gz does not exist") as err:
        load_mnist(tmp_path / "nope.pkl.gz")
    assert "pip install" not in str(err.value)


def test_toy_folder_in_place_of_an_output_file_fails_before_training(tmp_path, capsys, monkeypatch):
    out = tmp_path / "toy"
    (out / "toy-mnist.csv").mkdir(parents=True)
    monkeypatch.setattr("rolora.toy.grid.run_grid", _boom)
    with pytest.raises(SystemExit) as exc:
        toy_main(["--split", "10x1", *TINY, "--out", str(out)])
    assert exc.value.code == 2
    assert "toy-mnist.csv is a folder, not a file" in capsys.readouterr().err
    assert _files(out) == []  # no PNG written before the CSV failed


def test_toy_csv_and_png_are_written_atomically(tmp_path, monkeypatch):
    csv_path, png_path = tmp_path / "toy-mnist.csv", tmp_path / "toy-mnist.png"
    csv_path.write_text("old numbers\n")
    png_path.write_bytes(b"old figure")
    with pytest.raises(ValueError):
        toy_write_csv([_Rows()], csv_path)
    history = History(ToyConfig(split="iid", method="rolora"), [0, 1], [0.1, 0.2], [2.3, 2.0], [float("nan"), 2.1])
    monkeypatch.setattr("matplotlib.figure.Figure.savefig", _failing_savefig)
    with pytest.raises(OSError, match="disk full"):
        plot_histories([history], png_path)
    assert csv_path.read_text() == "old numbers\n" and png_path.read_bytes() == b"old figure"
    assert _files(tmp_path) == ["toy-mnist.csv", "toy-mnist.png"]  # no temporary file left behind


def test_theory_folder_in_place_of_an_output_file_fails_before_any_experiment(tmp_path, capsys, monkeypatch):
    (tmp_path / "fig2_ffa_floor.png").mkdir()
    monkeypatch.setitem(analyses.EXPERIMENTS, "ffa_floor", _boom)
    with pytest.raises(SystemExit) as exc:
        theory_main(["--quick", "--only", "ffa_floor", "--out", str(tmp_path), "--no-progress"])
    assert exc.value.code == 2
    assert "fig2_ffa_floor.png is a folder, not a file" in capsys.readouterr().err
    assert _files(tmp_path) == []  # not even the CSV


def test_theory_csv_json_and_png_are_written_atomically(tmp_path, monkeypatch):
    csv_path, json_path, png_path = tmp_path / "a.csv", tmp_path / "summary.json", tmp_path / "fig2_ffa_floor.png"
    for path in (csv_path, json_path, png_path):
        path.write_bytes(b"old\n")
    with pytest.raises(ValueError):
        theory_write_csv(csv_path, _Rows().rows())
    with pytest.raises(TypeError):
        write_json(json_path, {"seed": 0, "results": object()})  # json.dump fails after writing the start
    monkeypatch.setattr("matplotlib.figure.Figure.savefig", _failing_savefig)
    with pytest.raises(OSError, match="disk full"):
        theory_main(["--quick", "--only", "ffa_floor", "--out", str(tmp_path), "--no-progress"])
    assert [p.read_bytes() for p in (csv_path, json_path, png_path)] == [b"old\n"] * 3
    assert _files(tmp_path) == ["a.csv", "fig2_ffa_floor.csv", "fig2_ffa_floor.png", "summary.json"]
