"""In-memory labelled text sets (classification) and instruction sets (decoder tuning).

Both are small immutable containers of Python lists; a sample is addressed by its row index, which is
what partitions and splits hand around. Tokenisation happens later, once per run (:mod:`rolora.llm.tasks`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def _take(values: list | None, indices: np.ndarray) -> list | None:
    return None if values is None else [values[i] for i in indices]


def _as_indices(indices, length: int) -> np.ndarray:
    """Row indices as an int64 array, checked against the set's length (negative indices refused)."""
    idx = np.asarray(indices, dtype=np.int64).reshape(-1)
    if idx.size and (idx.min() < 0 or idx.max() >= length):
        bad = idx[(idx < 0) | (idx >= length)][0]
        raise IndexError(f"row index {int(bad)} is outside a set of {length} rows")
    return idx


@dataclass(frozen=True)
class TextDataset:
    """Labelled sentences (or sentence pairs) for classification.

    ``labels[i]`` is a class index into ``label_names``; ``pairs`` holds the second sentence of
    sentence-pair tasks (None for single sentences); ``groups`` is a natural-partition column such as
    the VADER domain (None when the set has none).
    """

    texts: list[str]
    pairs: list[str] | None
    labels: np.ndarray
    label_names: list[str]
    groups: list[str] | None
    name: str

    def __post_init__(self):
        labels = np.asarray(self.labels, dtype=np.int64).reshape(-1)
        object.__setattr__(self, "labels", labels)
        n = len(self.texts)
        for field, values in (("labels", labels), ("pairs", self.pairs), ("groups", self.groups)):
            if values is not None and len(values) != n:
                raise ValueError(f"{self.name}: {field} has {len(values)} rows but texts has {n}")
        if labels.size and (labels.min() < 0 or labels.max() >= len(self.label_names)):
            raise ValueError(
                f"{self.name}: labels must lie in 0..{len(self.label_names) - 1} "
                f"(one per label name), found {int(labels.min())}..{int(labels.max())}"
            )

    def __len__(self) -> int:
        return len(self.texts)

    @property
    def num_classes(self) -> int:
        return len(self.label_names)

    def subset(self, indices) -> TextDataset:
        """The rows at ``indices``, in that order; label names and the set's name are kept."""
        idx = _as_indices(indices, len(self))
        return TextDataset(
            texts=_take(self.texts, idx), pairs=_take(self.pairs, idx), labels=self.labels[idx],
            label_names=list(self.label_names), groups=_take(self.groups, idx), name=self.name,
        )


@dataclass(frozen=True)
class InstructionDataset:
    """Alpaca-style instruction data: ``instructions[i]``, optional ``inputs[i]`` ("" when none),
    and the target ``outputs[i]``."""

    instructions: list[str]
    inputs: list[str]
    outputs: list[str]
    name: str

    def __post_init__(self):
        n = len(self.instructions)
        if len(self.inputs) != n or len(self.outputs) != n:
            raise ValueError(
                f"{self.name}: {n} instructions, {len(self.inputs)} inputs and "
                f"{len(self.outputs)} outputs; they must have one row each"
            )

    def __len__(self) -> int:
        return len(self.instructions)

    def subset(self, indices) -> InstructionDataset:
        idx = _as_indices(indices, len(self))
        return InstructionDataset(
            instructions=_take(self.instructions, idx), inputs=_take(self.inputs, idx),
            outputs=_take(self.outputs, idx), name=self.name,
        )


def deduplicate(ds: TextDataset) -> TextDataset:
    """Drop repeated (text, pair) rows so that no sentence can sit in both a train and a test split.

    The first occurrence is kept when every copy has the same label; a sentence that occurs with
    different labels is ambiguous and all its copies are dropped. Row order is otherwise kept.
    """
    pairs = ds.pairs if ds.pairs is not None else [None] * len(ds)
    labels_of: dict[tuple, set[int]] = {}
    for text, pair, label in zip(ds.texts, pairs, ds.labels.tolist()):
        labels_of.setdefault((text, pair), set()).add(label)
    keep, seen = [], set()
    for i, key in enumerate(zip(ds.texts, pairs)):
        if key in seen or len(labels_of[key]) > 1:
            continue
        seen.add(key)
        keep.append(i)
    return ds.subset(np.asarray(keep, dtype=np.int64))
