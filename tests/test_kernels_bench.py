"""The kernel benchmark runs end to end on a tiny CPU config (no timing assertions), and its
addmm baseline is a correct LoRA linear (float64 reference, rtol 1e-5 in fp32)."""

from __future__ import annotations

import csv

import pytest
import torch

from rolora.kernels.addmm_lora import AddmmLoRALinear
from rolora.kernels.bench import CPU_NOTE, main, saved_bytes
from rolora.kernels.testing import make_problem, rel_err, run_float64


def test_bench_main_tiny_config_writes_csv(tmp_path, capsys):
    out = tmp_path / "bench.csv"
    rc = main(["--shapes", "32x48", "--m", "16", "--r", "4", "--dtype", "fp32", "--repeats", "2",
               "--input-sets", "2", "--no-progress", "--csv", str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    if not torch.cuda.is_available():
        assert CPU_NOTE in text
    rows = list(csv.DictReader(out.open()))
    assert [r["method"] for r in rows] == ["frozen", "peft", "addmm", "full", "B-only", "A-only"]
    saved = {r["method"]: float(r["saved_mib"]) for r in rows}
    # Measured by hooks: the frozen layer keeps no activation; B-only keeps only S (16×4 fp32) and
    # the 0-d int64 dropout seed (8 bytes).
    assert saved["frozen"] == 0.0
    assert saved["B-only"] * 2**20 == 16 * 4 * 4 + 8
    assert saved["B-only"] < saved["A-only"] <= saved["full"]


def test_bench_rejects_bad_options():
    with pytest.raises(SystemExit):
        main(["--dtype", "fp8"])
    with pytest.raises(SystemExit):
        main(["--no-such-option"])


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

    from rolora.kernels.bench import _parser, _timer

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
