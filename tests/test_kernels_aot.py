"""Every Triton kernel launch compiles for sm_90 and sm_80 with Triton's real compiler, on this CPU.

The interpreter tests cannot see compile errors (a name bound inside a loop body and used after it
passed them while every CUDA launch failed) or shared-memory overflows. ``tests/kernel_aot.py`` runs
the launch wrappers on meta tensors with each launch replaced by an ahead-of-time build for a target
GPU (see its docstring); it runs in a subprocess because ``TRITON_INTERPRET`` must be 0 when the
kernels are imported. Compiles are cached by Triton (keyed by source, options and version), so only
changed kernels are rebuilt: a cold run takes minutes on 2 cores, a warm one seconds.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("triton")

AOT = Path(__file__).with_name("kernel_aot.py")


def _run_aot(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess, dict]:
    out = tmp_path / "aot.json"
    env = {k: v for k, v in os.environ.items() if k != "TRITON_CACHE_DIR"}  # the script picks its cache
    proc = subprocess.run([sys.executable, str(AOT), "--json", str(out), *args], capture_output=True,
                          text=True, env=env, timeout=1800)
    assert out.exists(), f"no report; exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc, json.loads(out.read_text())


def test_every_kernel_compiles_for_sm90_and_sm80_within_shared_memory(tmp_path):
    proc, report = _run_aot(tmp_path)
    failures = [f"sm_{f['arch']} {f['kernel']} [{f['case']}]: {f['error'][-400:]}" for f in report["failures"]]
    assert not failures, "\n".join(failures[:10])
    assert not report["uncovered_configs"], report["uncovered_configs"]
    import rolora.kernels.triton_kernels as tk

    launched = {name for name in vars(tk) if name.endswith("_kernel")}
    assert set(report["kernels"]) == launched, "every kernel must be built at least once"
    assert report["archs"] == [80, 90] and report["max_shared"]["90"] > 0
    assert proc.returncode == 0, proc.stdout[-2000:]
