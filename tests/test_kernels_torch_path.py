"""The PyTorch path of the fused LoRA linear against the float64 reference, and input validation.

Tolerances (‖out − ref‖/‖ref‖ per output and gradient): fp32 ≤ 1e-5, fp16 ≤ 5e-3, bf16 ≤ 3e-2
(bf16 keeps 8 significant bits: ~4e-3 per rounding, a few roundings deep). Allocations are poisoned
with NaN during each run.
"""

from __future__ import annotations

import math

import pytest
import torch

from rolora.kernels import dropout_keep_mask, lora_linear
from kernel_helpers import make_problem, poisoned_allocations, rel_err, run_float64, run_ours

TOL = {torch.float32: 1e-5, torch.float16: 5e-3, torch.bfloat16: 3e-2}
PHASES = ["full", "B", "A"]


def _check_against_reference(pb, phase, dropout_p, seed, backend, tol, x_grad=True):
    with poisoned_allocations():
        got = run_ours(pb, phase, dropout_p, seed, backend, x_grad)
    m = math.prod(pb.x.shape[:-1])
    keep = dropout_keep_mask(seed, m, pb.x.shape[-1], dropout_p, pb.x.device, backend) if dropout_p else None
    ref = run_float64(pb, phase, keep, dropout_p, x_grad)
    for name, g, r in zip(("y", "dx", "dA", "dB"), got, ref):
        assert (g is None) == (r is None), f"{name}: got {'None' if g is None else 'a tensor'}"
        if g is None:
            continue
        assert not torch.isnan(g).any(), f"{name} has NaN"
        assert g.shape == r.shape, f"{name} shape {tuple(g.shape)} != {tuple(r.shape)}"
        err = rel_err(g, r)
        assert err <= tol, f"{name}: relative error {err:.2e} > {tol:.0e}"
    return got


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("phase", PHASES)
@pytest.mark.parametrize("dropout_p", [0.0, 0.3])
@pytest.mark.parametrize("lead,k,n,r", [((37,), 80, 48, 8), ((2, 5), 48, 96, 1), ((1,), 96, 80, 128)])
def test_torch_path_matches_float64(dtype, phase, dropout_p, lead, k, n, r):
    pb = make_problem(lead, k, n, r, dtype, seed=hash((lead, k, n, r)) % 1000)
    y, dx, da, db = _check_against_reference(pb, phase, dropout_p, 7, "torch", TOL[dtype])
    assert y.dtype == dtype and dx.dtype == dtype
    assert (da is None) == (phase == "B") and (db is None) == (phase == "A")


@pytest.mark.parametrize("phase", PHASES)
def test_non_contiguous_input_and_no_input_grad(phase):
    pb = make_problem((3, 11), 48, 40, 4, torch.float32, seed=3, non_contiguous=True)
    assert not pb.x.is_contiguous()
    _, dx, _, _ = _check_against_reference(pb, phase, 0.2, 11, "torch", TOL[torch.float32], x_grad=False)
    assert dx is None


@pytest.mark.parametrize("act", [torch.float16, torch.bfloat16])
def test_fp32_adapters_with_half_activations(act):
    # The most-reported bug class: gradients must come back in each tensor's own dtype.
    pb = make_problem((29,), 64, 48, 8, act, seed=5, adapter_dtype=torch.float32)
    y, dx, da, db = _check_against_reference(pb, "full", 0.0, 0, "torch", TOL[act])
    assert (y.dtype, dx.dtype, da.dtype, db.dtype) == (act, act, torch.float32, torch.float32)


def test_autocast_bf16_on_cpu_with_fp32_everything():
    pb = make_problem((2, 9), 64, 48, 8, torch.float32, seed=9)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = run_ours(pb, "full", 0.0, 0, "auto")
    ref = run_float64(pb, "full")
    y, dx, da, db = got
    assert y.dtype == torch.bfloat16 and dx.dtype == torch.float32  # grad of the fp32 leaf
    assert da.dtype == torch.float32 and db.dtype == torch.float32
    for name, g, r in zip(("y", "dx", "dA", "dB"), got, ref):
        assert rel_err(g, r) <= TOL[torch.bfloat16], name


def test_dropout_mask_reproducible_applied_and_statistics():
    # The mask is a function of the seed, forward applies exactly it with scale 1/(1-p), keep-rate ≈ 1-p.
    # (Forward/backward mask agreement is checked against the float64 reference with the same mask.)
    p, seed, m, k = 0.4, 123, 256, 96
    keep = dropout_keep_mask(seed, m, k, p, "cpu", "torch")
    assert torch.equal(keep, dropout_keep_mask(seed, m, k, p, "cpu", "torch"))  # reproducible
    assert not torch.equal(keep, dropout_keep_mask(seed + 1, m, k, p, "cpu", "torch"))
    rate = keep.float().mean().item()
    sigma = math.sqrt(p * (1 - p) / keep.numel())
    assert abs(rate - (1 - p)) < 5 * sigma, f"keep-rate {rate:.4f}, expected {1 - p} ± {5 * sigma:.4f}"
    # Scaling: E[x̂] = x, so with x = 1 and A = 1ᵀ (r = 1) the mean of S/K over rows is ≈ 1.
    x = torch.ones(m, k)
    w = torch.zeros(1, k)
    a = torch.ones(1, k)
    b = torch.ones(1, 1)
    y = lora_linear(x, w, None, a, b, 1.0, p, seed, "torch")
    torch.testing.assert_close(y[:, 0], keep.float().sum(1) / (1 - p), rtol=1e-6, atol=1e-5)
    assert abs(y.mean().item() / k - 1.0) < 5 * sigma / (1 - p)


@pytest.mark.parametrize(
    "mutate,match",
    [
        (lambda a: a.update(x=torch.randn(4, 5)), "last dimension must be in_features=8"),
        (lambda a: a.update(lora_A=torch.randn(2, 7)), "lora_A must be r×in"),
        (lambda a: a.update(lora_B=torch.randn(6, 3)), "lora_B must be out×r = 6×2"),
        (lambda a: a.update(bias=torch.randn(5)), r"bias must have shape \(6,\)"),
        (lambda a: a.update(dropout_p=1.0), "dropout_p must be in"),
        (lambda a: a.update(weight=torch.randn(6, 8, requires_grad=True)), "never computes dW0"),
        (lambda a: a.update(weight=torch.randn(6, 8, dtype=torch.float64)), "must match"),
        (lambda a: a.update(backend="cuda"), "backend must be one of"),
    ],
)
def test_bad_input_raises_clear_error(mutate, match):
    args = dict(x=torch.randn(4, 8), weight=torch.randn(6, 8), bias=torch.randn(6),
                lora_A=torch.randn(2, 8), lora_B=torch.randn(6, 2), scale=1.0, dropout_p=0.0,
                backend="torch")
    mutate(args)
    with pytest.raises(ValueError, match=match):
        lora_linear(**args)


def test_auto_backend_is_torch_on_cpu():
    from rolora.kernels import resolve_backend

    assert resolve_backend("auto", torch.device("cpu")) == "torch"
