"""Importing a subpackage under the wrong top-level name fails at once, naming the right import.

The repository root is the ``rolora`` package, so ``import federated.api`` run from the root would
otherwise load a second copy whose classes differ from ``rolora.federated``'s.
"""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SUBPACKAGES = ["theory", "kernels", "federated", "toy", "llm"]


@pytest.mark.parametrize("name", SUBPACKAGES)
def test_wrong_top_level_name_raises_import_error_naming_rolora(name):
    module = f"{name}.api" if name == "federated" else name
    proc = subprocess.run(
        [sys.executable, "-c", f"import {module}"], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode != 0
    assert "ImportError" in proc.stderr
    assert f"import rolora.{name} instead" in proc.stderr


def test_right_name_still_imports_from_the_repository_root():
    proc = subprocess.run(
        [sys.executable, "-c", "import rolora.federated.api, rolora.theory, rolora.llm"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
