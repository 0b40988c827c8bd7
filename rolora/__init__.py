"""rolora: federated fine-tuning with LoRA.

The library, by floor (each imports only the floors below it; ``tests/test_layering.py``):

- ``rolora.theory``: NumPy reproduction of the linear-model analysis of RoLoRA.
- ``rolora.kernels``: the fused LoRA linear op (Triton forward and backward, a PyTorch path beside it).
- ``rolora.optim``: client optimisers that torch lacks (GaLore-AdamW).
- ``rolora.federated``: every federated LoRA method's aggregation rule and the round protocol.
- ``rolora.toy``: the MNIST two-layer experiment.
- ``rolora.llm``: federated fine-tuning of Hugging Face models (the embedded engine).
- ``rolora.flower``: the same runs on Flower's simulation and deployment engines.

On top, imported by nothing of the library: ``rolora.lab`` (sweeps and their specs, the
reproduction report, benchmarks, GPU helper scripts) and the ``rolora`` command (``rolora.cli``).

LoRA shape convention everywhere (PyTorch/PEFT): for a layer y = W0 x with W0 of shape d×n (out×in),
``A`` is r×n (``lora_A``), ``B`` is d×r (``lora_B``) and the update is s·B·A with s = alpha/r.
"""

__version__ = "0.1.0"
