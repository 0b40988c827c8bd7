"""Towards a compiled client step (issue 34): the client-batched forward and loss trace as ONE graph.

Several clients' rows go through the shared frozen base in one pass, each row with its own client's
adapter and head. Here that pass (every dropout off, a trained head) is traced by torch.compile with
``fullgraph=True`` (which raises on any graph break) for the fused LoRA path (A/B methods) and the
reference delta path (full-rank W), and its loss and every client's gradients equal the eager pass's.
The backend is ``aot_eager`` (Dynamo's graph and AOTAutograd's backward, no code generation: what a
graph break or a wrong trace would show, in seconds; inductor's kernels are a speed matter).
The whole compiled step (``train.compile``: gathered rows, masks in the graph, the update) is
tested in ``tests/test_llm_compiled_step.py``.
"""

from __future__ import annotations

import pytest
import torch

from rolora.lab.bench.compiled_pass import ClientBatchedPass
from rolora.llm.adapter_layer import Rows

TINY = ["model.name=tiny-roberta", "model.max_length=24", "data.test_size=24", "data.max_train_samples=48",
        "lora.dropout=0.0", "train.batch_size=4"]


def _pass(method: str, compiled: bool):
    """(per-sample losses, {(slot, layer, tensor): grad}) of one client-batched pass, 3 clients × 2 rows."""
    one = ClientBatchedPass(TINY + [f"federated.method={method}"], clients=3, rows=2,
                            compiled="aot_eager" if compiled else None)
    return one.run()


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
