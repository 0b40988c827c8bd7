"""Client-side optimisers that are not in torch: GaLore-AdamW (low-rank projected Adam moments).

Modules: ``galore`` (:class:`GaLoreAdamW`, :func:`galore_groups`), ``galore_reference`` (the update
rule written out, for the parity tests), ``memory`` (optimiser-state bytes, counted and by formula).
Depends only on torch, NumPy and the standard library; ``toy``, ``llm`` and ``flower`` may use it.
"""

from rolora.optim.galore import GaLoreAdamW, galore_groups

__all__ = ["GaLoreAdamW", "galore_groups"]
