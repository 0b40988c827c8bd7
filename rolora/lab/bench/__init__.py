"""Benchmarks: each module is one ``rolora bench NAME`` and prints a Markdown table (BENCHMARKS.md).

``aggregate`` (server side of every method), ``kernels`` (+ ``kernels_methods``, ``kernels_report``:
the fused LoRA linear), ``llm`` (+ ``llm_row``: one federated round against the PEFT loop),
``memory`` (client memory and bytes), ``decoder_eval`` (label-word scoring), ``flower`` (the Flower
engine against the embedded one).
"""
