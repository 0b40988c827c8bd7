"""``torch.compile(fullgraph=True)`` traces a model of ``lora_linear`` layers (torch path on CPU).

The custom ops ``rolora::lora_linear_fwd`` / ``_bwd`` have fake implementations, so dynamo keeps them
as single nodes instead of breaking the graph. Compiled and eager results agree to rtol 1e-5 (fp32).
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from kernel_helpers import LoRALinear


class TwoLayer(nn.Module):
    def __init__(self, backend: str) -> None:
        super().__init__()
        self.fc1 = LoRALinear(24, 40, r=4, alpha=8, backend=backend, seed=1)
        self.fc2 = LoRALinear(40, 8, r=4, alpha=8, backend=backend, seed=2)
        for layer in (self.fc1, self.fc2):
            nn.init.normal_(layer.lora_B, generator=torch.Generator().manual_seed(layer.seed))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.fc1(x)))


@pytest.mark.parametrize("phase", ["full", "B", "A"])
def test_compile_fullgraph_matches_eager(phase):
    from torch._dynamo.backends.registry import lookup_backend

    torch._dynamo.reset()
    graphs = []

    def recording_aot_eager(gm, example_inputs):
        graphs.append(gm)
        return lookup_backend("aot_eager")(gm, example_inputs)

    model = TwoLayer("torch").eval()
    for layer in (model.fc1, model.fc2):
        layer.set_phase(phase)
    x = torch.randn(2, 7, 24, generator=torch.Generator().manual_seed(0))
    compiled = torch.compile(model, backend=recording_aot_eager, fullgraph=True)

    y_c = compiled(x)
    y_c.square().sum().backward()
    grads_c = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    y_e = model(x)
    y_e.square().sum().backward()
    grads_e = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    assert len(graphs) == 1  # one graph, no break
    targets = [str(node.target) for node in graphs[0].graph.nodes if node.op == "call_function"]
    assert sum("rolora.lora_linear_fwd" in t for t in targets) == 2, targets
    torch.testing.assert_close(y_c, y_e, rtol=1e-5, atol=1e-6)
    assert grads_c.keys() == grads_e.keys() and grads_c
    for name in grads_e:
        torch.testing.assert_close(grads_c[name], grads_e[name], rtol=1e-5, atol=1e-6, msg=name)
