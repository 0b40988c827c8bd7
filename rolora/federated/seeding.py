"""Reproducible initial tensors: every random tensor comes from its own seeded ``torch.Generator``.

Seeds are derived from (seed, purpose, layer, ...) with a hash that is stable across processes and
Python versions (not ``hash()``), so layer order and the number of layers never change a layer's
initial values. Values are drawn in float64 on the CPU and then cast, so float32 and float64 runs,
and CPU and GPU runs, start from the same numbers (up to the cast).
"""

from __future__ import annotations

import hashlib
import math

import torch
from torch import Tensor


def derive_seed(seed: int, *keys: object) -> int:
    """A 63-bit seed that depends on ``seed`` and every key (e.g. ``"A"``, a layer name, a round)."""
    digest = hashlib.blake2b(repr((int(seed),) + keys).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


def kaiming_uniform(
    shape: tuple[int, int], seed: int, dtype: torch.dtype | None = None, device=None
) -> Tensor:
    """PEFT's ``lora_A`` init: ``nn.init.kaiming_uniform_(w, a=sqrt(5))`` (bound 1/sqrt(fan_in)).

    For an r×n tensor fan_in = n, so the first r' rows of a rank-r draw are themselves a valid
    rank-r' draw: clients of different ranks slice one shared draw and stay consistent.
    """
    generator = torch.Generator(device="cpu").manual_seed(int(seed))
    out = torch.empty(shape, dtype=torch.float64)
    torch.nn.init.kaiming_uniform_(out, a=math.sqrt(5), generator=generator)
    return out.to(dtype=dtype or torch.get_default_dtype(), device=device)
