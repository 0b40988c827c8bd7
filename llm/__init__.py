"""Federated fine-tuning of Hugging Face models (RoBERTa/BERT, Llama) with rolora's kernels.

Not implemented yet: this package is reserved for that work and exports nothing. The federated
rules it will use live in :mod:`rolora.federated`, the fused layer in :mod:`rolora.kernels`.
"""

if __name__ != "rolora.llm":  # e.g. `import llm` from the repository root: no second copy
    from rolora._misnamed import refuse_misnamed

    refuse_misnamed(__name__, "rolora.llm", __spec__)
