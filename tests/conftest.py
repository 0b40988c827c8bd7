"""Test-wide environment: offline hubs, tool caches in a temporary folder, Triton's interpreter on CPU.

This runs before any test module imports rolora, which matters for ``TRITON_INTERPRET``: Triton reads
it when the module defining the ``@triton.jit`` kernels is imported.
"""

import os
import tempfile

_tmp = tempfile.mkdtemp(prefix="rolora-tests-")
for var, sub in [
    ("HF_HOME", "hf"),
    ("MPLCONFIGDIR", "mpl"),
    ("FLWR_HOME", "flwr"),
    ("RAY_TMPDIR", "ray"),
    ("TORCHINDUCTOR_CACHE_DIR", "inductor"),
    ("TRITON_CACHE_DIR", "triton"),
]:
    os.environ.setdefault(var, os.path.join(_tmp, sub))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION", "1")
# model.dtype = "auto" picks bf16 on CPUs with native bf16: the tests' numbers must not depend on the machine.
os.environ.setdefault("ROLORA_NATIVE_BF16", "0")

import pytest  # noqa: E402
import torch  # noqa: E402  (after the environment is set)
from hypothesis import settings  # noqa: E402

# Every run replays the same generated examples (no flaky red builds, no example database): the
# README's test command is what CI runs (.ci/run), and it sets no CI variable to switch on.
# HYPOTHESIS_PROFILE=dev explores new examples each run (and keeps a database of failures).
settings.register_profile("ci", derandomize=True, database=None)
settings.register_profile("dev")
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

if not torch.cuda.is_available():
    # Without a GPU the Triton kernels still run, in the interpreter, so CI tests the kernel code.
    os.environ.setdefault("TRITON_INTERPRET", "1")


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module: bit-exact reproducibility is promised for a fixed thread count
    (the toy CLI's default is 1); restored after."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
