"""The MNIST two-layer federated experiment (RoLoRA paper, Section 4.2, Figure 2).

f(x) = W_out · ReLU(ΔW x) with ΔW = ``method.delta(...)`` (s·B·A for LoRA methods), W0 = 0 and a fixed
random W_out; clients hold label-disjoint (or IID / Dirichlet) shares of real MNIST, and every
aggregation goes through :mod:`rolora.federated` (this package never averages anything itself).

Modules: ``data`` (safe MNIST loading), ``partition`` (federated splits), ``model`` (forward pass and
initial state), ``train`` (local training, evaluation, the federated loop), ``experiment`` (the grid of
splits × methods), ``plots`` (PNG + CSV), ``cli`` (``rolora toy``).
"""

