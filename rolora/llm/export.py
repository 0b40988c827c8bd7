"""Export a client's (or the global) model in PEFT's adapter format, or as a merged HF folder.

``export_peft`` writes ``adapter_config.json`` + ``adapter_model.safetensors`` such that
``peft.PeftModel.from_pretrained(base, out_dir)`` computes what our model computes with the same
tensors. What PEFT can express, per kind of method:

- plain LoRA (``A``, ``B``: FedAvg-LoRA, RoLoRA, FFA-LoRA, FedSA, FlexLoRA, LoRA-FAIR, ...): as is.
- Fed-ALoRA: the client's delta s·(B_base + B2·B1)·M·A is a rank-r LoRA with
  B' = (B_base + B2·B1)·M and A' = A.
- FedEx-LoRA / FLoRA (a ``base`` added to W0): the LoRA as above, plus, when any ``base`` is
  non-zero, the merged base model (W0 + base in the adapted layers, the head included) as a full
  HF folder ``out_dir/base_model``; ``adapter_config.json``'s ``base_model_name_or_path`` points to it.
  Load it as ``PeftModel.from_pretrained(AutoModelFor...from_pretrained(out_dir / "base_model"), out_dir)``:
  the adapter on the original base alone would miss the merged part.
- full-rank FedAvg (``W``): refused, since a dense d×n update is not a LoRA; :func:`export_merged`
  writes W0 + W (any method's W0 + delta, in fact) as a plain Hugging Face model folder instead.

The classification head goes into PEFT's ``modules_to_save`` (``classifier``), saved under PEFT's
keys ``base_model.model.classifier.*``. Every export is written to a temporary folder next to
``out_dir`` and renamed into place: a failed export leaves no partial folder.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections import Counter
from pathlib import Path

import torch
from torch import Tensor, nn

from rolora.federated import LayerTensors, Method, ModelTensors
from rolora.llm.adapter_layer import FederatedLinear
from rolora.llm.adapters import check_head, check_layers, read_head
from rolora.llm.models import model_family

ALORA_NAMES = frozenset({"A", "M", "B1", "B2", "B_base"})
LORA_NAMES = (frozenset({"A", "B"}), frozenset({"A", "B", "base"}))
PEFT_TASK = {"bert": "SEQ_CLS", "roberta": "SEQ_CLS", "llama": "CAUSAL_LM"}
MERGED_BASE = "base_model"
PEFT_PREFIX = "base_model.model."
"""PEFT's saved keys name modules by their path in the base model behind this prefix."""


def peft_key(module_path: str, factor: str) -> str:
    """PEFT's saved key for factor "A" (r×in) or "B" (out×r) of the LoRA layer at ``module_path``."""
    if factor not in ("A", "B"):
        raise ValueError(f"factor must be 'A' or 'B', got {factor!r}")
    return f"{PEFT_PREFIX}{module_path}.lora_{factor}.weight"


def factorise(layer: str, tensors: LayerTensors, method: Method) -> tuple[Tensor, Tensor, Tensor | None]:
    """(A', B', base or None) of a layer's tensors, in their own dtype (see the module docstring)."""
    names = frozenset(tensors)
    if "W" in names:
        raise ValueError(f"layer {layer!r}: {method.name} trains a full-rank d×n update W, which is not a LoRA "
                         "and PEFT cannot load it as an adapter; use rolora.llm.export.export_merged to save "
                         "W0 + W as a plain Hugging Face model")
    if names in LORA_NAMES:
        return tensors["A"], tensors["B"], tensors.get("base")
    if names == ALORA_NAMES:
        return tensors["A"], (tensors["B_base"] + tensors["B2"] @ tensors["B1"]) @ tensors["M"], None
    raise ValueError(f"layer {layer!r}: cannot express {method.name}'s tensors {sorted(names)} as a LoRA "
                     "(known: A/B, A/B/base, Fed-ALoRA's A/M/B1/B2/B_base)")


def lora_factors(layer: str, tensors: LayerTensors, method: Method, alpha: float) -> tuple[Tensor, Tensor, Tensor | None]:
    """(A', B', base or None) with base + (alpha/r)·B'·A' = ``method.delta(tensors, alpha)``, checked
    in float64 (so a method with its own delta is never exported wrongly)."""
    with torch.no_grad():
        a, b, base = factorise(layer, tensors, method)
        a64, b64, base64 = factorise(layer, {k: v.double() for k, v in tensors.items()}, method)
        ours = (alpha / a64.shape[0]) * (b64 @ a64) + (0 if base64 is None else base64)
        want = method.delta({k: v.double() for k, v in tensors.items()}, alpha)
        if not torch.allclose(ours, want, rtol=1e-9, atol=1e-12 * (1 + want.abs().max().item())):
            raise ValueError(f"layer {layer!r}: {method.name}'s delta is not base + s·B·A of its tensors "
                             "(the method defines its own delta): cannot export it as a LoRA")
    return a.detach(), b.detach(), None if base is None else base.detach()


@contextlib.contextmanager
def atomic_folder(out_dir: str | Path, overwrite: bool):
    """Yield a temporary folder beside ``out_dir`` and rename it to ``out_dir`` once it is complete."""
    out = Path(out_dir).expanduser().absolute()
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists (pass overwrite=True to replace it)")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        yield tmp
        if out.exists():  # overwrite: move the old one aside first, so a crash never loses both
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            os.rename(out, old / "x")
            os.rename(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def resolve_head(model: nn.Module, head: dict[str, Tensor] | None) -> dict[str, Tensor]:
    """The head to export: ``head`` (checked against the model's) or, if None, the model's current one."""
    if head is None:
        return read_head(model)
    check_head(model, head)
    return {k: v.detach() for k, v in head.items()}


def save_merged_model(model: nn.Module, adapters: dict[str, FederatedLinear], weights: dict[str, Tensor],
                      head: dict[str, Tensor], folder: Path) -> None:
    """``model.save_pretrained`` with the adapted layers' weights replaced by ``weights`` and the head
    by ``head``, without touching the (shared) model: its client tensors are left out."""
    client_keys = {f"{name}.tensors.{k}" for name, m in adapters.items() for k in m.tensors}
    state = {k: v for k, v in model.state_dict().items() if k not in client_keys}
    for name, w in weights.items():
        state[f"{name}.weight"] = w.to(adapters[name].weight.dtype)
    for key, value in head.items():
        state[key] = value.to(state[key].dtype)
    model.save_pretrained(str(folder), state_dict=state)


def export_merged(model: nn.Module, adapters: dict[str, FederatedLinear], tensors: ModelTensors,
                  head: dict[str, Tensor] | None, method: Method, alpha: float, out_dir: str | Path, *,
                  tokenizer=None, overwrite: bool = False) -> Path:
    """Write W0 + ``method.delta`` (any method, full-rank included) as a plain HF model folder."""
    check_layers(adapters, tensors)
    head = resolve_head(model, head)
    with torch.no_grad():
        weights = {name: m.weight.detach() + method.delta(tensors[name], alpha).to(m.weight.dtype)
                   for name, m in adapters.items()}
    with atomic_folder(out_dir, overwrite) as tmp:
        save_merged_model(model, adapters, weights, head, tmp)
        if tokenizer is not None:
            tokenizer.save_pretrained(str(tmp))
    return Path(out_dir).expanduser().absolute()


def peft_config(model: nn.Module, adapters: dict[str, FederatedLinear], ranks: dict[str, int], alpha: float,
                base_name_or_path: str | None, head: dict[str, Tensor]):
    """PEFT's ``LoraConfig`` for these layers: full module names, one rank plus a pattern for the others."""
    from peft import LoraConfig

    rank = Counter(ranks.values()).most_common(1)[0][0]
    dropouts = {m.dropout for m in adapters.values()}
    return LoraConfig(
        r=rank, lora_alpha=alpha, target_modules=list(adapters), lora_dropout=max(dropouts), bias="none",
        rank_pattern={name: r for name, r in ranks.items() if r != rank},
        modules_to_save=["classifier"] if head else None, task_type=PEFT_TASK[model_family(model)],
        base_model_name_or_path=base_name_or_path, inference_mode=True,
    )


def export_peft(model: nn.Module, adapters: dict[str, FederatedLinear], tensors: ModelTensors,
                head: dict[str, Tensor] | None, method: Method, alpha: float, out_dir: str | Path, *,
                base_name_or_path: str | None = None, overwrite: bool = False) -> Path:
    """Write ``tensors`` (one client's, or the global ones) as a PEFT LoRA adapter in ``out_dir``.

    ``head``: the classification head to save in ``modules_to_save`` (None: the model's current
    head; always saved for classifiers, since a new base would draw its own random head). See the
    module docstring for what each method exports; raises ValueError (writing nothing) for
    full-rank FedAvg and for tensors PEFT cannot express.
    """
    from safetensors.torch import save_file

    check_layers(adapters, tensors)
    head = resolve_head(model, head)
    factors = {name: lora_factors(name, tensors[name], method, alpha) for name in adapters}
    merged = {name: adapters[name].weight.detach() + base.to(adapters[name].weight.dtype)
              for name, (_, _, base) in factors.items() if base is not None and bool(base.any())}
    out = Path(out_dir).expanduser().absolute()
    if merged:
        base_name_or_path = str(out / MERGED_BASE)
    state = {}
    for name, (a, b, _) in factors.items():
        state[peft_key(name, "A")] = a.contiguous().clone()
        state[peft_key(name, "B")] = b.contiguous().clone()
    for key, value in head.items():  # PEFT's saved key for modules_to_save drops the adapter wrapper
        state[f"{PEFT_PREFIX}{key}"] = value.contiguous().clone()
    config = peft_config(model, adapters, {n: a.shape[0] for n, (a, _, _) in factors.items()}, alpha,
                         base_name_or_path, head)
    with atomic_folder(out, overwrite) as tmp:
        config.save_pretrained(str(tmp))
        save_file(state, str(tmp / "adapter_model.safetensors"), metadata={"format": "pt"})
        if merged:
            weights = {name: merged.get(name, m.weight.detach()) for name, m in adapters.items()}
            save_merged_model(model, adapters, weights, head, tmp / MERGED_BASE)
        (tmp / "rolora_export.json").write_text(json.dumps(
            {"method": method.name, "alpha": alpha, "merged_base": MERGED_BASE if merged else None}, indent=2))
    return out
