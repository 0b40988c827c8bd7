"""The frozen prefix: the blocks below the lowest adapted one, which never change during a run.

When LoRA adapts only the top blocks (``lora.layers = [-2, -1]``, the paper's fewer-parameters
setting), the embeddings and every block below the lowest adapted one are frozen for the whole run,
and nothing below them trains: their output for a sample is the same every step and every round,
provided their dropout is off. ``train.frozen_prefix`` (BERT/RoBERTa encoders):

- ``off`` (default): the model as it is (dropout everywhere, the prefix recomputed every pass).
- ``no-dropout``: the prefix's dropouts are set to 0 for the run (embedding, attention and hidden
  dropout below the lowest adapted block); still recomputed every pass. The reference of ``cache``.
- ``cache``: as ``no-dropout``, and the prefix's output for every training sample is computed once,
  at set-up (in the base's dtype: tokens × hidden × 2 bytes in bf16; Rotten Tomatoes on MiniLM,
  11,752 sentences: 233 MiB, built in ~63 s on one CPU core), then every training pass starts at the
  lowest adapted block. Evaluation runs the whole
  model. The same numbers as ``no-dropout`` (a test); the prefix's forward is saved, and its backward
  was never run (nothing below the adapters requires a gradient).

A cached row is found by its token ids (trailing padding stripped), so a pass's rows need no index.
"""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import torch
from torch import nn

from rolora.llm.adapters import BLOCK_INDEX
from rolora.llm.tasks import Encoded, batch

MODES = ("off", "no-dropout", "cache")


class _Stop(Exception):
    """Raised by the hook on the last prefix block: the rest of the forward is not needed."""


def first_adapted_block(adapter_names) -> int:
    """The lowest block index holding an adapter (names like ``bert.encoder.layer.4.attention...``)."""
    blocks = [int(m.group(1)) for name in adapter_names if (m := BLOCK_INDEX.search(name))]
    if not blocks:
        raise ValueError("train.frozen_prefix: no adapter sits in a numbered transformer block")
    return min(blocks)


def encoder_parts(model: nn.Module) -> tuple[nn.Module, nn.Module, nn.ModuleList]:
    """(the base model, its embeddings, its block list) of a BERT/RoBERTa model."""
    base = getattr(model, "base_model", model)
    encoder = getattr(base, "encoder", None)
    if not hasattr(base, "embeddings") or not isinstance(getattr(encoder, "layer", None), nn.ModuleList):
        raise ValueError(f"train.frozen_prefix needs a BERT/RoBERTa encoder (embeddings + encoder.layer), "
                         f"not {type(model).__name__}")
    return base, base.embeddings, encoder.layer


def prefix_dropout_off(model: nn.Module, first: int) -> None:
    """Set every dropout of the embeddings and of blocks [0, first) to 0 (attention dropout included:
    BERT's attention reads its ``nn.Dropout``'s p)."""
    _, embeddings, blocks = encoder_parts(model)
    for part in [embeddings, *blocks[:first]]:
        for m in part.modules():
            if isinstance(m, nn.Dropout):
                m.p = 0.0


def _key(ids: np.ndarray, types: np.ndarray | None, pad_id: int) -> bytes:
    n = len(ids)
    while n > 0 and ids[n - 1] == pad_id:
        n -= 1
    key = np.asarray(ids[:n], dtype=np.int64).tobytes()
    return key if types is None else key + b"|" + np.asarray(types[:n], dtype=np.int64).tobytes()


class PrefixCache:
    """The prefix's output (hidden states entering block ``first``) for every sample of ``encoded``."""

    def __init__(self, model: nn.Module, encoded: Encoded, first: int, batch_size: int = 64) -> None:
        if first < 1:
            raise ValueError("train.frozen_prefix = 'cache': the lowest adapted block is block 0, so there is "
                             "no frozen prefix to cache (adapt only the top blocks: lora.layers)")
        self.model, self.first, self.pad_id = model, first, encoded.pad_id
        _, self.embeddings, self.blocks = encoder_parts(model)
        self.rows: dict[bytes, torch.Tensor] = {}
        captured = []

        def hook(_module, _args, output):
            captured.append(output[0] if isinstance(output, tuple) else output)
            raise _Stop

        handle = self.blocks[first - 1].register_forward_hook(hook)
        was_training = model.training
        model.eval()
        device = next(model.parameters()).device
        try:
            with torch.no_grad():
                for start in range(0, len(encoded.input_ids), batch_size):
                    idx = np.arange(start, min(start + batch_size, len(encoded.input_ids)))
                    tensors = batch(encoded, idx)
                    inputs = {k: tensors[k].to(device) for k in ("input_ids", "attention_mask", "token_type_ids")
                              if k in tensors}
                    captured.clear()
                    try:
                        model(**inputs)
                    except _Stop:
                        pass
                    hidden, ids = captured[0], tensors["input_ids"].numpy()
                    types = tensors["token_type_ids"].numpy() if "token_type_ids" in tensors else None
                    lengths = tensors["attention_mask"].sum(1).tolist()
                    for b, n in enumerate(lengths):
                        key = _key(ids[b], None if types is None else types[b], self.pad_id)
                        self.rows[key] = hidden[b, :n].clone()
        finally:
            handle.remove()
            model.train(was_training)

    def nbytes(self) -> int:
        return sum(x.numel() * x.element_size() for x in self.rows.values())

    def lookup(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None) -> torch.Tensor:
        """[B, T, hidden]: each row's cached prefix output, zeros at padding (masked as keys above)."""
        ids = input_ids.cpu().numpy()
        types = None if token_type_ids is None else token_type_ids.cpu().numpy()
        first = next(iter(self.rows.values()))
        out = first.new_zeros(ids.shape[0], ids.shape[1], first.shape[-1])
        for b in range(ids.shape[0]):
            row = self.rows.get(_key(ids[b], None if types is None else types[b], self.pad_id))
            if row is None:
                raise KeyError(f"frozen-prefix cache: row {b} of the pass is not a training sample "
                               "(the cache covers the training set; evaluation runs uncached)")
            out[b, : row.shape[0]] = row
        return out

    @contextmanager
    def installed(self):
        """For the duration: the embeddings return the cached rows and only blocks [first, ...) run."""
        base, embeddings, blocks = encoder_parts(self.model)
        base.embeddings = _CachedEmbeddings(self)
        base.encoder.layer = nn.ModuleList(list(blocks)[self.first:])
        try:
            yield
        finally:
            base.embeddings = embeddings
            base.encoder.layer = blocks


class _CachedEmbeddings(nn.Module):
    def __init__(self, cache: PrefixCache) -> None:
        super().__init__()
        self._cache = [cache]  # a list: not registered as a submodule (the model's parameters stay the model's)

    def forward(self, input_ids=None, token_type_ids=None, **_unused):
        return self._cache[0].lookup(input_ids, token_type_ids)
