"""Towards a compiled client step (issue 34): the client-batched forward and loss trace as ONE graph.

Several clients' rows go through the shared frozen base in one pass, each row with its own client's
adapter and head. Here that pass (every dropout off, a trained head) is traced by torch.compile with
``fullgraph=True`` (which raises on any graph break) for the fused LoRA path (A/B methods) and the
reference delta path (full-rank W), and its loss and every client's gradients equal the eager pass's.
The backend is ``aot_eager`` (Dynamo's graph and AOTAutograd's backward, no code generation: what a
graph break or a wrong trace would show, in seconds; inductor's kernels are a speed matter).
Not covered yet: dropout masks (``ClientStreams`` / ``PassMasks``) and the step's Python loop.
"""

from __future__ import annotations

from contextlib import ExitStack

import pytest
import torch

from rolora.federated.round import client_starts
from rolora.llm.adapter_layer import Rows
from rolora.llm.adapters import ClientHeads, client_adapters, rows_forward
from rolora.llm.client_streams import ClientStreams
from rolora.llm.config import load_config
from rolora.llm.prepare import build
from rolora.llm.tasks import batch, loss

TINY = ["model.name=tiny-roberta", "model.max_length=24", "data.test_size=24", "data.max_train_samples=48",
        "federated.clients=3", "lora.dropout=0.0", "train.batch_size=4"]


def _pass(method: str, compiled: bool):
    """(per-sample losses, {(slot, tensor): grad}) of one client-batched pass over 3 clients × 2 rows."""
    torch._dynamo.reset()
    setup = build(load_config(None, TINY + [f"federated.method={method}"]))
    state = setup.initial_state()
    starts = client_starts(setup.method, state, [0, 1, 2])
    rows = Rows(Rows.of([0, 0, 1, 1, 2, 2]).segments)
    streams = ClientStreams([1, 2, 3], setup.device)
    layers = client_adapters(setup.adapters, [s.tensors for s in starts], starts[0].trainable, setup.method,
                             setup.config.lora.alpha, rows, streams)
    heads = ClientHeads(setup.model, [s.dense for s in starts], rows)
    with torch.no_grad():  # distinct clients: B ≠ 0, each client its own
        for slot in range(3):
            for layer in layers.values():
                for p in layer.params[slot].values():
                    p.add_(0.01 * (slot + 1) * torch.randn(p.shape, generator=torch.Generator().manual_seed(slot)))
    tensors = batch(setup.train, list(range(6)))
    forward = lambda t: loss(setup.model, t, "classification")  # noqa: E731
    if compiled:
        forward = torch.compile(forward, backend="aot_eager", fullgraph=True)  # fullgraph: a break raises
    with ExitStack() as stack:
        stack.enter_context(rows_forward(setup.adapters, layers))
        stack.enter_context(heads.installed())
        setup.model.eval()  # every dropout off (LoRA's and the model's own): the two passes see the same net
        per_sample = forward(tensors)
        per_sample.sum().backward()
    grads = {(slot, name, n): p.grad.clone() for name, layer in layers.items() for slot in range(3)
             for n, p in layer.params[slot].items() if p.requires_grad}
    grads.update({(slot, "head", n): p.grad.clone() for slot in range(3) for n, p in heads.params[slot].items()})
    return per_sample.detach(), grads


@pytest.mark.parametrize("method", ["fedavg-lora", "rolora", "fedavg-full"])
def test_the_client_batched_pass_compiles_as_one_graph_and_equals_eager(method):
    eager_loss, eager_grads = _pass(method, compiled=False)
    loss_c, grads_c = _pass(method, compiled=True)
    torch.testing.assert_close(loss_c, eager_loss, rtol=1e-5, atol=1e-6)
    assert set(grads_c) == set(eager_grads) and len(eager_grads) > 3
    for key, g in eager_grads.items():
        torch.testing.assert_close(grads_c[key], g, rtol=1e-4, atol=1e-6, msg=str(key))
    assert any(float(g.abs().max()) > 0 for g in eager_grads.values())


def test_a_graph_break_in_the_pass_would_be_caught(monkeypatch):
    """A data-dependent Python value in the adapters' path (here the block mask read back with
    ``.tolist()``) breaks the graph: fullgraph=True must fail on it, or the test above proves nothing."""
    original = Rows.block_scale

    def breaking(self, group, ranks, alpha, dtype, device):
        mask = original(self, group, ranks, alpha, dtype, device)
        return mask * float(sum(sum(row) for row in mask.tolist()) > 0)

    monkeypatch.setattr(Rows, "block_scale", breaking)
    with pytest.raises(Exception, match="(?i)graph break|unsupported|tolist|data-dependent"):
        _pass("fedavg-lora", compiled=True)
