"""Importing a subpackage under the wrong top-level name fails at first use, naming the right import.

The repository root is the ``rolora`` package, so ``import federated.api`` run from the root would
otherwise load a second copy whose classes differ from ``rolora.federated``'s. A bare probe such as
transformers' check for the PyPI package ``kernels`` (it imports a ``kernels`` it finds on sys.path
and reads ``__version__``) must not crash: see ``rolora._misnamed``.
"""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SUBPACKAGES = ["theory", "kernels", "federated", "toy", "llm", "flower", "optim", "reports"]
USES = {
    "theory": "from theory import cli",
    "kernels": "from kernels import lora_linear",
    "federated": "import federated.api",
    "toy": "import toy; toy.train",
    "llm": "import llm.config",
    "flower": "import flower.codec",
    "optim": "from optim import GaLoreAdamW",
    "reports": "import reports.cli",
}


def _python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("name", SUBPACKAGES)
def test_wrong_top_level_name_raises_import_error_naming_rolora(name):
    proc = _python(USES[name])
    assert proc.returncode != 0
    assert "ImportError" in proc.stderr
    assert f"import rolora.{name} instead" in proc.stderr


@pytest.mark.parametrize("name", SUBPACKAGES)
def test_a_probe_of_the_bare_name_sees_no_package_version(name):
    proc = _python(f"import {name}; assert getattr({name}, '__version__', 'N/A') == 'N/A'; "
                   f"import importlib.util; importlib.util.find_spec({name!r})")
    assert proc.returncode == 0, proc.stderr


def test_right_name_and_transformers_import_from_the_repository_root():
    proc = _python("import rolora.federated.api, rolora.theory, rolora.llm, rolora.kernels; import transformers.activations")
    assert proc.returncode == 0, proc.stderr
