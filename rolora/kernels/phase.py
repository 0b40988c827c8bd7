"""The RoLoRA phase of a LoRA layer: which of its factors train.

One place maps between the three spellings of the same fact: a federated method's ``trains(t)``
(a set of factor names, ``{"A", "B"}``), the factors' ``requires_grad`` flags, and ``LoRAPhase``.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable

from torch import Tensor


class LoRAPhase(str, enum.Enum):
    """Which LoRA factors train: RoLoRA alternates B_ONLY and A_ONLY rounds."""

    FULL = "full"
    B_ONLY = "B"
    A_ONLY = "A"
    FROZEN = "frozen"

    @property
    def trains_a(self) -> bool:
        return self in (LoRAPhase.FULL, LoRAPhase.A_ONLY)

    @property
    def trains_b(self) -> bool:
        return self in (LoRAPhase.FULL, LoRAPhase.B_ONLY)

    @classmethod
    def from_flags(cls, trains_a: bool, trains_b: bool) -> "LoRAPhase":
        """The phase in which A trains iff ``trains_a`` and B iff ``trains_b``."""
        if trains_a and trains_b:
            return cls.FULL
        if trains_b:
            return cls.B_ONLY
        if trains_a:
            return cls.A_ONLY
        return cls.FROZEN

    @classmethod
    def from_trainable(cls, names: Iterable[str]) -> "LoRAPhase":
        """The phase of a method round whose ``trains(t)`` is ``names``: {"A","B"}, {"B"} or {"A"}.

        Raises ValueError for anything else (an empty set trains nothing: not a training phase).
        """
        got = frozenset(names)
        if not got or not got <= {"A", "B"}:
            raise ValueError(f"trainable factors must be a non-empty subset of {{'A', 'B'}}, got "
                             f"{sorted(got)}")
        return cls.from_flags("A" in got, "B" in got)


def phase_of(lora_A: Tensor, lora_B: Tensor) -> LoRAPhase:
    """The phase implied by which factors require grad."""
    return LoRAPhase.from_flags(lora_A.requires_grad, lora_B.requires_grad)
