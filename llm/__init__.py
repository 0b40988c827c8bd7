"""Federated fine-tuning of Hugging Face models (RoBERTa/BERT, Llama) with rolora's kernels.

Not implemented yet: this package is reserved for that work and exports nothing. The federated
rules it will use live in :mod:`rolora.federated`, the fused layer in :mod:`rolora.kernels`.
"""

if __name__ != "rolora.llm":  # e.g. `import llm` from the repository root: a second copy
    raise ImportError(f"imported as {__name__!r}: import rolora.llm instead (the repository root is package rolora)")
