"""Convergence: a tiny model trained with our LoRA layers follows PEFT's loss curve step for step.

Model: 16 → 64 → 64 (two LoRA linears, r=4) → 4 (trainable head), ~6.3k parameters, synthetic
teacher labels, Adam, full-batch, identical initialisation (PEFT's default: A kaiming, B zero; our
layers load PEFT's adapters). RoLoRA schedule: the phase alternates B-only / A-only every 10 steps.
Tolerance: |loss_ours − loss_peft| ≤ 1e-4 · loss_peft at every step (fp32 rounding drift only).
"""

from __future__ import annotations

import copy
from collections import OrderedDict

import peft
import pytest
import torch
from torch import nn

from kernel_helpers import device_for, inject_lora, load_peft_state_dict, set_phase

from rolora.kernels.op import triton_available

TARGETS = ["fc1", "fc2"]


def _base() -> nn.Module:
    torch.manual_seed(0)  # nn.Linear init and PEFT's LoRA init use the global RNG
    return nn.Sequential(OrderedDict(fc1=nn.Linear(16, 64), act1=nn.ReLU(), fc2=nn.Linear(64, 64),
                                     act2=nn.ReLU(), head=nn.Linear(64, 4)))


def _data():
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(128, 16, generator=gen)
    teacher = torch.randn(16, 4, generator=gen)
    return x, (torch.tanh(x @ teacher) + 0.1 * torch.randn(128, 4, generator=gen)).argmax(1)


def _train(model: nn.Module, phase_setter, steps: int, device: str = "cpu") -> list[float]:
    x, labels = (t.to(device) for t in _data())
    params = [p for n, p in model.named_parameters() if "lora" in n or "head" in n]
    opt = torch.optim.Adam(params, lr=1e-2)
    losses = []
    for step in range(steps):
        phase_setter("B" if (step // 10) % 2 == 0 else "A")
        opt.zero_grad(set_to_none=True)
        loss = nn.functional.cross_entropy(model(x), labels)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def _peft_phase(model):
    def setter(phase: str) -> None:
        for name, p in model.named_parameters():
            if "lora_A" in name:
                p.requires_grad_(phase == "A")
            elif "lora_B" in name:
                p.requires_grad_(phase == "B")
    return setter


NEEDS_TRITON = pytest.mark.skipif(not triton_available(),
                                  reason="triton is not installed, or has no GPU driver and no TRITON_INTERPRET=1")


@pytest.mark.parametrize("backend,steps", [("torch", 200), pytest.param("triton", 30, marks=NEEDS_TRITON)])
def test_loss_curve_matches_peft(backend, steps):
    base = _base()
    ours = copy.deepcopy(base)
    ref = peft.get_peft_model(base, peft.LoraConfig(r=4, lora_alpha=8, target_modules=TARGETS,
                                                    lora_dropout=0.0))
    inject_lora(ours, TARGETS, r=4, alpha=8, backend=backend)
    load_peft_state_dict(ours, peft.get_peft_model_state_dict(ref))
    for model in (ours, ref):  # the head trains in both
        for name, p in model.named_parameters():
            if "head" in name:
                p.requires_grad_(True)

    theirs = _train(ref, _peft_phase(ref), steps)
    dev = device_for(backend)  # Triton: the GPU if there is one; PEFT stays on the CPU
    mine = _train(ours.to(dev), lambda phase: set_phase(ours, phase), steps, dev)

    worst = max(abs(a - b) / b for a, b in zip(mine, theirs))
    assert worst <= 1e-4, f"loss curves differ by up to {worst:.2e} (relative)"
    if steps >= 200:
        assert theirs[-1] < 0.5 * theirs[0], f"PEFT itself did not train: {theirs[0]:.3f} → {theirs[-1]:.3f}"
