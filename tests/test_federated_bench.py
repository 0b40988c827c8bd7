"""The aggregation benchmark runs end to end on a tiny config and reports a row per method."""

from __future__ import annotations

import json

import pytest

from rolora.federated import available_methods
from rolora.lab.bench.aggregate import main


def test_bench_prints_a_row_per_method_and_client_count(capsys, tmp_path):
    out_json = tmp_path / "bench.json"
    code = main(["--layers", "2", "--shape", "12x7", "--rank", "2", "--clients", "1,3", "--repeats", "1",
                 "--no-progress", "--no-memory", "--json", str(out_json)])
    assert code == 0
    text = capsys.readouterr().out
    rows = [line for line in text.splitlines() if line.startswith("| ") and not line.startswith("| method")]
    assert len(rows) == 2 * len(available_methods())
    for name in available_methods():
        for k in (1, 3):
            assert any(r.startswith(f"| {name} | {k} |") for r in rows), (name, k)
    data = json.loads(out_json.read_text())
    assert {(r["method"], r["clients"]) for r in data["rows"]} == {(m, k) for m in available_methods() for k in (1, 3)}
    # Bytes per client come from the communication table: ffa-lora uploads d·r per layer.
    ffa = next(r for r in data["rows"] if r["method"] == "ffa-lora")
    assert ffa["upload_mib_per_client"] * 2**20 == pytest.approx(2 * 12 * 2 * 4)


def test_bench_method_subset_and_bad_options(capsys):
    assert main(["--layers", "1", "--dim", "6", "--rank", "1", "--clients", "2", "--repeats", "1",
                 "--methods", "rolora,flora", "--no-progress", "--no-memory"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| rolora") or line.startswith("| flora")]
    assert len(rows) == 2
    for bad in (["--shape", "12by7"], ["--clients", "0"], ["--layers", "0"], ["--dim", "4", "--shape", "4x3"],
                ["--methods", "rolora,fedprox"], ["--repeats", "0"], ["--dim", "0"]):
        with pytest.raises(SystemExit) as err:
            main(bad)
        assert err.value.code != 0
