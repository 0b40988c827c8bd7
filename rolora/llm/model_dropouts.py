"""Route a Hugging Face model's own dropouts through per-client streams for a client-batched pass.

Two kinds of dropout live in the model: its ``nn.Dropout`` modules (embeddings, attention output,
feed-forward output, pooler/head) and the attention-probability dropout inside the attention
function (sdpa draws it as ``bernoulli_`` over [B, heads, T, T], like eager attention). For the
duration of :func:`client_dropouts`, every ``nn.Dropout`` in training mode calls
``ClientStreams.tokens`` instead, and models with attention dropout use ``client_attention`` (eager
attention whose dropout calls ``ClientStreams.attention``). Models without attention dropout (Llama)
keep their attention function.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager

import torch
from torch import nn

from rolora.llm.client_streams import ClientStreams

ATTENTION_NAME = "rolora_client_batched"


class _Active(threading.local):
    """The streams of the pass in progress, per thread (client workers run passes side by side)."""

    def __init__(self) -> None:
        self.streams: list[ClientStreams] = []


_active = _Active()


def client_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """Eager attention (``modeling_bert.eager_attention_forward``) with per-client dropout."""
    out = attention_product(module, query, key, value, attention_mask, scaling, dropout)
    return out.transpose(1, 2).contiguous(), None


def attention_product(module, query, key, value, attention_mask, scaling=None, dropout=0.0) -> torch.Tensor:
    """softmax(q kᵀ · scaling + mask), its dropout through the pass's streams, times v: [.., heads, T, d].

    ``attention_mask``: bool (True: may attend) or additive, broadcast to [.., heads, T, keys]."""
    if scaling is None:
        scaling = query.size(-1) ** -0.5
    # The scale on the query ([.., T, d]) rather than on the [.., T, T] product; the mask in place,
    # since matmul does not save its product for backward.
    weights = torch.matmul(query * scaling, key.transpose(2, 3))
    if attention_mask is not None:
        if attention_mask.dtype == torch.bool:
            weights = weights.masked_fill_(~attention_mask, torch.finfo(weights.dtype).min)
        else:
            weights = weights.add_(attention_mask)
    weights = softmax_last(weights)
    if dropout > 0.0 and module.training:
        weights = _active.streams[-1].attention(weights, dropout)
    return torch.matmul(weights, value)


FP32_SOFTMAX_KEYS = range(16, 32)
"""Key counts at which a bf16/fp16 attention softmax on a CPU runs faster through fp32: PyTorch's
reduced-precision softmax takes a scalar path on rows shorter than 32 (forward 5×, backward 10×
slower per entry at 30 keys than at 32); below 16 keys the casts cost more than they save (measured
on this machine, attention forward + backward with dropout)."""


def softmax_last(weights: torch.Tensor) -> torch.Tensor:
    """Softmax over the last dim; reduced-precision CPU rows of 16-31 keys go through fp32 (faster
    there, and rounded once to the input's dtype)."""
    if weights.device.type == "cpu" and weights.dtype in (torch.bfloat16, torch.float16) \
            and FP32_SOFTMAX_KEYS.start <= weights.shape[-1] < FP32_SOFTMAX_KEYS.stop:  # (a guard, traced)
        return torch.softmax(weights.float(), dim=-1).to(weights.dtype)
    return torch.softmax(weights, dim=-1)


def _register() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(ATTENTION_NAME, client_attention)
    AttentionMaskInterface.register(ATTENTION_NAME, sdpa_mask)  # the mask sdpa gets: bool or None


def attention_dropout(model: nn.Module) -> float:
    config = model.config
    return float(getattr(config, "attention_probs_dropout_prob", 0.0) or getattr(config, "attention_dropout", 0.0) or 0.0)


def _routed(m: nn.Dropout, streams: ClientStreams):
    """``m``'s forward through ``streams``. For a run-long stream (``streams.run_long``: the compiled
    step's) the same object every time, kept on the module: a compiled pass's guards check the
    forward's identity. Other streams (per group, holding its mask tables) are not kept."""
    if not getattr(streams, "run_long", False):
        return lambda x: streams.tokens(x, m.p) if m.training and m.p > 0.0 else x
    held = m.__dict__.get("_routed_forward")
    if held is None or held[0] is not streams:
        held = (streams, lambda x, m=m: streams.tokens(x, m.p) if m.training and m.p > 0.0 else x)
        m.__dict__["_routed_forward"] = held
    return held[1]


@contextmanager
def client_dropouts(model: nn.Module, streams: ClientStreams):
    """Every dropout of ``model`` draws from ``streams`` (per client) for the duration."""
    dropouts = [m for m in model.modules() if isinstance(m, nn.Dropout)]
    swap = attention_dropout(model) > 0.0
    before = model.config._attn_implementation
    _active.streams.append(streams)
    try:
        for m in dropouts:
            m.forward = _routed(m, streams)
        if swap:
            _register()
            model.config._attn_implementation = ATTENTION_NAME
        yield
    finally:
        _active.streams.pop()
        for m in dropouts:
            m.__dict__.pop("forward", None)
        if swap:
            model.config._attn_implementation = before
