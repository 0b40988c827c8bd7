"""``model.dtype = "auto"``: the frozen base in bf16 where the device computes bf16 natively, else fp32.

bf16 halves the base's memory and, on hardware with bf16 matrix units, about halves a round's time;
on a CPU without them PyTorch emulates bf16 matmuls (~7× slower than fp32 on an AVX2 EPYC), so there
fp32 is the fast choice. Native bf16: CUDA; a CPU whose flags (``/proc/cpuinfo``) include AVX-512
BF16 (``avx512_bf16``) or AMX (``amx_bf16``). ``ROLORA_NATIVE_BF16=0`` / ``=1`` overrides the CPU
detection (the test suite pins 0, so its numbers do not depend on the machine). What was chosen, and
why, goes into the run folder (``run.log`` and ``versions.json``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
BF16_FLAGS = ("avx512_bf16", "amx_bf16")
"""CPU flags of native bf16 matrix arithmetic (either suffices)."""
REPORTED_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16")
"""The flags ``rolora bench llm`` prints in its header."""
OVERRIDE_ENV = "ROLORA_NATIVE_BF16"


@dataclass(frozen=True)
class CpuInfo:
    """The CPU's model name and the flags among :data:`REPORTED_FLAGS` it has."""

    model: str
    flags: frozenset[str]

    def line(self, threads: int) -> str:
        have = [f for f in REPORTED_FLAGS if f in self.flags]
        missing = [f for f in REPORTED_FLAGS if f not in self.flags]
        return (f"CPU: {self.model}; flags: {' '.join(have) or '-'} (not: {' '.join(missing) or '-'}); "
                f"{threads} torch thread(s), {os.cpu_count()} logical CPU(s)")


def parse_cpuinfo(text: str) -> CpuInfo:
    """The first processor's model name and reported flags from ``/proc/cpuinfo`` text."""
    model, flags = "unknown", frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and model == "unknown":
            model = value.strip()
        elif key == "flags" and not flags:
            flags = frozenset(value.split())
    return CpuInfo(model, flags)


def cpu_info(path: str | Path = "/proc/cpuinfo") -> CpuInfo:
    """This machine's :class:`CpuInfo` (model "unknown", no flags where the file is unreadable)."""
    try:
        return parse_cpuinfo(Path(path).read_text())
    except OSError:
        return CpuInfo("unknown", frozenset())


@dataclass(frozen=True)
class DtypeChoice:
    """The base's dtype and why it was chosen (written to the run folder)."""

    name: str
    reason: str

    @property
    def dtype(self) -> torch.dtype:
        return DTYPES[self.name]


def native_bf16(device: torch.device, info: CpuInfo | None = None, environ=os.environ) -> tuple[bool, str]:
    """(whether ``device`` computes bf16 matmuls natively, the reason)."""
    if device.type == "cuda":
        return True, "CUDA device"
    if device.type != "cpu":
        return False, f"{device.type} device: no native bf16 assumed"
    override = environ.get(OVERRIDE_ENV, "").strip()
    if override in ("0", "1"):
        return override == "1", f"{OVERRIDE_ENV}={override}"
    info = info or cpu_info()
    found = [f for f in BF16_FLAGS if f in info.flags]
    if found:
        return True, f"CPU {info.model!r} has {'/'.join(found)}"
    return False, f"CPU {info.model!r} has none of {'/'.join(BF16_FLAGS)} (bf16 matmuls would be emulated)"


def choose_dtype(name: str, device: torch.device, info: CpuInfo | None = None, environ=os.environ) -> DtypeChoice:
    """``model.dtype`` resolved: an explicit dtype as is; "auto" by :func:`native_bf16`."""
    if name != "auto":
        return DtypeChoice(name, "model.dtype set explicitly")
    native, why = native_bf16(device, info, environ)
    return DtypeChoice("bfloat16" if native else "float32", f"auto: {why}")
