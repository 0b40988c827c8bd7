"""One client-batched training pass under ``torch.compile`` (inductor) against eager (issue 34, item 4).

The pass is the client-batched engine's unit of work (``rolora/llm/batched_training.py``): a few
clients' rows through the shared frozen base, each row with its own client's adapter and head, the
per-sample loss, and its backward. Both sides run the same pass on the same rows, interleaved, after
warm-up, every dropout off (LoRA's and the model's), the engine's segment-wise layers (not the
gathered ones of ``train.compile``, whose whole rounds ``rolora bench llm --rows
ours-fast,ours-compiled`` times); the compiled side's first call (the compile) is timed apart. Prints
the CPU's capabilities, a Markdown table and whether the outputs agree.

    rolora bench compile                                # MiniLM, 4 clients × 4 rows × 128 tokens
    rolora bench compile --model tiny-roberta --repeats 3   # seconds, for a smoke test
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from contextlib import ExitStack

import torch

from rolora.federated.round import client_starts
from rolora.lab.bench.llm import _at_least_one
from rolora.llm.adapter_layer import Rows
from rolora.llm.adapters import ClientHeads, client_adapters, rows_forward
from rolora.llm.client_streams import ClientStreams
from rolora.llm.config import load_config
from rolora.llm.prepare import build
from rolora.llm.tasks import batch, loss


class ClientBatchedPass:
    """``clients`` clients × ``rows`` rows each of a freshly built ``config``: :meth:`run` is one pass
    (forward, per-sample loss, backward) and returns (per-sample losses, every client's gradients)."""

    def __init__(self, overrides: list[str], clients: int, rows: int, compiled: str | None = None) -> None:
        torch._dynamo.reset()
        self.setup = setup = build(load_config(None, overrides + [f"federated.clients={clients}"]))
        starts = client_starts(setup.method, setup.initial_state(), list(range(clients)))
        self.rows = Rows(Rows.of([k for k in range(clients) for _ in range(rows)]).segments)
        streams = ClientStreams(list(range(1, clients + 1)), setup.device)
        self.layers = client_adapters(setup.adapters, [s.tensors for s in starts], starts[0].trainable, setup.method,
                                      setup.config.lora.alpha, self.rows, streams)
        self.heads = ClientHeads(setup.model, [s.dense for s in starts], self.rows) if setup.train_head else None
        with torch.no_grad():  # distinct clients (B ≠ 0), each its own, seeded
            for slot in range(clients):
                g = torch.Generator().manual_seed(slot)
                for layer in self.layers.values():
                    for p in layer.params[slot].values():
                        p.add_(0.01 * (slot + 1) * torch.randn(p.shape, generator=g))
        self.tensors = batch(setup.train, list(range(clients * rows)))
        forward = self._forward
        if compiled is not None:
            forward = torch.compile(forward, backend=compiled, fullgraph=True)  # fullgraph: a break raises
        self.forward = forward

    def _forward(self, tensors):
        return loss(self.setup.model, tensors, self.setup.config.model.task)

    def params(self) -> dict:
        out = {(slot, name, n): p for name, layer in self.layers.items() for slot in range(len(layer.params))
               for n, p in layer.params[slot].items() if p.requires_grad}
        if self.heads is not None:
            out.update({(slot, "head", n): p for slot in range(len(self.heads.params))
                        for n, p in self.heads.params[slot].items()})
        return out

    def run(self) -> tuple[torch.Tensor, dict]:
        params = self.params()
        for p in params.values():
            p.grad = None
        with ExitStack() as stack:
            stack.enter_context(rows_forward(self.setup.adapters, self.layers))
            if self.heads is not None:
                stack.enter_context(self.heads.installed())
            self.setup.model.eval()  # every dropout off: both sides compute the same function
            per_sample = self.forward(self.tensors)
            per_sample.sum().backward()
        return per_sample.detach(), {k: p.grad.detach().clone() for k, p in params.items()}


def _timed(one: ClientBatchedPass) -> float:
    cuda = one.setup.device.type == "cuda"
    if cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    one.run()
    if cuda:  # kernels run asynchronously: wait for the pass's last one
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="rolora bench compile", description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="minilm")
    ap.add_argument("--clients", type=_at_least_one, default=4)
    ap.add_argument("--rows", type=_at_least_one, default=4, help="rows (sentences) per client in the pass")
    ap.add_argument("--length", type=_at_least_one, default=128, help="model.max_length")
    ap.add_argument("--method", default="rolora")
    ap.add_argument("--repeats", type=_at_least_one, default=10)
    ap.add_argument("--backend", default="inductor", choices=sorted(torch._dynamo.list_backends()))
    ap.add_argument("--dtype", default="float32", help="model.dtype of the frozen base (float32: the AVX2 kind's)")
    args = ap.parse_args(argv)
    try:
        return _bench(args)
    except (ValueError, OSError) as err:  # a bad model, dtype, method or data: one line, no traceback
        print(f"rolora bench compile: error: {err}", file=sys.stderr)
        return 2


def _bench(args) -> int:
    from rolora.lab.bench.llm import header

    overrides = [f"model.name={args.model}", f"model.max_length={args.length}", "data.test_size=32",
                 f"model.dtype={args.dtype}",
                 "lora.dropout=0.0", "lora.rank=8", f"federated.method={args.method}", "train.batch_size=32"]
    eager = ClientBatchedPass(overrides, args.clients, args.rows)
    compiled = ClientBatchedPass(overrides, args.clients, args.rows, compiled=args.backend)
    start = time.perf_counter()
    compiled.run()  # the compile; the second call compiles once more (the block mask now comes from Rows' cache)
    loss_c, grads_c = compiled.run()
    compile_s = time.perf_counter() - start
    from torch._dynamo.utils import counters

    warm_graphs = int(counters["stats"]["unique_graphs"])
    loss_e, grads_e = eager.run()
    agree = torch.allclose(loss_c, loss_e, rtol=1e-4, atol=1e-5) and all(
        torch.allclose(grads_c[k], g, rtol=1e-3, atol=1e-6) for k, g in grads_e.items())
    times = {"eager": [], "compiled": []}
    for _ in range(args.repeats):  # interleaved: the machine's drift hits both alike
        times["eager"].append(_timed(eager))
        times["compiled"].append(_timed(compiled))
    med = {k: statistics.median(v) for k, v in times.items()}
    graphs = int(counters["stats"]["unique_graphs"]) - warm_graphs
    tokens = int(eager.tensors["attention_mask"].numel())
    print(header(torch.get_num_threads()))
    print(f"- pass: {args.model}, {args.method}, {args.clients} clients × {args.rows} rows × {tokens // max(1, args.clients * args.rows)} "
          f"tokens (padded), LoRA r 8, frozen base {args.dtype}, every dropout off; backend {args.backend}; compile (first two calls) {compile_s:.1f} s")
    print("\n| side | median s per pass (fwd + loss + bwd) | min | max | vs eager |\n|---|---|---|---|---|")
    for side in ("eager", "compiled"):
        v = times[side]
        print(f"| {side} | {med[side]:.4f} | {min(v):.4f} | {max(v):.4f} | {med['eager'] / med[side]:.2f}× |")
    print(f"\ngraphs compiled during warm-up: {warm_graphs}, while timing: {graphs}; outputs agree (loss rtol 1e-4, "
          f"gradients rtol 1e-3): {'yes' if agree else 'NO'}")
    return 0 if agree else 1
