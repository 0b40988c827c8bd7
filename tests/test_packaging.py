"""The folders install as subpackages of one `rolora` package, never as top-level `kernels`/`llm`."""

import importlib
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
AREAS = ["theory", "kernels", "federated", "toy", "llm", "flower", "optim", "reports"]


@pytest.mark.parametrize("area", AREAS)
def test_each_area_imports_as_a_rolora_subpackage(area):
    module = importlib.import_module(f"rolora.{area}")
    assert Path(module.__file__).parent == ROOT / area


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
    for shipped in ("llm/configs/quickstart.toml", "llm/experiments/clients.toml", "llm/experiments/base/minilm-cpu.toml"):
        assert f"rolora/{shipped}" in names, f"rolora/{shipped} (found by name) must ship"
    assert not any(n.startswith("rolora/tests/") for n in names), "tests must not ship"
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "rolora = rolora.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()
