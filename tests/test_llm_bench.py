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
    assert "| 1. PEFT loop, fp32 | float32 |" in printed and "test loss within 1e-4 of row 1" in printed
    assert "- CPU: " in printed and "model.dtype auto -> float32" in printed  # the header (tests pin fp32)
    assert "train.client_workers auto -> 2 (auto: CPU; the client-batched rows)" in printed


def test_the_warm_up_target_compares_round_1_with_the_fastest_later_round():
    from rolora.lab.bench.llm import targets

    rows = {"ours-seq": {"row": "ours-seq", "round_s": [30.0, 25.0, 20.0]},
            "ours-batched": {"row": "ours-batched", "round_s": [90.0, 40.0]}}
    lines = targets(rows)
    assert "ours-seq warm-up: round 1 30.0 s = 1.50× the fastest later round (met: ≤ 1.5×)" in lines
    assert "ours-batched warm-up: round 1 90.0 s = 2.25× the fastest later round (NOT met: ≤ 1.5×)" in lines
