"""rolora: federated fine-tuning with LoRA.

Subpackages (each the folder of the same name at the repository root):

- ``rolora.theory``: NumPy reproduction of the linear-model analysis of RoLoRA.
- ``rolora.kernels``: fused Triton LoRA linear (forward and backward) with a PyTorch fallback.
- ``rolora.federated``: every federated LoRA method's aggregation rule, as pure functions.
- ``rolora.toy``: the MNIST two-layer experiment.
- ``rolora.llm``: federated fine-tuning of Hugging Face models (planned).

LoRA shape convention everywhere (PyTorch/PEFT): for a layer y = W0 x with W0 of shape d×n (out×in),
``A`` is r×n (``lora_A``), ``B`` is d×r (``lora_B``) and the update is s·B·A with s = alpha/r.
"""

__version__ = "0.1.0"
