"""The "auto" backend rule (rolora.kernels.op.choose_backend), as measured on an H100 (BENCHMARKS.md):
cuBLAS path at small M, at rank > 128 and without LoRA dropout; the fused Triton kernels otherwise."""

import pytest
import torch

from rolora.kernels import op


@pytest.fixture
def triton_resolves(monkeypatch):
    monkeypatch.setattr(op, "resolve_backend", lambda backend, device: "torch" if backend == "torch" else "triton")


@pytest.mark.parametrize("m,r,p,expected", [
    (8192, 16, 0.1, "triton"),
    (8192, 16, 0.0, "torch"),      # no dropout: cuBLAS was faster at every M
    (512, 16, 0.1, "torch"),       # small M: host-bound, fewer launches win
    (513, 16, 0.1, "triton"),
    (8192, 129, 0.1, "torch"),     # ranks above the Triton tiles
    (8192, 16, None, "triton"),    # dropout unknown: the M rule alone
])
def test_auto_rule(triton_resolves, m, r, p, expected):
    assert op.choose_backend("auto", torch.device("cuda"), m, r, None, p) == expected


def test_explicit_backends_are_kept(triton_resolves):
    assert op.choose_backend("triton", torch.device("cuda"), 16, 16, None, 0.0) == "triton"
    assert op.choose_backend("torch", torch.device("cuda"), 8192, 16, None, 0.1) == "torch"
    with pytest.raises(ValueError, match="ranks ≤ 128"):
        op.choose_backend("triton", torch.device("cuda"), 8192, 200, None, 0.1)


def test_fusing_without_dropout_can_be_switched_back_on(triton_resolves, monkeypatch):
    monkeypatch.setattr(op, "FUSE_WITHOUT_DROPOUT", True)
    assert op.choose_backend("auto", torch.device("cuda"), 8192, 16, None, 0.0) == "triton"
