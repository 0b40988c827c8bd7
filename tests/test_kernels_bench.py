"""The kernel benchmark runs end to end on a tiny CPU config (no timing assertions), and its
addmm baseline is a correct LoRA linear (float64 reference, rtol 1e-5 in fp32)."""

from __future__ import annotations

import csv
import json

import pytest
import torch

from rolora.kernels.addmm_lora import AddmmLoRALinear
from rolora.lab.bench.kernels import CPU_NOTE, main
from rolora.lab.bench.kernels_methods import saved_bytes
from rolora.lab.bench.kernels_report import Row, add_ratios, verdicts
from kernel_helpers import make_problem, rel_err, run_float64


def test_bench_main_tiny_config_writes_csv(tmp_path, capsys):
    out = tmp_path / "bench.csv"
    rc = main(["--shapes", "32x48", "--m", "16", "--r", "4", "--dtype", "fp32", "--repeats", "2",
               "--input-sets", "2", "--no-progress", "--no-profile", "--csv", str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    if not torch.cuda.is_available():
        assert CPU_NOTE in text
    rows = list(csv.DictReader(out.open()))
    assert [r["method"] for r in rows] == ["floor", "frozen", "peft", "peft-B", "addmm", "full", "B", "A"]
    saved = {r["method"]: float(r["saved_mib"]) for r in rows}
    # Measured by hooks: the floor and the frozen layer keep no activation; B-only keeps only S
    # (16×4 fp32), as PEFT with A frozen does at p = 0.
    assert saved["floor"] == 0.0 and saved["frozen"] == 0.0
    assert saved["B"] * 2**20 == 16 * 4 * 4 == saved["peft-B"] * 2**20
    assert saved["B"] < saved["A"] <= saved["full"]
    errors = {r["method"]: float(r["max_rel_err"]) for r in rows}
    assert all(errors[m] <= 1e-5 for m in ["peft", "peft-B", "addmm", "full", "B", "A"]), errors
    ratio = {r["method"]: float(r["x_floor"]) for r in rows}
    assert ratio["full"] > 0 and ratio["B"] > 0


def test_target_preset_tiny_writes_outputs_and_verdicts(tmp_path, capsys):
    rc = main(["--target", "--tiny", "--m", "16", "--methods", "floor,peft,peft-B,full,B,full@torch",
               "--repeats", "1", "--input-sets", "1", "--no-progress", "--out", str(tmp_path)])
    assert rc == 0
    text = capsys.readouterr().out
    assert {p.name for p in tmp_path.iterdir()} == {"bench.csv", "bench.json", "kernels.csv", "report.txt"}
    report = json.loads((tmp_path / "bench.json").read_text())
    assert len(report["verdicts"]) == 8 and all(v.split()[0] in ("PASS", "MISS", "N/A", "INFO")
                                                 for v in report["verdicts"])
    ps = {(r["method"], r["p"]) for r in report["rows"]}
    assert ("full", 0.1) in ps and ("peft-B", 0.1) in ps and ("floor", 0.1) not in ps
    assert "CHECK correctness" in text
    tol = 3e-2 if torch.cuda.is_available() else 1e-5  # the preset runs bf16 on a GPU, fp32 on CPU
    dropped = [r for r in report["rows"] if r["method"] == "full" and r["p"] == 0.1]
    assert dropped[0]["max_rel_err"] <= tol  # checked against the same mask


def test_ratios_and_verdicts_from_known_rows():
    rows = [Row("8x8", 4096, 16, "bf16", 0.0, m, 0.0, 0.0, t, t, 0.0, 0.0)
            for m, t in [("floor", 1.0), ("peft", 1.6), ("peft-B", 1.5), ("full", 1.08), ("B", 1.2)]]
    add_ratios(rows)
    by = {r.method: r for r in rows}
    assert by["full"].x_floor == pytest.approx(1.08)
    assert by["full"].ovh_vs_peft == pytest.approx(0.08 / 0.6)
    assert by["B"].ovh_vs_peft == pytest.approx(0.2 / 0.5)
    assert by["B"].b_vs_full == pytest.approx(1.2 / 1.08)
    lines = verdicts(rows)
    assert lines[0].startswith("MISS TARGET ≤1.10") and "1.200×" in lines[0]  # B at 1.2× misses
    assert lines[2].startswith("MISS TARGET LoRA overhead")  # B: 0.4 > 1/3
    assert lines[3].startswith("PASS TARGET never slower than PEFT")
    assert lines[4].startswith("MISS TARGET B-only faster than full")


def test_gemm_efficiency_from_profiles():
    from rolora.lab.bench.kernels import gemm_efficiency

    prof = [{"method": "floor", "shape": "8x8", "m": 4096, "p": 0.0, "kernel": "sm90_gemm", "us_per_step": 90.0},
            {"method": "full@triton", "shape": "8x8", "m": 4096, "p": 0.0, "kernel": "_fwd_gemm_kernel",
             "us_per_step": 50.0},
            {"method": "full@triton", "shape": "8x8", "m": 4096, "p": 0.0, "kernel": "_dx_gemm_kernel",
             "us_per_step": 50.0},
            {"method": "full@triton", "shape": "8x8", "m": 4096, "p": 0.0, "kernel": "_rowband_kernel",
             "us_per_step": 9.0}]
    assert gemm_efficiency(prof).endswith("8x8 M=4096: 0.900")


def test_bench_rejects_bad_options():
    with pytest.raises(SystemExit):
        main(["--dtype", "fp8"])
    with pytest.raises(SystemExit):
        main(["--no-such-option"])
    with pytest.raises(SystemExit, match="bad --gemm-config"):
        main(["--gemm-config", "huge_m=1x2x3:w4:s3"])


def test_addmm_baseline_matches_float64_and_saves_x():
    pb = make_problem((21,), 40, 56, 4, torch.float32, seed=3)
    layer = AddmmLoRALinear(pb.weight.clone(), pb.bias.clone(), pb.lora_A.clone(), pb.lora_B.clone(), pb.scale)
    x = pb.x.clone().requires_grad_()
    y = layer(x)
    y.backward(pb.grad_y)
    ref = run_float64(pb, "full")
    for name, g, r in zip(("y", "dx", "dA", "dB"), (y, x.grad, layer.lora_A.grad, layer.lora_B.grad), ref):
        assert rel_err(g, r) <= 1e-5, name
    assert saved_bytes(layer, x) == x.numel() * 4


def test_gpu_timer_passes_rep_ms_as_do_bench_time_budget(monkeypatch):
    # do_bench's `rep` is milliseconds, so the option feeding it must be milliseconds too.
    pytest.importorskip("triton")
    import triton.testing

    from rolora.lab.bench.kernels import _parser, _timer

    seen = {}

    def fake_do_bench(fn, **kwargs):
        seen.update(kwargs)
        return 1.5

    monkeypatch.setattr(triton.testing, "do_bench", fake_do_bench)
    args = _parser().parse_args(["--rep-ms", "37", "--repeats", "3"])
    assert _timer(True, args.repeats, args.rep_ms)(lambda: None) == 1.5
    assert seen["rep"] == 37.0
    calls = []
    _timer(False, args.repeats, args.rep_ms)(lambda: calls.append(1))
    assert len(calls) == 5 + 3  # 5 warm-up calls, then --repeats timed calls
    for bad in (["--repeats", "0"], ["--rep-ms", "0"]):
        with pytest.raises(SystemExit):
            main(bad + ["--no-progress"])
