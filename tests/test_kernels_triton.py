"""The Triton kernels against the float64 reference.

Without a GPU they run in Triton's interpreter (tests/conftest.py sets TRITON_INTERPRET=1 before any
rolora import), on fp32 and fp16 only (bf16 is broken in the interpreter) and small shapes that are
not block multiples. Tolerances (‖out − ref‖/‖ref‖): fp32 ≤ 1e-4 (interpreter or IEEE dots on GPU),
fp16 ≤ 1e-2. Allocations are poisoned with NaN during each run, so an unwritten element fails.
GPU-only checks (bf16, autocast on CUDA, torch.compile with inductor) are marked ``gpu``.
"""

from __future__ import annotations

import importlib.util
import math

import pytest
import torch

from rolora.kernels import dropout_keep_mask, lora_linear
from rolora.kernels.launch_configs import is_interpreted
from rolora.kernels.op import triton_available
from kernel_helpers import (HAS_CUDA, TRITON_DEVICE as DEVICE, make_problem, poisoned_allocations, rel_err,
                            run_float64, run_ours)

# Each Triton case carries this mark (not the module): the check below that Triton is usable must
# run, and fail, exactly where these would all skip.
needs_triton = pytest.mark.skipif(not triton_available(),
                                  reason="triton is not installed, or has no GPU driver and no TRITON_INTERPRET=1")
gpu = pytest.mark.gpu
needs_cuda = pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")

TOL = {torch.float32: 1e-4, torch.float16: 1e-2, torch.bfloat16: 3e-2}
SHAPES = [((1,), 48, 96, 1), ((37,), 80, 48, 16), ((2, 32), 96, 80, 33)]


def _compare(pb, phase, dropout_p, seed, tol, x_grad=True):
    with poisoned_allocations():
        got = run_ours(pb, phase, dropout_p, seed, "triton", x_grad)
    m, k = math.prod(pb.x.shape[:-1]), pb.x.shape[-1]
    keep = dropout_keep_mask(seed, m, k, dropout_p, pb.x.device, "triton").cpu() if dropout_p else None
    pb_cpu = type(pb)(*(t.cpu() if isinstance(t, torch.Tensor) else t for t in vars(pb).values()))
    ref = run_float64(pb_cpu, phase, keep, dropout_p, x_grad)
    for name, g, r in zip(("y", "dx", "dA", "dB"), got, ref):
        assert (g is None) == (r is None), name
        if g is None:
            continue
        assert not torch.isnan(g).any(), f"{name} has NaN"
        err = rel_err(g.cpu(), r)
        assert err <= tol, f"{name}: relative error {err:.2e} > {tol:.0e}"
    return got


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("phase", ["full", "B", "A"])
@pytest.mark.parametrize("dropout_p", [0.0, 0.3])
@pytest.mark.parametrize("lead,k,n,r", SHAPES)
@needs_triton
def test_triton_matches_float64(dtype, phase, dropout_p, lead, k, n, r):
    pb = make_problem(lead, k, n, r, dtype, seed=k + n + r, device=DEVICE)
    _, _, da, db = _compare(pb, phase, dropout_p, 99, TOL[dtype])
    assert (da is None) == (phase == "B") and (db is None) == (phase == "A")


@needs_triton
def test_triton_rank_128_non_contiguous_fp32_adapters_no_input_grad():
    pb = make_problem((64,), 48, 80, 128, torch.float16, seed=1, adapter_dtype=torch.float32,
                      non_contiguous=True, device=DEVICE)
    y, dx, da, db = _compare(pb, "full", 0.1, 5, TOL[torch.float16], x_grad=False)
    assert dx is None and da.dtype == torch.float32 and db.dtype == torch.float32
    assert y.dtype == torch.float16


@needs_triton
def test_triton_is_deterministic_and_agrees_with_torch_path_without_dropout():
    pb = make_problem((37,), 80, 48, 4, torch.float32, seed=2, device=DEVICE)
    first = run_ours(pb, "full", 0.3, 17, "triton")
    second = run_ours(pb, "full", 0.3, 17, "triton")
    for a, b in zip(first, second):
        assert torch.equal(a, b)
    tri = run_ours(pb, "full", 0.0, 0, "triton")
    tor = run_ours(pb, "full", 0.0, 0, "torch")
    for a, b in zip(tri, tor):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


@needs_triton
def test_triton_keep_mask_statistics():
    p, m, k = 0.25, 128, 192
    keep = dropout_keep_mask(3, m, k, p, DEVICE, "triton")
    assert torch.equal(keep, dropout_keep_mask(3, m, k, p, DEVICE, "triton"))
    rate = keep.float().mean().item()
    sigma = math.sqrt(p * (1 - p) / keep.numel())
    assert abs(rate - (1 - p)) < 5 * sigma, f"keep-rate {rate:.4f}, expected {1 - p} ± {5 * sigma:.4f}"
    # Rows differ (offsets are row·K + col, not col alone).
    assert not torch.equal(keep[0], keep[1])


@needs_triton
def test_triton_forced_rank_above_128_raises():
    x, w = torch.randn(4, 16, device=DEVICE), torch.randn(8, 16, device=DEVICE)
    a, b = torch.randn(129, 16, device=DEVICE), torch.randn(8, 129, device=DEVICE)
    with pytest.raises(ValueError, match="ranks ≤ 128"):
        lora_linear(x, w, None, a, b, 1.0, backend="triton")


@gpu
@needs_cuda
@pytest.mark.parametrize("phase", ["full", "B", "A"])
@pytest.mark.parametrize("lead,k,n,r", SHAPES + [((512,), 1024, 1024, 64)])
@needs_triton
def test_triton_bf16_on_gpu(phase, lead, k, n, r):
    pb = make_problem(lead, k, n, r, torch.bfloat16, seed=4, device="cuda")
    _compare(pb, phase, 0.1, 8, TOL[torch.bfloat16])


@gpu
@needs_cuda
@pytest.mark.parametrize("backend", ["triton", "auto"])  # auto: the cuBLAS path at this small M
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@needs_triton
def test_autocast_on_cuda_with_fp32_adapters(dtype, backend):
    pb = make_problem((4, 33), 256, 192, 16, torch.float32, seed=6, device="cuda")
    with torch.autocast("cuda", dtype=dtype):
        got = run_ours(pb, "full", 0.0, 0, backend)
    ref = run_float64(type(pb)(*(t.cpu() if isinstance(t, torch.Tensor) else t for t in vars(pb).values())),
                      "full")
    assert got[0].dtype == dtype and got[2].dtype == torch.float32
    for name, g, r in zip(("y", "dx", "dA", "dB"), got, ref):
        assert rel_err(g.cpu(), r) <= TOL[dtype], name


@gpu
@needs_cuda
@needs_triton
def test_compiled_module_with_triton_backend_on_gpu():
    from kernel_helpers import LoRALinear

    torch.manual_seed(0)
    layer = LoRALinear(256, 128, r=8, alpha=16, backend="triton", device="cuda")
    torch.nn.init.normal_(layer.lora_B)
    x = torch.randn(64, 256, device="cuda", requires_grad=True)
    eager = layer(x)
    compiled = torch.compile(layer, fullgraph=True)(x)
    torch.testing.assert_close(compiled, eager, rtol=1e-4, atol=1e-4)
    compiled.sum().backward()
    assert layer.lora_A.grad is not None and layer.lora_B.grad is not None


@needs_triton
def test_triton_non_contiguous_bias():
    # A strided bias view (every other element) must be read through its stride, not as contiguous.
    pb = make_problem((37,), 48, 80, 4, torch.float32, seed=12, device=DEVICE)
    wide = torch.randn(2 * 80, generator=torch.Generator().manual_seed(13)).to(DEVICE)
    pb.bias = wide[::2]
    assert not pb.bias.is_contiguous()
    _compare(pb, "full", 0.0, 0, TOL[torch.float32])


def test_the_kernels_are_usable_wherever_triton_is_installed():
    """Without a GPU the interpreter runs above are the only check of the kernels' numbers: triton being
    installed but the kernels unusable must fail here, not turn every case above into a skip."""
    if importlib.util.find_spec("triton") is None:
        pytest.skip("triton is not installed: the Triton cases are skipped with this reason")
    assert HAS_CUDA or is_interpreted(), "no GPU and TRITON_INTERPRET is not set (tests/conftest.py sets it)"
    assert triton_available(), "triton is installed but rolora.kernels.triton_kernels does not import"
    g = torch.Generator().manual_seed(0)
    x, w0, a, b = (torch.randn(*shape, generator=g) for shape in [(5, 12), (8, 12), (2, 12), (8, 2)])
    y = lora_linear(*(t.to(DEVICE) for t in (x, w0)), None, *(t.to(DEVICE) for t in (a, b)), 2.0, backend="triton")
    torch.testing.assert_close(y.cpu(), x @ w0.T + 2.0 * (x @ a.T) @ b.T, rtol=1e-4, atol=1e-4)
