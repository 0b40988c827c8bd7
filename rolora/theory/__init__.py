"""NumPy reproduction of RoLoRA's linear-model analysis (federated low-rank linear regression).

Convention (this package only). The paper's analysis uses row vectors: a sample x ∈ R^{1×d} is mapped
to x A B with A ∈ R^{d×r} (down-projection) and B ∈ R^{r×k} (up-projection); rank 1 is x a bᵀ.
In the PyTorch/PEFT convention used by the rest of rolora (y = W0 x + s·B A x with ``lora_A`` r×n and
``lora_B`` d×r), the same map is ``lora_A = Aᵀ`` and ``lora_B = Bᵀ`` (with s = 1): paper A = lora_Aᵀ.
Everything here follows the paper so that formulas read like the paper's.

Modules:

- ``sampling``: seeded random pieces (orthonormal bases, the Wishart sampler for exact large-m data).
- ``data``: problem generation (truth A*, B*_i, client covariances, sufficient statistics, raw data).
- ``initial_factors``: the starting A⁰, at a prescribed angle δ0 = sin θ(A⁰, A*) or at random.
- ``metrics``: principal angles, population error, training loss, gradients.
- ``algorithms``: RoLoRA (analysed Alt-min-GD form), FFA-LoRA, FedAvg-LoRA, centralised references.
- ``reference``: slow, obviously-correct versions of the rounds on raw data (for parity tests).
- ``stochastic``: RoLoRA with local minibatch SGD on one factor (the non-convex rate experiment).
- ``analyses``: one function per analysis (the five "experiments" of ``rolora theory``); ``plots``: one figure each; ``cli``.

This package imports only NumPy, SciPy, Matplotlib (lazily, in ``plots``) and tqdm; never torch.
"""

