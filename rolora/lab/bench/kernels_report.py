"""The report of ``rolora bench kernels``: rows, ratio columns, one PASS/MISS line per target, header.

Ratios: ×floor = total ÷ the raw floor's total; ovh/PEFT = (total − floor) ÷ (PEFT's total − floor),
PEFT in the same phase and dropout (B-only against PEFT with lora_A frozen); B/full = our B-only total
÷ our full total. The targets are judged on our "auto" rows (what a user gets).
"""

from __future__ import annotations

import datetime
import math
import subprocess
from collections.abc import Callable
from dataclasses import dataclass

import torch

from rolora.lab.bench.kernels_methods import is_ours, phase_of_method
from rolora.kernels.phase import LoRAPhase

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
TOL = {torch.bfloat16: 3e-2, torch.float16: 1e-2, torch.float32: 1e-4}
FLOOR_TARGET, FLOOR_MOONSHOT, OVERHEAD_TARGET = 1.10, 1.05, 1 / 3


@dataclass
class Row:
    """One measured (configuration, method)."""

    shape: str
    m: int
    r: int
    dtype: str
    p: float
    method: str
    fwd_ms: float
    bwd_ms: float
    total_ms: float
    steady_ms: float
    saved_mib: float
    max_rel_err: float = float("nan")
    x_floor: float = float("nan")
    ovh_vs_peft: float = float("nan")
    b_vs_full: float = float("nan")


def add_ratios(rows: list[Row]) -> None:
    """Fill ×floor, overhead ÷ PEFT's overhead and B/full in place."""
    by = {(w.shape, w.m, w.r, w.dtype, w.p, w.method): w for w in rows}
    for w in rows:
        base = (w.shape, w.m, w.r, w.dtype)
        floor = by.get((*base, 0.0, "floor"))
        if floor is None or w.method == "floor":
            continue
        w.x_floor = w.total_ms / floor.total_ms
        if is_ours(w.method):
            peft = by.get((*base, w.p, "peft-B" if phase_of_method(w.method) == LoRAPhase.B_ONLY else "peft"))
            if peft is not None and peft.total_ms > floor.total_ms:
                w.ovh_vs_peft = (w.total_ms - floor.total_ms) / (peft.total_ms - floor.total_ms)
            full = by.get((*base, w.p, w.method.replace("B", "full", 1)))
            if w.method.startswith("B") and full is not None:
                w.b_vs_full = w.total_ms / full.total_ms


def verdicts(rows: list[Row]) -> list[str]:
    """One PASS/MISS line per target (over our "auto" rows: what a user gets)."""
    ours = [w for w in rows if w.method in ("full", "B")]
    lines = []

    def line(name: str, bad: list[Row], worst: Row | None, what: str) -> None:
        status = "PASS" if not bad and worst is not None else ("MISS" if worst is not None else "N/A ")
        where = f" (worst {what} at {worst.shape} M={worst.m} {worst.method} p={worst.p})" if worst else ""
        lines.append(f"{status} {name}: {len(bad)} of the rows miss{where}")

    def worst_by(cands: list[Row], key: Callable[[Row], float]) -> Row | None:
        cands = [w for w in cands if not math.isnan(key(w))]
        return max(cands, key=key) if cands else None

    big = [w for w in ours if w.m >= 2048 and w.p == 0.0]
    for limit, name in ((FLOOR_TARGET, "TARGET"), (FLOOR_MOONSHOT, "MOONSHOT")):
        w = worst_by(big, lambda r: r.x_floor)
        line(f"{name} ≤{limit:.2f}× floor at M ≥ 2048 (p = 0, full and B-only)",
             [r for r in big if not r.x_floor <= limit], w, f"{w.x_floor:.3f}×" if w else "")
    w = worst_by(ours, lambda r: r.ovh_vs_peft)
    line("TARGET LoRA overhead ≤ 1/3 of PEFT's (all M, p 0 and 0.1)",
         [r for r in ours if not r.ovh_vs_peft <= OVERHEAD_TARGET], w, f"{w.ovh_vs_peft:.2f}" if w else "")
    by = {(w.shape, w.m, w.r, w.dtype, w.p, w.method): w for w in rows}

    def vs_peft(r: Row) -> float:
        peft = by.get((r.shape, r.m, r.r, r.dtype, r.p, "peft-B" if r.method == "B" else "peft"))
        return r.total_ms / peft.total_ms if peft else float("nan")
    w = worst_by(ours, vs_peft)
    line("TARGET never slower than PEFT (all M incl. 512, p 0 and 0.1; B-only vs PEFT with A frozen)",
         [r for r in ours if not vs_peft(r) <= 1.0], w, f"{vs_peft(w):.3f}× PEFT" if w else "")
    bs = [r for r in ours if r.method == "B"]
    w = worst_by(bs, lambda r: r.b_vs_full)
    line("TARGET B-only faster than full (all rows)", [r for r in bs if not r.b_vs_full < 1.0], w,
         f"{w.b_vs_full:.3f}× full" if w else "")
    checked = [r for r in rows if not math.isnan(r.max_rel_err)]
    w = worst_by(checked, lambda r: r.max_rel_err)
    tol = max(TOL[DTYPES[r.dtype]] for r in rows) if rows else 0.0
    line(f"CHECK correctness against fp32 (rel err ≤ {tol:.0e})",
         [r for r in checked if not r.max_rel_err <= TOL[DTYPES[r.dtype]]], w,
         f"{w.max_rel_err:.1e}" if w else "")
    lines.append(small_m_rule(rows))
    return lines


def small_m_rule(rows: list[Row]) -> str:
    """Where the fused kernels beat the cuBLAS path, per phase and p (data for CUBLAS_MAX_M)."""
    from rolora.kernels.op import CUBLAS_MAX_M

    by = {(w.shape, w.m, w.p, w.method): w for w in rows}
    wins = []
    for (shape, m, p, method), w in sorted(by.items()):
        if method.endswith("@triton"):
            other = by.get((shape, m, p, method.replace("@triton", "@torch")))
            if other is not None:
                wins.append(f"{shape} M={m} {method.partition('@')[0]} p={p}: "
                            f"{'triton' if w.total_ms < other.total_ms else 'cuBLAS'} "
                            f"({w.total_ms:.3f} vs {other.total_ms:.3f} ms)")
    if not wins:
        return f"INFO small-M rule: CUBLAS_MAX_M = {CUBLAS_MAX_M} (no @triton/@torch pairs measured)"
    return f"INFO small-M rule (CUBLAS_MAX_M = {CUBLAS_MAX_M}); faster path per row: " + "; ".join(wins)


def format_table(rows: list[Row]) -> str:
    """The rows as an aligned text table."""
    head = (f"{'K×N':>11} {'M':>6} {'r':>3} {'dtype':>5} {'p':>4} {'method':>11} {'fwd ms':>8} "
            f"{'bwd ms':>8} {'total ms':>9} {'steady':>8} {'×floor':>7} {'ovh/PEFT':>8} {'B/full':>6} "
            f"{'saved MiB':>9} {'rel err':>8}")
    lines = [head, "-" * len(head)]

    def f(v: float, spec: str) -> str:
        return format(v, spec) if not math.isnan(v) else "-"

    for w in rows:
        lines.append(f"{w.shape:>11} {w.m:>6} {w.r:>3} {w.dtype:>5} {w.p:>4} {w.method:>11} {w.fwd_ms:>8.3f} "
                     f"{w.bwd_ms:>8.3f} {w.total_ms:>9.3f} {w.steady_ms:>8.3f} {f(w.x_floor, '.3f'):>7} "
                     f"{f(w.ovh_vs_peft, '.2f'):>8} {f(w.b_vs_full, '.3f'):>6} {w.saved_mib:>9.2f} "
                     f"{f(w.max_rel_err, '.1e'):>8}")
    return "\n".join(lines)


def header(cuda: bool) -> dict[str, str]:
    """Device, driver, clocks, library versions and date."""
    info = {"date": datetime.datetime.now().isoformat(timespec="seconds"), "torch": torch.__version__}
    for mod in ("triton", "peft"):
        try:
            info[mod] = __import__(mod).__version__
        except Exception:  # noqa: BLE001 - absent is reported, not fatal
            info[mod] = "not installed"
    if not cuda:
        info["device"] = "CPU"
        return info
    props = torch.cuda.get_device_properties(torch.cuda.current_device())
    info.update(device=props.name, capability=f"sm_{props.major}{props.minor}",
                sms=str(props.multi_processor_count), cuda=str(torch.version.cuda))
    query = "driver_version,clocks.sm,clocks.max.sm,clocks.mem,clocks.max.mem,power.limit,temperature.gpu"
    try:
        smi = subprocess.run(["nvidia-smi", f"--query-gpu={query}", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20).stdout.strip().splitlines()
        info["nvidia-smi " + query] = smi[0] if smi else "(no output)"
    except Exception as exc:  # noqa: BLE001
        info["nvidia-smi"] = f"unavailable ({type(exc).__name__})"
    return info
