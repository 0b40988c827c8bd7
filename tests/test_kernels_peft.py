"""Parity with PEFT's LoRA ``Linear`` and round-trips of PEFT adapter state dicts (offline, tiny models).

Ours: ``lora_linear`` in ``kernel_helpers.LoRALinear`` (PEFT's parameter names and shapes), put into
the models and loaded from PEFT's saved keys by the helpers there.

Same weights → same outputs and gradients: ‖ours − peft‖/‖peft‖ ≤ 1e-5 in fp32 (torch path),
≤ 1e-4 for the Triton interpreter in fp32, ≤ 1e-2 in fp16. Dropout is 0 (PEFT draws its mask from the
global RNG; our dropout is tested against a reference with the same mask elsewhere).
"""

from __future__ import annotations

import copy
from collections import OrderedDict

import peft
import pytest
import torch
from torch import nn

from rolora.kernels.op import triton_available
from kernel_helpers import (LoRALinear, device_for, inject_lora, load_peft_state_dict, peft_state_dict, rel_err,
                            set_phase)

K, N, R, ALPHA = 48, 80, 8, 16


def _pair(dtype: torch.dtype, backend: str, k: int = K, n: int = N, r: int = R, dropout: float = 0.0):
    torch.manual_seed(0)  # PEFT's own init draws from the global RNG; only the reference side uses it
    base = nn.Sequential(OrderedDict(fc=nn.Linear(k, n))).to(dtype)
    ours = copy.deepcopy(base)
    ref = peft.get_peft_model(base, peft.LoraConfig(r=r, lora_alpha=ALPHA, target_modules=["fc"],
                                                    lora_dropout=dropout, init_lora_weights=False))
    inject_lora(ours, ["fc"], r=r, alpha=ALPHA, dropout=dropout, backend=backend)
    load_peft_state_dict(ours, peft.get_peft_model_state_dict(ref))
    return ours, ref


# Always collected: without Triton the triton cases are reported as skipped, with the reason.
NEEDS_TRITON = pytest.mark.skipif(not triton_available(),
                                  reason="triton is not installed, or has no GPU driver and no TRITON_INTERPRET=1")
CASES = [("torch", torch.float32, 1e-5), ("torch", torch.float16, 1e-2),
         pytest.param("triton", torch.float32, 1e-4, marks=NEEDS_TRITON),
         pytest.param("triton", torch.float16, 1e-2, marks=NEEDS_TRITON)]


# Shape × rank × dropout on the torch path (cheap); non-square layers both ways. Dropout is configured
# but the models are in eval mode, where both must skip it (PEFT's training mask is global-RNG-drawn).
SHAPE_CASES = [(K, N, R, 0.0), (96, 40, 1, 0.0), (40, 96, 64, 0.0), (K, N, R, 0.3)]
TORCH_DTYPES = [(torch.float32, 1e-5), (torch.float16, 1e-2), (torch.bfloat16, 3e-2)]


@pytest.mark.parametrize("dtype,tol", TORCH_DTYPES)
@pytest.mark.parametrize("k,n,r,dropout", SHAPE_CASES)
@pytest.mark.parametrize("phase", ["full", "B", "A"])
def test_torch_path_matches_peft_across_shapes_ranks_dtypes(dtype, tol, k, n, r, dropout, phase):
    _check_against_peft("torch", dtype, tol, phase, k, n, r, dropout)


@pytest.mark.parametrize("backend,dtype,tol", CASES)
@pytest.mark.parametrize("phase", ["full", "B", "A"])
def test_layer_matches_peft_outputs_and_grads(backend, dtype, tol, phase):
    _check_against_peft(backend, dtype, tol, phase)


def _check_against_peft(backend, dtype, tol, phase, k=K, n=N, r=R, dropout=0.0):
    ours, ref = _pair(dtype, backend, k, n, r, dropout)
    dev = device_for(backend)  # PEFT stays on the CPU: the reference
    ours.to(dev)
    if dropout:
        ours.eval()
        ref.eval()
    set_phase(ours, phase)
    ref_fc = ref.base_model.model.fc
    ref_fc.lora_A["default"].weight.requires_grad_(phase != "B")
    ref_fc.lora_B["default"].weight.requires_grad_(phase != "A")
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(3, 13, k, generator=gen).to(dtype)
    gy = torch.randn(3, 13, n, generator=gen).to(dtype)
    xo, xr = x.clone().to(dev).requires_grad_(), x.clone().requires_grad_()
    yo, yr = ours(xo), ref(xr)
    assert rel_err(yo, yr) <= tol
    yo.backward(gy.to(dev))
    yr.backward(gy)
    assert rel_err(xo.grad, xr.grad) <= tol
    pairs = {"A": (ours.fc.lora_A, ref_fc.lora_A["default"].weight),
             "B": (ours.fc.lora_B, ref_fc.lora_B["default"].weight)}
    for name, (mine, theirs) in pairs.items():
        assert (mine.grad is None) == (theirs.grad is None), name
        if mine.grad is not None:
            assert rel_err(mine.grad, theirs.grad) <= tol, name
    assert ours.fc.weight.grad is None


def _tiny_models():
    from transformers import LlamaConfig, LlamaForCausalLM, RobertaConfig, RobertaModel

    roberta = RobertaModel(RobertaConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2,
                                         num_attention_heads=2, intermediate_size=48,
                                         max_position_embeddings=40))
    llama = LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2,
                                         num_attention_heads=2, num_key_value_heads=1,
                                         intermediate_size=48, max_position_embeddings=40))
    return [("roberta", roberta, ["query", "value"]), ("llama", llama, ["q_proj", "v_proj", "down_proj"])]


def _out(model, ids):
    out = model(input_ids=ids)
    return out.logits if hasattr(out, "logits") else out.last_hidden_state


@pytest.mark.parametrize("idx", [0, 1], ids=["roberta", "llama"])
def test_hf_model_round_trip_with_peft(idx):
    torch.manual_seed(0)
    name, base, targets = _tiny_models()[idx]
    base.eval()
    ours, fresh = copy.deepcopy(base), copy.deepcopy(base)
    cfg = peft.LoraConfig(r=4, lora_alpha=8, target_modules=targets, lora_dropout=0.0,
                          init_lora_weights=False)
    ref = peft.get_peft_model(base, cfg)
    replaced = inject_lora(ours, targets, r=4, alpha=8)
    theirs = peft.get_peft_model_state_dict(ref)
    # Keys and shapes exactly as PEFT's.
    mine = peft_state_dict(ours)
    assert set(mine) == set(theirs) and len(replaced) * 2 == len(theirs)
    assert all(mine[k].shape == theirs[k].shape for k in theirs)
    # PEFT → ours: same function.
    load_peft_state_dict(ours, theirs)
    ids = torch.randint(0, 64, (2, 9), generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(_out(ours, ids), _out(ref, ids), rtol=1e-5, atol=1e-6)
    # Ours → PEFT: a fresh PEFT model loading our state dict reproduces our outputs.
    with torch.no_grad():
        for layer in ours.modules():
            if isinstance(layer, LoRALinear):
                layer.lora_B.mul_(-0.5)  # make ours differ from `ref` first
    back = peft.get_peft_model(fresh, cfg)
    peft.set_peft_model_state_dict(back, peft_state_dict(ours))
    back.eval()
    torch.testing.assert_close(_out(back, ids), _out(ours, ids), rtol=1e-5, atol=1e-6)
    # Only the LoRA factors train, as in PEFT.
    trainable = {n for n, p in ours.named_parameters() if p.requires_grad}
    assert trainable and all(n.endswith(("lora_A", "lora_B")) for n in trainable), name

