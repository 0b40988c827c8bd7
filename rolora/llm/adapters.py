"""Put federated adapters into a frozen HF model, and move clients' tensors in and out of it.

.. code-block:: python

    adapters = attach(model, Targets(modules=("query", "value"), layers=(-2, -1)))
    state = method.init(layer_specs(adapters), ranks=8, alpha=16.0, seed=0)
    params = load_tensors(adapters, method.client_start(state, k, None, t), method.trains(t), method, 16.0)
    params += load_head(model, head, trainable=True)
    ...                                        # the caller's optimiser steps ``params``
    upload = read_tensors(adapters), read_head(model)

The base model is never copied: memory is ``frozen_bytes(model)`` once, plus ``adapter_bytes`` for
the client currently loaded. Many clients train in one pass through ``client_adapters`` +
``rows_forward`` and ``ClientHeads`` (each batch row uses its own client's adapters and head; the
layer itself is :mod:`rolora.llm.adapter_layer`). Averaging (of adapters and of the head) is
rolora.federated's job.
"""

from __future__ import annotations

import math
import re
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rolora.federated import LayerSpec, Method, ModelTensors
from rolora.llm.adapter_layer import ClientAdapters, FederatedLinear, NotBatchable, Rows, per_row, tensor_bytes
from rolora.llm.client_streams import ClientStreams
from rolora.llm.models import default_targets, model_family
from rolora.llm.pass_masks import PassMasks

BLOCK_INDEX = re.compile(r"(?:^|\.)(?:encoder\.layer|layers)\.(\d+)\.")
"""The transformer block a module sits in: ``bert.encoder.layer.3.`` / ``model.layers.3.``."""


@dataclass(frozen=True)
class Targets:
    """Which Linear modules get adapters.

    ``modules``: short module names (``"query"``) or dotted suffixes (``"attention.self.query"``),
    matched like PEFT's ``target_modules``; None = the family's default (:func:`default_targets`).
    ``layers``: transformer block indices, negative ones counted from the top ((-2, -1) = the last
    two); None = all blocks. Adapters only go inside transformer blocks (the head trains whole).
    """

    modules: tuple[str, ...] | None = None
    layers: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if isinstance(self.modules, str):
            object.__setattr__(self, "modules", (self.modules,))
        if self.modules is not None:
            object.__setattr__(self, "modules", tuple(self.modules))
            if not self.modules or not all(isinstance(m, str) and m for m in self.modules):
                raise ValueError(f"Targets.modules must be non-empty module names, got {self.modules!r}")
        if self.layers is not None:
            object.__setattr__(self, "layers", tuple(self.layers))
            if not self.layers or not all(isinstance(i, int) and not isinstance(i, bool) for i in self.layers):
                raise ValueError(f"Targets.layers must be non-empty block indices (ints), got {self.layers!r}")


def block_of(name: str) -> int | None:
    """Index of the transformer block holding module ``name`` (None outside the blocks)."""
    match = BLOCK_INDEX.search(name)
    return None if match is None else int(match.group(1))


def resolve_layers(layers: tuple[int, ...] | None, num_blocks: int) -> set[int]:
    """Block indices as non-negative ints; ValueError naming the number of blocks if out of range."""
    if layers is None:
        return set(range(num_blocks))
    bad = [i for i in layers if not -num_blocks <= i < num_blocks]
    if bad:
        raise ValueError(f"layers {bad} out of range: the model has {num_blocks} transformer blocks "
                         f"(indices 0..{num_blocks - 1} or -{num_blocks}..-1)")
    return {i % num_blocks for i in layers}


def matches(name: str, target: str) -> bool:
    """PEFT's rule: the module's name is ``target`` or ends with ``"." + target``."""
    return name == target or name.endswith("." + target)


def no_match_error(model: nn.Module, missing: list[str]) -> ValueError:
    linears = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    in_blocks = [n for n in linears if block_of(n) is not None]
    short = sorted({n.rsplit(".", 1)[-1] for n in in_blocks})
    return ValueError(f"target modules {missing} match no nn.Linear inside the transformer blocks; the "
                      f"model's Linear modules there are {short} (e.g. {in_blocks[:3]}); "
                      f"outside the blocks: {[n for n in linears if block_of(n) is None][:4]}")


def attach(model: nn.Module, targets: Targets = Targets(), *, dropout: float = 0.0, backend: str = "auto",
           adapter_dtype: torch.dtype = torch.float32) -> dict[str, FederatedLinear]:
    """Replace the targeted ``nn.Linear`` modules by :class:`FederatedLinear`, in place.

    Returns fully-qualified module name -> module, in model order; those names are the federated
    layer names. Everything is checked before anything is replaced (bad input leaves the model as
    it was). The wrapped layers' weight and bias are frozen; other parameters are left as they are.
    """
    family = model_family(model)
    if any(isinstance(m, FederatedLinear) for m in model.modules()):
        raise ValueError("the model already has federated adapters attached")
    names = targets.modules if targets.modules is not None else default_targets(family)
    blocks = resolve_layers(targets.layers, model.config.num_hidden_layers)
    in_blocks = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear) and block_of(n) is not None]
    missing = [t for t in names if not any(matches(n, t) for n, _ in in_blocks)]
    if missing:
        raise no_match_error(model, missing)
    chosen = [(n, m) for n, m in in_blocks if block_of(n) in blocks and any(matches(n, t) for t in names)]
    adapters = {n: FederatedLinear(m, n, dropout=dropout, backend=backend, adapter_dtype=adapter_dtype).train(m.training)
                for n, m in chosen}  # built (and validated) before the model is touched; same train/eval mode
    for name, module in adapters.items():
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, child, module)
    return adapters


def layer_specs(adapters: dict[str, FederatedLinear]) -> dict[str, LayerSpec]:
    """Layer name -> ``LayerSpec(out_features, in_features)``, for ``method.init``."""
    return {name: LayerSpec(m.out_features, m.in_features) for name, m in adapters.items()}


def check_layers(adapters: dict[str, FederatedLinear], tensors: ModelTensors) -> None:
    """ValueError naming the missing and unknown layers unless ``tensors`` has exactly the adapted ones."""
    missing, extra = sorted(set(adapters) - set(tensors)), sorted(set(tensors) - set(adapters))
    if missing or extra:
        raise ValueError(f"tensors do not match the adapted layers: missing layers {missing[:4]}, "
                         f"unknown layers {extra[:4]} ({len(adapters)} adapted layers, e.g. {list(adapters)[:2]})")


def load_tensors(adapters: dict[str, FederatedLinear], tensors: ModelTensors, trainable: frozenset[str],
                 method: Method, alpha: float) -> list[nn.Parameter]:
    """Load one client's tensors (copied into fresh Parameters, adapter dtype); return those that train.

    ``requires_grad`` is set iff a tensor's name is in ``trainable`` (``method.trains(t)``). Every
    layer is checked before any is loaded: a missing or extra layer, a bad shape or a tensor set
    the method cannot use raises a ValueError naming it, and leaves the adapters as they were.
    """
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not math.isfinite(alpha) or alpha <= 0:
        raise ValueError(f"alpha must be a positive finite number, got {alpha!r}")
    trainable = frozenset(trainable)
    check_layers(adapters, tensors)
    for name, module in adapters.items():
        module.check(tensors[name], trainable, method, alpha)
    return [p for name, module in adapters.items() for p in module.install(tensors[name], trainable, method, alpha)]


def read_tensors(adapters: dict[str, FederatedLinear]) -> ModelTensors:
    """Detached clones of every layer's current tensors."""
    return {name: module.read() for name, module in adapters.items()}


# --------------------------------------------------------------------------------- many clients at once
def client_adapters(adapters: dict[str, FederatedLinear], starts_tensors: list[ModelTensors], trainable,
                    method: Method, alpha: float, rows: Rows, streams: ClientStreams | PassMasks) -> dict[str, ClientAdapters]:
    """Every adapted layer's :class:`ClientAdapters`: many clients' tensors at once (each client's
    checked first, as :func:`load_tensors` checks one); NotBatchable if they cannot share a pass."""
    for tensors in starts_tensors:
        check_layers(adapters, tensors)
    return {name: ClientAdapters(module, [t[name] for t in starts_tensors], frozenset(trainable), method, alpha,
                                 rows, streams) for name, module in adapters.items()}


@contextmanager
def rows_forward(adapters: dict[str, FederatedLinear], layers: dict[str, ClientAdapters]):
    """Every adapted layer computes with its :class:`ClientAdapters` (``layer.clients``) for the duration."""
    try:
        for name, module in adapters.items():
            module.clients = layers[name]
        yield
    finally:
        for module in adapters.values():
            module.clients = None


# --------------------------------------------------------------------------------- classification head
def head_parameters(model: nn.Module) -> dict[str, nn.Parameter]:
    """The classification head's parameters by model key (``classifier.*``); empty for causal LMs."""
    if model_family(model) == "llama" or not isinstance(getattr(model, "classifier", None), nn.Module):
        return {}
    return {f"classifier.{n}": p for n, p in model.classifier.named_parameters()}


def check_head(model: nn.Module, tensors: dict[str, Tensor]) -> dict[str, nn.Parameter]:
    """The head's parameters; ValueError naming the key unless ``tensors`` has exactly their keys and shapes."""
    params = head_parameters(model)
    missing, extra = sorted(set(params) - set(tensors)), sorted(set(tensors) - set(params))
    if missing or extra:
        raise ValueError(f"head tensors do not match the model's head {sorted(params)}: "
                         f"missing {missing}, unknown {extra}")
    for key, p in params.items():
        if not isinstance(tensors[key], Tensor) or tuple(tensors[key].shape) != tuple(p.shape):
            raise ValueError(f"head tensor {key!r} has shape {tuple(getattr(tensors[key], 'shape', ()))}, "
                             f"the model's is {tuple(p.shape)}")
    return params


def load_head(model: nn.Module, tensors: dict[str, Tensor], trainable: bool) -> list[nn.Parameter]:
    """Copy a client's head into the model's head (in place); return its parameters if ``trainable``."""
    params = check_head(model, tensors)
    with torch.no_grad():
        for key, p in params.items():
            p.copy_(tensors[key])
            p.requires_grad_(bool(trainable))
    return list(params.values()) if trainable else []


def read_head(model: nn.Module) -> dict[str, Tensor]:
    """Detached clones of the head's parameters (empty for causal LMs)."""
    return {key: p.detach().clone() for key, p in head_parameters(model).items()}


class RowLinear(nn.Module):
    """A head ``nn.Linear`` with one weight (and bias) per client slot, each row using its client's."""

    def __init__(self, weights: list[nn.Parameter], biases: list[nn.Parameter] | None, rows: Rows) -> None:
        super().__init__()
        self.weights, self.biases, self.rows = weights, biases, rows

    def forward(self, x: Tensor) -> Tensor:
        if self.rows.slot is not None:  # gathered mode (a compiled pass): each row's client's weight
            slot = self.rows.slot
            y = per_row(x, torch.stack(self.weights).to(x.dtype).index_select(0, slot))
            if self.biases is None:
                return y
            bias = torch.stack(self.biases).to(x.dtype).index_select(0, slot)
            return y + bias.view(bias.shape[0], *[1] * (x.dim() - 2), bias.shape[1])
        return torch.cat([F.linear(x[a:b], self.weights[slot].to(x.dtype),
                                   None if self.biases is None else self.biases[slot].to(x.dtype))
                          for slot, a, b in self.rows.segments])


class ClientHeads:
    """The classification head's tensors for every client slot (fp32 masters), as ``RowLinear``s."""

    def __init__(self, model: nn.Module, heads: list[dict[str, Tensor]], rows: Rows) -> None:
        own = head_parameters(model)
        linears = {f"classifier{'.' + n if n else ''}": m for n, m in model.classifier.named_modules()
                   if isinstance(m, nn.Linear)}
        covered = {f"{name}.{p}" for name, m in linears.items() for p, _ in m.named_parameters(recurse=False)}
        if covered != set(own):
            raise NotBatchable(f"head parameters {sorted(set(own) - covered)} are not in Linear modules")
        for head in heads:
            check_head(model, head)
        device = next(iter(own.values())).device
        self.params = [{k: nn.Parameter(v.detach().to(device=device, dtype=torch.float32, copy=True))
                        for k, v in head.items()} for head in heads]
        self.dtypes = {k: v.dtype for k, v in heads[0].items()}
        self.model, self.linears = model, linears
        self.modules = {name: RowLinear([p[f"{name}.weight"] for p in self.params],
                                        None if m.bias is None else [p[f"{name}.bias"] for p in self.params], rows)
                        for name, m in linears.items()}

    def trainable(self, slot: int) -> list[nn.Parameter]:
        return list(self.params[slot].values())

    def read(self, slot: int) -> dict[str, Tensor]:
        return {k: p.detach().to(self.dtypes[k]).clone() for k, p in self.params[slot].items()}

    @contextmanager
    def installed(self):
        """The model's head Linears replaced by the per-client ones for the duration."""
        try:
            for name, module in self.modules.items():
                _set_module(self.model, name, module)
            yield
        finally:
            for name, module in self.linears.items():
                _set_module(self.model, name, module)


def _set_module(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, module)


# --------------------------------------------------------------------------------- memory
def adapter_bytes(adapters: dict[str, FederatedLinear]) -> int:
    """Bytes of the loaded client's state: its tensors, plus W0 + base where a base is loaded."""
    return sum(tensor_bytes(list(m.tensors.values()) + [m.merged_weight]) for m in adapters.values())


def frozen_bytes(model: nn.Module) -> int:
    """Bytes of the shared base: every parameter and buffer (each storage once) but client state."""
    client = {id(t) for m in model.modules() if isinstance(m, FederatedLinear)
              for t in [*m.tensors.values(), m.merged_weight] if t is not None}
    seen: dict[int, int] = {}
    for t in [*model.parameters(), *model.buffers()]:
        if id(t) not in client:
            seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
    return sum(seen.values())
