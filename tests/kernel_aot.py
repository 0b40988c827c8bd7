"""Ahead-of-time compile of the Triton kernels for real GPUs (sm_90, sm_80), on a machine without one.

Why: the interpreter runs the kernel bodies as Python, so it accepts code that Triton's compiler
rejects (a name first bound inside a ``for`` body and used after it) and never sees shared memory.
This builds what the launch wrappers would launch on a GPU, with Triton's real compiler and the
``ptxas`` shipped in the wheel:

- the wrappers (``triton_lora_forward`` / ``triton_lora_backward`` / ``triton_keep_mask``) run on
  ``meta`` tensors, so every argument, stride, specialisation and launch config is the real one;
- each ``kernel[grid](...)`` launch is replaced by ``kernel.warmup(...)`` under a stand-in driver
  whose current target is ``GPUTarget("cuda", arch, 32)``: Triton specialises, compiles and stops
  before loading anything on a device;
- a launch fails when it does not compile or needs more shared memory than the target has.

It must run in a process where ``TRITON_INTERPRET`` is 0 when the kernels are imported (under it,
``@triton.jit`` builds interpreter objects that cannot be compiled), so the test runs it as a script:

    python tests/kernel_aot.py --arch 90 --arch 80 [--all] [--jobs 2] [--json report.json]

Without ``--all`` it compiles a covering subset (every launch config of the table, every activation
dtype, every padded rank, dropout and bias on and off, the worst shared-memory case of each config);
``--all`` compiles the full product. Exit status 1 when any launch fails.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time
from dataclasses import asdict, dataclass

os.environ["TRITON_INTERPRET"] = "0"  # before triton is imported anywhere in this process
os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")  # silence triton 3.9's notice; 1 is the default

# Shared memory per block (opt-in maximum), bytes: H100/H200 227 KiB, A100 163 KiB.
SHARED_LIMIT = {90: 227 * 1024, 80: 163 * 1024}
ACT_DTYPES = ["bf16", "fp16", "fp32"]
# Ranks the layer can produce, chosen to give every padded rank (16, 32, 64, 128) and r = 1 (Triton
# specialises integer arguments equal to 1).
RANKS = [1, 16, 24, 64, 100, 128]
# One M per launch-config class; K, N from Llama-7B and a pair
# that is not a multiple of 16 (another divisibility specialisation).
MS = [64, 1000, 8192]
# Compiles are slow (1–3 s each on 2 cores); Triton's own cache makes a re-run of unchanged kernels quick.
DEFAULT_CACHE = os.path.join(os.path.expanduser("~"), ".cache", "rolora", "triton-aot")
SHAPES = [(4096, 11008), (1000, 808)]


@dataclass(frozen=True)
class Case:
    """One launch set: forward and full-phase backward of the wrappers, on meta tensors."""

    m: int
    k: int
    n: int
    r: int
    act: str
    adapter: str  # "same" or "fp32"
    dropout: bool
    bias: bool
    tf32: bool = False  # fp32 activations with torch's TF32 switch on

    def label(self) -> str:
        return (f"M{self.m} K{self.k} N{self.n} r{self.r} {self.act}/{self.adapter} "
                f"drop={int(self.dropout)} bias={int(self.bias)}{' tf32' if self.tf32 else ''}")


def all_cases(archs: tuple[int, ...] = (90, 80)) -> list[tuple[int, Case]]:
    """(arch, case) pairs: the full product (``--all``)."""
    out = []
    for m, (k, n), r, act, adapter, drop, bias in itertools.product(
            MS, SHAPES, RANKS, ACT_DTYPES, ["same", "fp32"], [False, True], [False, True]):
        if act == "fp32" and adapter == "fp32":
            continue
        out.append(Case(m, k, n, r, act, adapter, drop, bias))
    out += [Case(m, 4096, 11008, 16, "fp32", "same", True, True, tf32=True) for m in MS]
    return [(arch, c) for arch in archs for c in out]


def covering_cases(archs: tuple[int, ...] = (90, 80)) -> list[tuple[int, Case]]:
    """(arch, case) pairs that still cover every config, dtype and padded rank of the main target.

    sm_90, each (M class, activation dtype): padded ranks rotate over 128, 64, 32, 16 (r = 1: Triton
    specialises integer arguments equal to 1), and dropout, bias, adapter dtype and the odd shape
    alternate, so every constexpr branch is taken; fp32 with TF32 dots once. sm_80 (same kernels,
    less shared memory): the worst case (r = 128, fp32 adapters, dropout and bias on) of each
    distinct launch config and dtype.
    """
    out: list[tuple[int, Case]] = []
    ranks = [128, 64, 24, 1]
    if 90 in archs:
        for i, (m, act) in enumerate(itertools.product(MS, ACT_DTYPES)):
            k, n = SHAPES[(i // 2) % len(SHAPES)]
            out.append((90, Case(m, k, n, ranks[i % 4], act, "fp32" if i % 2 == 0 else "same",
                                 i % 2 == 0, i % 3 != 1)))
        out.append((90, Case(8192, 4096, 11008, 16, "fp32", "same", True, True, tf32=True)))
        # The largest LoRA tiles on the largest GEMM tile (r_pad 128 changes the stage count).
        out.append((90, Case(8192, 4096, 11008, 128, "bf16", "fp32", True, True)))
        out.append((90, Case(1000, 4096, 11008, 128, "bf16", "fp32", True, True)))  # the same tile at M ≤ 2048
    if 80 in archs:
        import rolora.kernels.launch_configs as lc

        for act in ACT_DTYPES:
            seen = set()
            for m in MS:  # one M per distinct config (Ampere's half tables share some)
                cfg = lc.launch_config(m, _dtype(act), (8, 0))
                if cfg not in seen:
                    seen.add(cfg)
                    out.append((80, Case(m, 4096, 11008, 128, act, "fp32", True, True)))
    return out


# ----------------------------------------------------------------------------------------------------
# Worker: compile the launches of some cases for one target
# ----------------------------------------------------------------------------------------------------


class _TargetDriver:
    """The part of Triton's driver interface that ``JITFunction.run(warmup=True)`` uses.

    The device id is the arch number, so Triton's per-device caches (which hold the target) keep the
    two targets apart within one process.
    """

    def __init__(self, arch: int) -> None:
        from triton.backends.compiler import GPUTarget

        self.arch = arch
        self.target = GPUTarget("cuda", arch, 32)

    def get_current_device(self) -> int:
        return self.arch

    def get_current_stream(self, device: int | None = None) -> int:
        return 0

    def get_current_target(self):
        return self.target

    def is_active(self) -> bool:
        return True


class _CompileInstead:
    """Stands in for a kernel in the module: ``kernel[grid](*args)`` compiles and records."""

    def __init__(self, fn, log: list[dict], context: dict) -> None:
        self.fn, self.log, self.context = fn, log, context

    def __getitem__(self, grid):
        def launch(*args, **kwargs):
            entry = {"kernel": self.fn.__name__, **self.context,
                     "constexprs": {k: v for k, v in kwargs.items() if k.isupper()},
                     "num_warps": kwargs.get("num_warps"), "num_stages": kwargs.get("num_stages")}
            t0 = time.perf_counter()
            try:
                compiled = self.fn.warmup(*args, grid=grid, **kwargs)
                entry["shared"] = int(compiled.metadata.shared)
            except Exception as exc:  # noqa: BLE001 - every compiler error is a finding
                entry["error"] = f"{type(exc).__name__}: {exc}"[-2000:]
            entry["seconds"] = round(time.perf_counter() - t0, 3)
            self.log.append(entry)
        return launch


def _dtype(name: str):
    import torch

    return {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[name]


def compile_cases(arch: int, cases: list[Case]) -> list[dict]:
    """Compile every launch of ``cases`` for sm_<arch>; one log entry per launch (duplicates too)."""
    import torch
    from triton.runtime import driver
    from triton.runtime.jit import JITFunction

    import rolora.kernels.triton_kernels as tk

    driver.set_active(_TargetDriver(arch))
    tk.device_capability = lambda device: (arch // 10, arch % 10)
    log: list[dict] = []
    context: dict = {}
    for name, fn in list(vars(tk).items()):
        fn = fn.fn if isinstance(fn, _CompileInstead) else fn  # a second call in the same worker
        if isinstance(fn, JITFunction) and name.endswith("_kernel"):
            setattr(tk, name, _CompileInstead(fn, log, context))
    meta = {"device": "meta"}
    for case in cases:
        context.clear()
        context.update(arch=arch, case=case.label())
        act = _dtype(case.act)
        adt = act if case.adapter == "same" else _dtype(case.adapter)
        x = torch.empty(case.m, case.k, dtype=act, **meta)
        w = torch.empty(case.n, case.k, dtype=act, **meta)
        a = torch.empty(case.r, case.k, dtype=adt, **meta)
        b = torch.empty(case.n, case.r, dtype=adt, **meta)
        bias = torch.empty(case.n, dtype=act, **meta) if case.bias else None
        p = 0.1 if case.dropout else 0.0
        torch.backends.cuda.matmul.allow_tf32 = case.tf32
        try:
            y, s = tk.triton_lora_forward(x, w, bias, a, b, 2.0, p, 12345)
            tk.triton_lora_backward(torch.empty_like(y), x, w, a, b, s, 2.0, p, 12345, True, True, True)
        except Exception as exc:  # noqa: BLE001 - a wrapper that cannot even launch is a finding
            log.append({"kernel": "(wrapper)", **context, "error": f"{type(exc).__name__}: {exc}"})
        finally:
            torch.backends.cuda.matmul.allow_tf32 = False
    context.clear()
    context.update(arch=arch, case="keep mask")
    tk.triton_keep_mask(7, 100, 200, 0.1, torch.device("meta"))
    return log


def _worker(job: list[tuple[int, dict]]) -> list[dict]:
    log = _self_check()
    for arch in sorted({a for a, _ in job}):
        log += compile_cases(arch, [Case(**c) for a, c in job if a == arch])
    return log


def _self_check() -> list[dict]:
    """Compile a kernel with the bug class the interpreter hides: it must fail, or this check is blind."""
    import triton
    import triton.language as tl
    from triton.runtime import driver

    @triton.jit
    def name_from_loop_body(out_ptr, n):
        for i in range(0, n, 16):
            v = tl.load(out_ptr + i + tl.arange(0, 16))
        tl.store(out_ptr + tl.arange(0, 16), v)

    driver.set_active(_TargetDriver(90))
    try:
        name_from_loop_body.warmup(_meta_tensor("fp32"), 64, grid=(1,))
    except Exception:  # noqa: BLE001 - the expected outcome
        return []
    return [{"kernel": "(self-check)", "arch": 90, "case": "name bound in a loop body",
             "error": "the compiler accepted a kernel it must reject: this check cannot see that bug"}]


def _meta_tensor(name: str):
    import torch

    return torch.empty(1, dtype=_dtype(name), device="meta")


def launch_configs_uncovered(pairs: list[tuple[int, Case]]) -> dict[str, dict[str, list]]:
    """Per arch and activation dtype: launch configs of the table that no case selects."""
    import rolora.kernels.launch_configs as lc

    out: dict[str, dict[str, list]] = {}
    for arch in sorted({a for a, _ in pairs}):
        cap = (arch // 10, arch % 10)
        for act in ACT_DTYPES:
            used = {lc.launch_config(c.m, _dtype(act), cap) for a, c in pairs if a == arch and c.act == act}
            missing = set(lc.launch_table(_dtype(act), cap)) - used
            if missing:
                out.setdefault(str(arch), {})[act] = [asdict(c) for c in sorted(missing, key=str)]
    return out


def run(pairs: list[tuple[int, Case]], jobs: int) -> dict:
    """Compile the (arch, case) pairs in ``jobs`` processes; returns the report (see ``main``)."""
    import multiprocessing

    work = [[(a, asdict(c)) for a, c in pairs[i::jobs]] for i in range(jobs)]
    t0 = time.perf_counter()
    if jobs == 1:
        logs = [_worker(w) for w in work]
    else:
        with multiprocessing.get_context("spawn").Pool(jobs) as pool:
            logs = pool.map(_worker, work)
    launches = [e for log in logs for e in log]
    for e in launches:
        if "shared" in e and e["shared"] > SHARED_LIMIT[e["arch"]]:
            e["error"] = (f"needs {e['shared']} B of shared memory, sm_{e['arch']} has "
                          f"{SHARED_LIMIT[e['arch']]} B")
    import triton

    archs = sorted({a for a, _ in pairs})
    return {
        "triton": triton.__version__,
        "archs": archs,
        "cases": len(pairs),
        "launches": len(launches),
        "seconds": round(time.perf_counter() - t0, 1),
        "max_shared": {str(a): max((e.get("shared", 0) for e in launches if e["arch"] == a), default=0)
                       for a in archs},
        "kernels": sorted({e["kernel"] for e in launches if "shared" in e}),
        "uncovered_configs": launch_configs_uncovered(pairs),
        "failures": [e for e in launches if "error" in e],
        "launch_log": launches,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--arch", type=int, action="append", choices=sorted(SHARED_LIMIT),
                    help="target compute capability ×10 (repeat; default 90 and 80)")
    ap.add_argument("--all", action="store_true", help="the full product of cases, not the covering subset")
    ap.add_argument("--jobs", type=int, default=min(8, os.cpu_count() or 1), help="worker processes")
    ap.add_argument("--json", help="write the report here")
    ap.add_argument("--cache", default=os.environ.get("ROLORA_AOT_CACHE", DEFAULT_CACHE),
                    help="Triton's compile cache for these builds (keyed by source, options and "
                         "triton version, so a hit is never stale); '' for a fresh one")
    args = ap.parse_args(argv)
    if args.cache:
        os.environ["TRITON_CACHE_DIR"] = args.cache
    else:
        import tempfile

        os.environ["TRITON_CACHE_DIR"] = tempfile.mkdtemp(prefix="rolora-aot-")
    archs = tuple(args.arch or [90, 80])
    report = run(all_cases(archs) if args.all else covering_cases(archs), max(1, args.jobs))
    for f in report["failures"][:20]:
        print(f"FAIL sm_{f['arch']} {f['kernel']} [{f['case']}]: {f['error'][-600:]}")
    if report["uncovered_configs"]:
        print(f"UNCOVERED launch configs: {report['uncovered_configs']}")
    print(f"triton {report['triton']}: {report['launches']} launches of {len(report['kernels'])} kernels "
          f"({report['cases']} cases, targets {report['archs']}) in {report['seconds']} s; "
          f"{len(report['failures'])} failed; max shared memory {report['max_shared']} B")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(report, fh, indent=1)
    return 1 if report["failures"] or report["uncovered_configs"] else 0


if __name__ == "__main__":
    sys.exit(main())
