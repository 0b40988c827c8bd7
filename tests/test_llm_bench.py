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
    # Each side under its own OpenMP wait policy (the default --waits own), shown per row.
    from rolora.llm.cpu_threads import USER_WAIT_POLICY

    assert rows["peft-fp32"]["openmp_waits"] == (USER_WAIT_POLICY or "OpenMP default")
    assert rows["ours-seq"]["openmp_waits"] == (USER_WAIT_POLICY or "PASSIVE")
    assert "| OpenMP waits |" in printed and "- OpenMP waits: " in printed


def test_the_warm_up_target_compares_round_1_with_the_fastest_later_round():
    from rolora.lab.bench.llm import targets

    rows = [{"row": "ours-seq", "round_s": [30.0, 25.0, 20.0]}, {"row": "ours-batched", "round_s": [90.0, 40.0]}]
    lines = targets(rows)
    assert "ours-seq warm-up: round 1 30.0 s = 1.50× the fastest later round (met: ≤ 1.5×)" in lines
    assert "ours-batched warm-up: round 1 90.0 s = 2.25× the fastest later round (NOT met: ≤ 1.5×)" in lines


def _row(kind: str, wall: float, rss: float, loss: float = 0.5) -> dict:
    return {"row": kind, "wall_s": wall, "round_s": [wall], "peak_rss_mib": rss, "test_loss": loss}


def test_repeated_rows_are_judged_by_their_median_not_the_last_or_luckiest():
    from rolora.lab.bench.llm import FASTEST, targets

    # Interleaved: the loop's median 150 against ours' median 55 is 2.73×, although the last pair
    # (180 / 50 = 3.6×) and the best single pair would both read "met".
    rows = [_row("peft-fp32", 150.0, 2000), _row(FASTEST, 60.0, 1500), _row("peft-fp32", 120.0, 1900),
            _row(FASTEST, 55.0, 1950), _row("peft-fp32", 180.0, 2100), _row(FASTEST, 50.0, 1400)]
    lines = targets(rows)
    assert lines[0] == ("fastest ≥ 3× row 1: 2.73× (NOT met; 150.0 s, median of 3, against 55.0 s, median of 3; "
                        "single rows 2.00–3.60×)")
    # Peak RSS: ours' largest (1950) against the loop's smallest (1900).
    assert lines[2] == "fastest peak RSS ≤ row 1: 1950 vs 1900 MiB (NOT met; largest against smallest)"
    once = targets([_row("peft-fp32", 150.0, 2000), _row(FASTEST, 50.0, 1500)])
    assert once[0] == "fastest ≥ 3× row 1: 3.00× (met; 150.0 s, one row, against 50.0 s, one row)"
    assert once[2] == "fastest peak RSS ≤ row 1: 1500 vs 2000 MiB (met)"


def test_a_failing_row_ends_the_bench_with_one_message_and_exit_1(monkeypatch, capsys):
    import subprocess

    from rolora.lab.bench import llm

    def failing(cmd, **kwargs):
        return subprocess.CompletedProcess(cmd, 3, stdout="", stderr="MemoryError: out of memory\n")

    monkeypatch.setattr(llm.subprocess, "run", failing)
    assert main(["--quick", "--rows", "ours-fast", "--sweep", ""]) == 1
    err = capsys.readouterr().err
    assert "bench row ours-fast failed (exit 3)" in err and "out of memory" in err and "Traceback" not in err


def test_each_side_runs_under_its_own_openmp_wait_policy_unless_the_user_chose():
    from rolora.lab.bench.llm import row_env, waits_line
    from rolora.lab.bench.llm_row import OPENMP_DEFAULT

    ours = {"OMP_WAIT_POLICY": "PASSIVE", "PATH": "/bin"}  # what import rolora.llm left in the parent
    # own (the default): the PEFT loop as its users run it, rolora's rows under rolora's policy
    peft = row_env("peft-fp32", "own", ours, None)
    assert "OMP_WAIT_POLICY" not in peft and peft[OPENMP_DEFAULT] == "1" and peft["PATH"] == "/bin"
    assert row_env("ours-fast", "own", ours, None) == ours
    # same: every row under rolora's; a policy the user set: every row under it
    assert row_env("peft-fp32", "same", ours, None) == ours
    assert row_env("peft-bf16", "own", {"OMP_WAIT_POLICY": "ACTIVE"}, "ACTIVE") == {"OMP_WAIT_POLICY": "ACTIVE"}
    # a stale flag in the parent's environment never reaches a row it was not meant for
    assert OPENMP_DEFAULT not in row_env("ours-fast", "own", {**ours, OPENMP_DEFAULT: "1"}, None)
    assert ours == {"OMP_WAIT_POLICY": "PASSIVE", "PATH": "/bin"}  # the caller's mapping is left alone
    assert "each side its own default" in waits_line("own", None)
    assert "(--waits same)" in waits_line("same", None)
    assert "OMP_WAIT_POLICY=ACTIVE (set by you)" in waits_line("own", "ACTIVE")


def test_a_peft_row_under_openmp_default_leaves_the_policy_unset():
    import os
    import subprocess
    import sys

    from rolora.lab.bench.llm_row import OPENMP_DEFAULT

    code = ("import os; import rolora.lab.bench.llm_row, rolora.llm as l; "
            "print(os.environ.get('OMP_WAIT_POLICY'), '|', l.OPENMP_WAITS)")
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    default = subprocess.run([sys.executable, "-c", code], env={**env, OPENMP_DEFAULT: "1"},
                             capture_output=True, text=True, check=True).stdout.strip()
    assert default.startswith("None | default"), default
    rolora = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                            check=True).stdout.strip()
    assert rolora == "PASSIVE | PASSIVE", rolora
