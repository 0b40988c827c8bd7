"""Dropout seeds drawn from torch's RNG: checkpoint re-runs and ``torch.compile`` stay correct.

A layer (``kernel_helpers.LoRALinear`` here, the library's ``FederatedLinear`` alike) draws each
training call's dropout seed with ``rolora.kernels.draw_dropout_seed`` from torch's default CPU
generator (as ``nn.Dropout`` does), so ``torch.utils.checkpoint`` — which saves and restores that RNG
state for its re-run — regenerates the same mask, and dynamo sees no changing Python attribute to guard on.
Checkpointed and plain runs must agree exactly up to fp32 re-association (rtol 1e-6); compiled and
eager runs under the same ``torch.manual_seed`` to rtol 1e-5.
"""

from __future__ import annotations

import pytest
import torch
from torch.utils.checkpoint import checkpoint

from kernel_helpers import LoRALinear, device_for

from rolora.kernels import lora_linear
from rolora.kernels.op import triton_available


def _layer(backend: str, k: int, n: int, dropout: float) -> LoRALinear:
    layer = LoRALinear(k, n, r=4, alpha=8, dropout=dropout, backend=backend, seed=1)
    with torch.no_grad():
        layer.lora_B.normal_(generator=torch.Generator().manual_seed(0))
    return layer.to(device_for(backend)).train()


def _run(layer: LoRALinear, x0: torch.Tensor, mode: str):
    layer.zero_grad(set_to_none=True)
    x = x0.detach().clone().requires_grad_(True)
    torch.manual_seed(1234)
    if mode == "plain":
        y = layer(x)
    else:
        y = checkpoint(layer, x, use_reentrant=(mode == "reentrant"))
    (y.square().sum()).backward()
    return y.detach(), x.grad, layer.lora_A.grad, layer.lora_B.grad


@pytest.mark.parametrize("mode", ["non_reentrant", "reentrant"])
@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_checkpoint_with_dropout_matches_plain_run(backend, mode):
    if backend == "triton" and not triton_available():
        pytest.skip("triton does not import here")
    k, n = (24, 40) if backend == "torch" else (16, 16)  # tiny for the interpreter
    layer = _layer(backend, k, n, dropout=0.3)
    x0 = torch.randn(5, k, generator=torch.Generator().manual_seed(2)).to(device_for(backend))
    plain = _run(layer, x0, "plain")
    ck = _run(layer, x0, mode)
    for name, a, b in zip(("y", "dx", "dA", "dB"), plain, ck):
        torch.testing.assert_close(b, a, rtol=1e-6, atol=1e-6, msg=name)
    # Dropout really acted: the eval-mode output differs.
    with torch.no_grad():
        assert not torch.allclose(layer.eval()(x0), plain[0])


def test_ops_accept_a_cpu_seed_beside_other_device_inputs():
    # Proxy for CUDA inputs with the CPU 0-d seed: meta tensors dispatch to the fake implementations.
    meta = {"device": "meta"}
    x, w = torch.empty(5, 8, **meta), torch.empty(6, 8, **meta)
    a, b = torch.empty(2, 8, **meta), torch.empty(6, 2, **meta)
    seed = torch.tensor(3, dtype=torch.int64)
    y, s = torch.ops.rolora.lora_linear_fwd(x, w, None, a, b, 1.0, 0.1, seed, "torch")
    assert (y.shape, s.shape, y.device.type) == ((5, 6), (5, 2), "meta")
    dx, da, db = torch.ops.rolora.lora_linear_bwd(torch.empty(5, 6, **meta), x, w, a, b, s, 1.0, 0.1,
                                                  seed, "torch", True, True, True)
    assert (dx.shape, da.shape, db.shape) == ((5, 8), (2, 8), (6, 2))


def test_functional_seed_accepts_int_and_tensor_and_rejects_float():
    x, w = torch.randn(5, 8), torch.randn(6, 8)
    a, b = torch.randn(2, 8), torch.randn(6, 2)
    y_int = lora_linear(x, w, None, a, b, 1.0, 0.4, 11, "torch")
    y_tensor = lora_linear(x, w, None, a, b, 1.0, 0.4, torch.tensor(11), "torch")
    torch.testing.assert_close(y_int, y_tensor, rtol=0, atol=0)
    with pytest.raises(ValueError, match="seed must be an int"):
        lora_linear(x, w, None, a, b, 1.0, 0.4, 1.5, "torch")


def test_compile_training_with_dropout_does_not_recompile():
    from torch._dynamo.backends.registry import lookup_backend

    torch._dynamo.reset()
    compiles = []

    def counting_aot_eager(gm, example_inputs):
        compiles.append(gm)
        return lookup_backend("aot_eager")(gm, example_inputs)

    layer = _layer("torch", 24, 40, dropout=0.1)
    compiled = torch.compile(layer, backend=counting_aot_eager, fullgraph=True)
    x = torch.randn(5, 24, generator=torch.Generator().manual_seed(4))
    torch.manual_seed(99)
    outs_c = []
    for _ in range(12):
        y = compiled(x)
        y.sum().backward()
        outs_c.append(y.detach())
    grad_c = layer.lora_B.grad.clone()
    assert len(compiles) <= 2, f"{len(compiles)} compilations for 12 calls"
    layer.zero_grad(set_to_none=True)
    torch.manual_seed(99)
    outs_e = []
    for _ in range(12):
        y = layer(x)
        y.sum().backward()
        outs_e.append(y.detach())
    for i, (c, e) in enumerate(zip(outs_c, outs_e)):
        torch.testing.assert_close(c, e, rtol=1e-5, atol=1e-6, msg=f"call {i}")
    assert not torch.equal(outs_e[0], outs_e[1])  # masks change between calls
    torch.testing.assert_close(grad_c, layer.lora_B.grad, rtol=1e-5, atol=1e-5)
