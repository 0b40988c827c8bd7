"""``rolora bench llm --quick`` runs and its rows are consistent (never its timing)."""

from __future__ import annotations

import json

from rolora.lab.bench.llm import main


def test_quick_bench_rows_are_consistent(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(["--quick", "--rows", "peft-fp32,ours-seq,ours-batched", "--sweep", "", "--json", str(out)]) == 0
    rows = {r["row"]: r for r in json.loads(out.read_text())["rows"]}
    # The same samples in every row; the batched mode computes fewer padded positions.
    assert len({r["tokens"] for r in rows.values()}) == 1
    assert rows["ours-batched"]["computed_tokens"] < rows["ours-seq"]["computed_tokens"] == rows["peft-fp32"]["computed_tokens"]
    # Ours, one by one and batched, are the same mathematics.
    assert abs(rows["ours-batched"]["test_loss"] - rows["ours-seq"]["test_loss"]) < 1e-5
    for r in rows.values():
        assert r["wall_s"] > 0 and r["peak_rss_mib"] > 0 and 0 <= r["test_accuracy"] <= 1
    printed = capsys.readouterr().out
    assert "| 1. PEFT loop, fp32 |" in printed and "test loss within 1e-4 of row 1" in printed
