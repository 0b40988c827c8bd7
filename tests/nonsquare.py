"""LoRA targets with a non-square layer, for end-to-end tests on the tiny BERT/RoBERTa.

The family default (query, value) is 32×32 on the tiny models, so a layer's (out, in) swapped
anywhere would go unnoticed; ``intermediate.dense`` is 32→64 (out 64, in 32). ``query`` stays, so
the runs still adapt a square attention layer next to it, with as many adapted layers as the default.
"""

NON_SQUARE_TARGETS = ['lora.targets=["query","intermediate.dense"]']
"""Config overrides: adapt ``query`` (32×32) and ``intermediate.dense`` (64×32)."""
