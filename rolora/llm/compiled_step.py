"""The client-batched step under ``torch.compile`` (``train.compile``): one graph per pass, one per update.

What is compiled, and what it takes to compile with no graph break and few recompiles:

- **the pass** (forward, per-sample loss, weighted sum; AOTAutograd compiles its backward): each
  row's client is a tensor (``Rows.slot``), not Python ints, so the adapter layers and heads gather
  their clients' tensors per row (``ClientAdapters`` / ``RowLinear`` in gathered mode) and nothing
  in the graph depends on which clients a pass holds; the dropout masks are drawn inside the graph by
  torch's generator (:class:`TorchMasks`: per pass, the distribution of ``train.dropout_masks =
  "fast"``), seeded before each pass, so the run is reproducible; shapes are dynamic from the first
  graph, so a run compiles a few graphs, not one per pass; rows are padded to multiples of 8
  (:func:`bucketed`, padding rows weigh 0), and under CUDA graphs ("reduce-overhead", one
  recording per shape) the width to multiples of 16;
- **the update**: AdamW or SGD (momentum, weight decay) on every tensor's entries as one flat vector
  (:func:`adamw_update`, :func:`sgd_update`), learning rates and step counts as vectors, so a new
  round's (or group's) tensors and a scheduled learning rate reuse the compiled graph; they compute
  what ``torch.optim.AdamW`` / ``SGD`` compute (the parity tests say so).

Gradient clipping and FedProx/SCAFFOLD corrections stay eager between the two (per client, small).
``mode``: "inductor" (code generation), "reduce-overhead" (inductor + CUDA graphs: the host-bound
GPU engine's lever), "aot_eager" (Dynamo and AOTAutograd without code generation: fast to check),
"eager" (the same functions, not compiled: the reference the parity tests compare with).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from rolora.llm.adapter_layer import Rows
from rolora.llm.tasks import IGNORE, finite_weighted_sum, loss

ROW_BUCKET = 8
"""A compiled pass's rows are padded up to a multiple of this (padding rows weigh 0). Inductor's CPU
code for the pass crashed the process (heap corruption, torch 2.13) when the row count was free; with
rows in multiples of 8 it runs and equals eager (tests/test_llm_compiled_step.py)."""
WIDTH_BUCKET = 16
"""Under CUDA graphs (:data:`WIDTH_BUCKETED_MODES`) a pass's width (tokens) is padded up to a
multiple of this (padding tokens masked): they replay fixed shapes, one recording per shape."""
WIDTH_BUCKETED_MODES = {"reduce-overhead"}
"""Elsewhere the graph's shapes are dynamic, and padding the width would only cost (~25 % more
tokens on a CPU with both buckets)."""


def compile_options(mode: str, device_type: str = "cpu") -> dict | None:
    """``torch.compile`` keyword arguments for a ``train.compile`` mode (None: "eager", not compiled).
    On a CPU, inductor's dropout draws its random numbers through ATen's generator
    (``fallback_random``): inductor's own CPU code draws them one Philox call per element, a third of
    a compiled round (20 MiniLM clients × 2 steps, one thread: 30.2 s, against 25.5 s with ATen's
    draws and 20.8 s with no dropout at all; BENCHMARKS "The client step compiled"). The masks are then
    the uncompiled ("eager") mode's, so the two are comparable number for number. On CUDA inductor's
    own draws are fused and cheap, and kernel launches are what counts: they stay."""
    if mode == "eager":
        return None
    if mode == "aot_eager":
        return {"backend": "aot_eager"}
    if mode == "inductor":
        if device_type == "cpu":
            return {"backend": "inductor", "options": {"fallback_random": True}}
        return {"backend": "inductor"}
    if mode == "reduce-overhead":
        return {"backend": "inductor", "mode": "reduce-overhead"}
    raise ValueError(f"train.compile: unknown mode {mode!r} (inductor, reduce-overhead, aot_eager, eager)")


def maybe_compiled(fn, mode: str, device_type: str = "cpu", **kwargs):
    """``fn`` under ``torch.compile`` as ``mode`` says (``fullgraph``: a graph break raises), or ``fn``."""
    options = compile_options(mode, device_type)
    return fn if options is None else torch.compile(fn, fullgraph=True, **kwargs, **options)


class TorchMasks:
    """Dropout inside a compiled pass: ``F.dropout`` over the pass's tensor at every site (the
    interface of :class:`rolora.llm.pass_masks.PassMasks`), from torch's generator."""

    run_long = True  # one object for the run: the dropout forwards routed to it stay the same objects

    def begin_step(self, batches) -> None:
        pass

    def begin_chunk(self, rows) -> None:
        pass

    def tokens(self, x: Tensor, p: float) -> Tensor:
        return F.dropout(x, p, training=True)

    def attention(self, weights: Tensor, p: float) -> Tensor:
        return F.dropout(weights, p, training=True)

    def lora(self, x: Tensor, p: float, backend: str) -> Tensor:
        return F.dropout(x, p, training=True)


def bucketed(tensors: dict[str, Tensor], slot: Tensor, pad_id: int,
             width_bucket: int = 1) -> tuple[dict[str, Tensor], Tensor, int]:
    """(tensors, slot) padded to a multiple of :data:`ROW_BUCKET` rows and of ``width_bucket``
    tokens, and the number of real rows. Padding rows repeat the last row (weighted 0 by the
    caller); padding tokens are masked (labels ``IGNORE``), so real rows compute what they computed
    unpadded."""
    rows, width = tensors["input_ids"].shape
    extra_rows, extra_width = -rows % ROW_BUCKET, -width % width_bucket
    fill = {"input_ids": pad_id, "attention_mask": 0, "token_type_ids": 0, "labels": IGNORE}
    out = {}
    for key, x in tensors.items():
        if x.dim() == 2 and x.shape[1] == width and extra_width:  # per token: pad the width
            x = F.pad(x, (0, extra_width), value=fill[key])
        out[key] = torch.cat([x, x[-1:].expand(extra_rows, *x.shape[1:])]) if extra_rows else x
    slot = torch.cat([slot, slot[-1:].expand(extra_rows)]) if extra_rows else slot
    return out, slot, rows


class CompiledPass:
    """The run's compiled pass: :meth:`run` -> (per-sample losses of the real rows, detached; Σ finite
    loss·weight to call ``backward`` on; the padded width). Made once per model (:meth:`of`), so every
    group and round reuses its graphs (``fullgraph``: a graph break raises); its ``rows`` and ``streams`` are
    what the groups' layers read."""

    def __init__(self, model, task: str, pad_id: int, mode: str) -> None:
        self.model, self.task, self.pad_id = model, task, pad_id
        self.rows, self.streams = Rows(), TorchMasks()
        self.width_bucket = WIDTH_BUCKET if mode in WIDTH_BUCKETED_MODES else 1
        device_type = next(model.parameters()).device.type
        self.compiled = maybe_compiled(self._pass, mode, device_type, dynamic=None)

    @classmethod
    def of(cls, model, task: str, pad_id: int, mode: str) -> CompiledPass:
        """The model's compiled pass for these settings, made at the first call and kept on the model:
        each round's trainer (made per round) reuses its graphs (a new object would be guarded apart)."""
        key = (task, pad_id, mode)
        held = model.__dict__.get("_rolora_compiled_pass")
        if held is None or held[0] != key:
            held = (key, cls(model, task, pad_id, mode))
            model.__dict__["_rolora_compiled_pass"] = held
        return held[1]

    def _pass(self, tensors: dict[str, Tensor], slot: Tensor, weights: Tensor) -> tuple[Tensor, Tensor]:
        self.rows.slot = slot
        per_sample = loss(self.model, tensors, self.task)
        return per_sample.detach(), finite_weighted_sum(per_sample, weights)

    def run(self, tensors: dict[str, Tensor], slot: Tensor, weights: Tensor, device) -> tuple[Tensor, Tensor, int]:
        tensors, slot, real = bucketed(tensors, slot, self.pad_id, self.width_bucket)
        weights = F.pad(weights, (0, slot.shape[0] - real))  # padding rows weigh 0
        tensors = {k: x.to(device) for k, x in tensors.items()}
        slot, weights = slot.to(device), weights.to(device)
        for x in (*tensors.values(), slot, weights):  # rows and width vary: dynamic from the first graph
            torch._dynamo.maybe_mark_dynamic(x, 0)
            if x.dim() == 2:
                torch._dynamo.maybe_mark_dynamic(x, 1)
        try:
            per_sample, total = self.compiled(tensors, slot, weights)
        finally:
            self.rows.slot = None
        return per_sample[:real], total, tensors["input_ids"].shape[1]


# --------------------------------------------------------------------------------- the update
def adamw_update(p: Tensor, g: Tensor, m: Tensor, v: Tensor, steps: Tensor, lr: Tensor, live: Tensor,
                 beta1: float, beta2: float, eps: float, weight_decay: float) -> None:
    """``torch.optim.AdamW``'s step (no amsgrad) on flat vectors, in place; entries where ``live`` is
    False (a tensor without gradient this step) keep their value, moments and step count."""
    t = steps + live.to(steps.dtype)
    new_m = m.lerp(g, 1.0 - beta1)
    new_v = v * beta2 + (1.0 - beta2) * g * g
    denom = (new_v.sqrt() / (1.0 - beta2 ** t).sqrt()) + eps
    new_p = p * (1.0 - lr * weight_decay) - (lr / (1.0 - beta1 ** t)) * new_m / denom
    p.copy_(torch.where(live, new_p, p))
    m.copy_(torch.where(live, new_m, m))
    v.copy_(torch.where(live, new_v, v))
    steps.copy_(t)


def sgd_update(p: Tensor, g: Tensor, buf: Tensor, lr: Tensor, live: Tensor, momentum: float,
               weight_decay: float) -> None:
    """``torch.optim.SGD``'s step (dampening 0, no Nesterov) on flat vectors, in place; the buffer
    starts at zero (the first step's momentum·0 + d is torch's clone of d); ``live`` as above."""
    d = g + weight_decay * p
    if momentum != 0.0:
        d = momentum * buf + d
        buf.copy_(torch.where(live, d, buf))
    p.copy_(torch.where(live, p - lr * d, p))


_COMPILED: dict[tuple[str, str], object] = {}


def _update(name: str, mode: str):
    """One compiled function per update rule and mode for the process: new tensors reuse it."""
    if (name, mode) not in _COMPILED:
        fn = {"adamw": adamw_update, "sgd": sgd_update}[name]
        _COMPILED[(name, mode)] = maybe_compiled(fn, mode, dynamic=False)
    return _COMPILED[(name, mode)]


class CompiledOptimizer:
    """AdamW or SGD over param groups (``[{"params": [...], "lr": x}]``), the update compiled.

    The update runs on flat vectors (every tensor's entries one after another: one small graph
    whatever the number of tensors; a graph over a per-tensor list of a 20-client group took minutes
    to compile), gathered before and copied back after. As ``torch.optim``: a tensor whose ``grad``
    is None is skipped (its state does not advance), ``zero_grad`` sets gradients to None."""

    def __init__(self, groups: list[dict], kind: str, mode: str, weight_decay: float = 0.0,
                 momentum: float = 0.0, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8) -> None:
        if kind not in ("adamw", "sgd"):
            raise ValueError(f"train.compile: the compiled update is adamw or sgd, not {kind!r}")
        self.kind, self.update = kind, _update(kind, mode)
        self.weight_decay, self.momentum, self.betas, self.eps = weight_decay, momentum, betas, eps
        self.params = [p for g in groups for p in g["params"]]
        kinds = {(p.dtype, p.device) for p in self.params}
        if len(kinds) != 1:
            raise ValueError(f"train.compile: the compiled update needs one dtype and device, got {sorted(map(str, kinds))}")
        dtype, device = next(iter(kinds))
        self.sizes = [p.numel() for p in self.params]
        self.lr = torch.cat([torch.full((p.numel(),), float(g["lr"]), dtype=dtype, device=device)
                             for g in groups for p in g["params"]])
        total = sum(self.sizes)
        self.state = [torch.zeros(total, dtype=dtype, device=device) for _ in range(2 if kind == "adamw" else 1)]
        self.steps = torch.zeros(total, dtype=dtype, device=device)
        self.all_live = torch.ones(total, dtype=torch.bool, device=device)

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        flags = [p.grad is not None for p in self.params]
        if not any(flags):
            return
        device = self.all_live.device
        live = self.all_live if all(flags) else torch.repeat_interleave(
            torch.tensor(flags, device=device), torch.tensor(self.sizes, device=device))
        g = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in self.params])
        flat = torch.cat([p.reshape(-1) for p in self.params])
        if self.kind == "adamw":
            self.update(flat, g, *self.state, self.steps, self.lr, live, self.betas[0], self.betas[1], self.eps,
                        self.weight_decay)
        else:
            self.update(flat, g, self.state[0], self.lr, live, self.momentum, self.weight_decay)
        torch._foreach_copy_(self.params, [x.view_as(p) for x, p in zip(flat.split(self.sizes), self.params)])
