"""The package lives in rolora/ and installs as one `rolora` package; nothing at the root shadows a module."""

import importlib
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
AREAS = ["theory", "kernels", "federated", "toy", "llm", "flower", "optim", "lab"]


@pytest.mark.parametrize("area", AREAS)
def test_each_area_imports_as_a_rolora_subpackage(area):
    module = importlib.import_module(f"rolora.{area}")
    assert Path(module.__file__).parent == ROOT / "rolora" / area


def test_wheel_holds_only_the_rolora_package(tmp_path):
    # Build from a clean copy: setuptools reuses an in-tree build/ folder, whose stale files would
    # leak into the wheel (and the build would litter the checkout).
    src = tmp_path / "src"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(
        ".git", ".venv", "build", "dist", "out", "runs", "*.egg-info", ".hypothesis", "__pycache__", ".pytest_cache"))
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(tmp_path), str(src)],
        check=True, capture_output=True, text=True,
    )
    (wheel,) = tmp_path.glob("rolora-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top_level = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert top_level == {"rolora"}, f"unexpected top-level entries in the wheel: {top_level}"
    for area in AREAS:
        assert f"rolora/{area}/__init__.py" in names, f"rolora/{area} missing from the wheel"
    assert "rolora/cli.py" in names
    assert "rolora/flower/app/pyproject.toml" in names, "the Flower app folder (flwr run) must ship"
    for shipped in ("llm/configs/quickstart.toml", "lab/specs/clients.toml", "lab/specs/base/minilm-cpu.toml", "lab/gpu/sweep.sh"):
        assert f"rolora/{shipped}" in names, f"rolora/{shipped} (found by name) must ship"
    assert not any(n.startswith("rolora/tests/") for n in names), "tests must not ship"
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "rolora = rolora.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()


def test_nothing_at_the_repository_root_is_a_python_package_or_module():
    """A Python started in the root puts the root first on sys.path: any package or module there would
    shadow a third-party one (transformers imports the Hub's ``kernels``)."""
    found = sorted(p.name for p in ROOT.iterdir()
                   if (p.suffix == ".py") or (p.is_dir() and (p / "__init__.py").exists() and p.name != "rolora"))
    assert found == [], f"the repository root holds Python code that would shadow other modules: {found}"


def _python_in_root(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_python_started_in_the_root_never_finds_our_kernels_as_kernels():
    proc = _python_in_root("import importlib.util; spec = importlib.util.find_spec('kernels'); "
                           "print(spec.origin if spec else 'none')")
    assert proc.returncode == 0, proc.stderr
    assert "rolora" not in proc.stdout, f"`kernels` resolves to our folder: {proc.stdout}"


def test_transformers_and_rolora_import_from_the_root():
    proc = _python_in_root("from transformers import LlamaConfig, BertConfig; import transformers.activations; "
                           "import rolora.llm, rolora.kernels, rolora.federated; from rolora.llm import load_config")
    assert proc.returncode == 0, proc.stderr
