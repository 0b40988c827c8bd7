"""`rolora theory`: the quick run writes every figure and its numbers; bad options fail."""

import csv
import json
import subprocess
import sys

import pytest

from rolora.theory.cli import FIGURES, main


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("theory")
    assert main(["--quick", "--out", str(out), "--no-progress"]) == 0
    return out


def test_quick_mode_writes_every_figure_and_its_numbers(quick_run):
    for stem, _ in FIGURES.values():
        for ext in ("png", "csv"):
            path = quick_run / f"{stem}.{ext}"
            assert path.is_file() and path.stat().st_size > 0, path
        assert (quick_run / f"{stem}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        with open(quick_run / f"{stem}.csv") as fh:
            assert len(list(csv.DictReader(fh))) > 0


def test_summary_json_has_every_experiment(quick_run):
    summary = json.loads((quick_run / "summary.json").read_text())
    assert set(summary["results"]) == {"theorem", "ffa_floor", "comparison", "finite_samples", "nonconvex_rate"}
    assert summary["results"]["theorem"]["0.9"]["bound_holds_every_round"] is True
    assert summary["results"]["nonconvex_rate"]["slope_min_grad_sq"] < 0


def test_results_table_is_printed(tmp_path, capsys):
    assert main(["--quick", "--only", "ffa_floor", "--out", str(tmp_path), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "FFA-LoRA floor" in out and "total time" in out and str(tmp_path.resolve()) in out


def test_same_seed_gives_identical_numbers(tmp_path):
    for name in ("a", "b"):
        assert main(["--quick", "--only", "ffa_floor", "finite_samples", "--seed", "3",
                     "--out", str(tmp_path / name), "--no-progress"]) == 0
    for stem in ("fig2_ffa_floor", "fig4_finite_samples"):
        assert (tmp_path / "a" / f"{stem}.csv").read_bytes() == (tmp_path / "b" / f"{stem}.csv").read_bytes()


def test_bad_option_prints_usage_and_fails(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--bogus"])
    assert exc.value.code != 0
    assert "usage: rolora theory" in capsys.readouterr().err


def test_top_level_cli_dispatches_to_theory(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "rolora", "theory", "--quick", "--only", "ffa_floor",
                           "--out", str(tmp_path), "--no-progress"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "fig2_ffa_floor.png").stat().st_size > 0
