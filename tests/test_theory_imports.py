"""rolora.theory is NumPy-only: importing every module must not import torch."""

import pkgutil
import subprocess
import sys

import rolora.theory


def test_importing_every_theory_module_does_not_import_torch():
    modules = sorted(f"rolora.theory.{m.name}" for m in pkgutil.iter_modules(rolora.theory.__path__))
    assert {"rolora.theory.cli", "rolora.theory.algorithms", "rolora.theory.data"} <= set(modules)
    code = (
        "import importlib, sys\n"
        f"for name in {modules!r}: importlib.import_module(name)\n"
        "bad = sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.')"
        " or (m.startswith('rolora.') and not m.startswith('rolora.theory')))\n"
        "print(','.join(bad))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "", f"rolora.theory imported: {proc.stdout.strip()}"
