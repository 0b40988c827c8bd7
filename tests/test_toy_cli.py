"""``rolora toy`` end to end with tiny settings: PNG, CSV and summary written; bad options rejected."""

from __future__ import annotations

import csv
import json

import pytest

from rolora.cli import main as rolora_main
from rolora.toy.cli import main


def test_cli_writes_png_csv_and_summary(tmp_path, capsys):
    out = tmp_path / "toy"
    code = main(["--split", "5x2,10x1", "--methods", "rolora,ffa-lora", "--rounds", "2", "--subsample", "0.01",
                 "--local-epochs", "1", "--out", str(out), "--no-progress"])
    assert code == 0
    png = out / "toy-mnist.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with open(out / "toy-mnist.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 * 2 * 3  # splits × methods × (round 0 + 2 rounds)
    assert {(r["split"], r["method"]) for r in rows} == {(s, m) for s in ("5x2", "10x1") for m in ("rolora", "ffa-lora")}
    summary = json.loads((out / "toy-mnist-summary.json").read_text())
    assert set(summary["final_test_acc"]) == {"5x2/rolora", "5x2/ffa-lora", "10x1/rolora", "10x1/ffa-lora"}
    printed = capsys.readouterr().out
    assert "rolora" in printed and "10x1" in printed and "time:" in printed


def test_root_cli_dispatches_to_toy(tmp_path):
    assert rolora_main(["toy", "--split", "10x1", "--methods", "rolora", "--rounds", "1", "--subsample", "0.01",
                        "--local-epochs", "1", "--out", str(tmp_path), "--no-progress"]) == 0
    assert (tmp_path / "toy-mnist.png").exists()


@pytest.mark.parametrize("argv", [["--split", "7x7"], ["--rounds", "0"], ["--model", "cnn"], ["--subsample", "2"]])
def test_bad_options_print_usage_and_fail(argv, capsys):
    with pytest.raises(SystemExit) as err:
        main(argv)
    assert err.value.code != 0
    assert "usage: rolora toy" in capsys.readouterr().err


def test_unknown_method_fails_with_the_valid_names(tmp_path, capsys):
    assert main(["--methods", "rolora,nope", "--out", str(tmp_path), "--no-progress"]) == 2
    assert "nope" in capsys.readouterr().err


def test_bad_data_path_fails_cleanly(tmp_path, capsys):
    (tmp_path / "m.pkl.gz").write_bytes(b"not mnist")
    assert main(["--data", str(tmp_path / "m.pkl.gz"), "--rounds", "1", "--out", str(tmp_path), "--no-progress"]) == 1
    assert "SHA-256" in capsys.readouterr().err
