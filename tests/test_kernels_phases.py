"""RoLoRA phases: what autograd keeps and which gradients exist, per phase and backend.

Saved tensors are recorded with ``torch.autograd.graph.saved_tensors_hooks`` during the forward.
Dimensions are all distinct (M=24, K=40, N=56, r=8) so a saved tensor's shape tells what it is.
The Triton cases run on the GPU where there is one, in the interpreter elsewhere.
"""

from __future__ import annotations

import pytest
import torch

from kernel_helpers import LoRALinear, device_for

from rolora.kernels import LoRAPhase
from rolora.kernels.op import triton_available

M, K, N, R = 24, 40, 56, 8
# Always collected: without Triton the triton cases are reported as skipped, with the reason.
NEEDS_TRITON = pytest.mark.skipif(not triton_available(),
                                  reason="triton is not installed, or has no GPU driver and no TRITON_INTERPRET=1")
BACKENDS = ["torch", pytest.param("triton", marks=NEEDS_TRITON)]


def _saved_shapes(layer: LoRALinear, x: torch.Tensor) -> tuple[list[tuple[int, ...]], torch.Tensor]:
    shapes: list[tuple[int, ...]] = []

    def pack(t: torch.Tensor) -> torch.Tensor:
        shapes.append(tuple(t.shape))
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        y = layer(x)
    return shapes, y


def _layer(backend: str) -> LoRALinear:
    layer = LoRALinear(K, N, r=R, alpha=16, dropout=0.1, backend=backend, seed=1)
    with torch.no_grad():
        layer.lora_B.normal_(generator=torch.Generator().manual_seed(0))
    return layer.to(device_for(backend))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    "phase,keeps_x,keeps_s",
    [(LoRAPhase.FULL, True, True), (LoRAPhase.B_ONLY, False, True), (LoRAPhase.A_ONLY, True, False)],
)
def test_saved_tensors_and_grads_per_phase(backend, phase, keeps_x, keeps_s):
    layer = _layer(backend)
    layer.set_phase(phase)
    assert layer.phase == phase
    x = torch.randn(M, K, generator=torch.Generator().manual_seed(2)).to(device_for(backend))
    x.requires_grad_(True)
    shapes, y = _saved_shapes(layer, x)
    assert ((M, K) in shapes) == keeps_x, f"{phase}: saved {shapes}"
    assert ((M, R) in shapes) == keeps_s, f"{phase}: saved {shapes}"
    # Nothing else per row (eager calls keep the dropout seed as an int on the autograd context).
    assert all(s[:1] != (M,) for s in shapes if s not in [(M, K), (M, R)]), shapes
    y.sum().backward()
    assert layer.weight.grad is None and layer.bias.grad is None
    assert (layer.lora_A.grad is not None) == (phase != LoRAPhase.B_ONLY)
    assert (layer.lora_B.grad is not None) == (phase != LoRAPhase.A_ONLY)
    assert x.grad is not None and not torch.isnan(x.grad).any()


@pytest.mark.parametrize("backend", BACKENDS)
def test_frozen_adapters_and_no_input_grad_build_no_graph(backend):
    layer = _layer(backend)
    layer.set_phase("frozen")
    shapes, y = _saved_shapes(layer, torch.randn(M, K).to(device_for(backend)))
    assert shapes == [] and not y.requires_grad


def test_b_phase_backward_never_computes_da(monkeypatch):
    # The backward op is asked only for what the phase needs.
    import rolora.kernels.op as op

    calls = []
    real = op.torch_lora_backward

    def spy(*args):
        calls.append(args[-3:])
        return real(*args)

    monkeypatch.setattr(op, "torch_lora_backward", spy)
    for phase, expected in [("B", (True, False, True)), ("A", (True, True, False))]:
        layer = _layer("torch")
        layer.set_phase(phase)
        layer(torch.randn(M, K, requires_grad=True)).sum().backward()
        assert calls.pop() == expected, phase


def test_dropout_seeds_are_fresh_per_call_and_reproducible():
    a, b = _layer("torch"), _layer("torch")
    x = torch.randn(M, K, generator=torch.Generator().manual_seed(3))
    torch.manual_seed(5)  # per-call dropout seeds come from torch's RNG, like nn.Dropout
    ya1, ya2 = a(x), a(x)
    assert not torch.equal(ya1, ya2)  # a new mask each training call
    torch.manual_seed(5)
    torch.testing.assert_close(b(x), ya1, rtol=0, atol=0)  # same torch seed: same mask
    a.eval()
    state = torch.get_rng_state()
    torch.testing.assert_close(a(x), a(x), rtol=0, atol=0)  # no dropout in eval
    assert torch.equal(state, torch.get_rng_state())  # and eval draws nothing from the RNG


def test_phase_from_a_methods_trainable_set():
    assert LoRAPhase.from_trainable(frozenset({"A", "B"})) == LoRAPhase.FULL
    assert LoRAPhase.from_trainable({"B"}) == LoRAPhase.B_ONLY
    assert LoRAPhase.from_trainable(["A"]) == LoRAPhase.A_ONLY
    for bad in [set(), {"A", "W"}, {"W"}]:
        with pytest.raises(ValueError, match="non-empty subset"):
            LoRAPhase.from_trainable(bad)
    for phase in LoRAPhase:  # flags and phase agree both ways
        assert LoRAPhase.from_flags(phase.trains_a, phase.trains_b) == phase
