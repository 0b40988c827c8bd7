"""Client-batched local training: a round's participants take their local steps together.

The same mathematics as :func:`rolora.llm.local_training.train_client` run once per client (the
reference beside it, and what the parity tests compare with), computed differently:

- step j of every client in a group goes through the shared frozen base in a few passes, each row
  using its own client's adapter and head (:mod:`rolora.llm.adapter_layer`);
- a step's rows (all clients' step-j samples; each client's samples exactly those of its sequential
  step) are sorted by length and cut into passes of at most ``train.batch_tokens`` padded tokens, so
  almost nothing is computed on padding and activation memory stays bounded;
- loss: Σ_rows loss_r / B_k(r), whose gradient for client k's tensors is the gradient of client k's
  mean loss (no tensor is shared by two clients: the base is frozen);
- dropout: every mask as the client would have drawn it alone (:mod:`rolora.llm.client_streams`), or
  with ``train.dropout_masks = "fast"`` drawn per pass (:mod:`rolora.llm.pass_masks`: same
  distribution, not the one-by-one bits);
- each client's own drift correction (``start.rules.correction``: FedProx/SCAFFOLD) added to its
  own tensors' gradients, then gradient clipping per client (its own norm), then ONE AdamW/SGD over
  every client's tensors: these optimisers are elementwise, so this is exactly one optimiser per
  client. DP-SGD (``rules.privacy``) needs per-sample gradients: refused here, the chooser
  (:mod:`rolora.llm.training`) trains such rounds one by one;
- a client whose loss turns non-finite is dropped (its tensors stop training; ``None`` result),
  the others go on. Groups of at most ``train.client_group`` clients bound the per-client state;
- on a CPU, the participants are split among ``train.client_workers`` threads, each training its
  share's groups on its own replica of the model (:mod:`rolora.llm.client_workers`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass

import numpy as np
import torch

from rolora.federated.local_rules import DENSE
from rolora.federated.round import ClientResult, ClientStart
from rolora.federated.seeding import derive_seed
from rolora.llm import local_training as reference
from rolora.llm.adapter_layer import NotBatchable, Rows
from rolora.llm.adapters import ClientHeads, client_adapters, rows_forward
from rolora.llm.client_streams import ClientBatch, ClientStreams
from rolora.llm.client_workers import Workers, split
from rolora.llm.compiled_step import CompiledPass
from rolora.llm.first_token_top import applies as first_token_applies
from rolora.llm.first_token_top import first_token_top_block
from rolora.llm.host_memory import release_freed_memory
from rolora.llm.model_dropouts import client_dropouts
from rolora.llm.pass_masks import PassMasks
from rolora.llm.prepare import RunSetup
from rolora.llm.tasks import batch, finite_weighted_sum, loss
from rolora.llm.unpadded_blocks import applies as unpadded_applies
from rolora.llm.unpadded_blocks import unpadded_blocks

log = logging.getLogger("rolora.llm")

FIRST_TOKEN_TOP = True
"""With per-pass masks, an encoder classifier's top block computes only the first token's output
(``llm/first_token_top.py``; False: the whole block, the reference the tests compare with)."""

UNPADDED_BLOCKS = True
"""With per-pass masks and no compiled step, on a CPU, a BERT/RoBERTa encoder's blocks run on the
pass's real tokens only (``llm/unpadded_blocks.py``; False: the padded blocks, the reference the
tests compare with). Not on CUDA: there the engine is bound by kernel launches, which packing adds
(seven more per block), not by the FLOPs it saves; and no GPU has run it."""

CLIENT_STATE_BUDGET = 256 * 2**20
"""Automatic group size: as many clients as keep their tensors, gradients and AdamW moments under this."""


def group_size(setup: RunSetup, starts: Sequence[ClientStart]) -> int:
    """``train.client_group``, or (0) as many clients as fit :data:`CLIENT_STATE_BUDGET`."""
    if setup.config.train.client_group > 0:
        return setup.config.train.client_group
    one = starts[0]
    numel = sum(x.numel() for layer in one.tensors.values() for x in layer.values())
    numel += sum(x.numel() for x in one.dense.values())
    return max(1, CLIENT_STATE_BUDGET // max(1, 16 * numel))  # fp32 tensor, gradient, two moments


def chunks(lengths: np.ndarray, budget: int, max_padding: float = 0.1, min_tokens: int = 256) -> list[np.ndarray]:
    """Row indices sorted by length, cut into passes: rows × longest ≤ ``budget`` padded tokens, and a
    pass of at least ``min_tokens`` is cut where its padding would pass ``max_padding`` of it."""
    order = np.argsort(lengths, kind="stable")
    out, start = [], 0
    for end in range(1, len(order) + 1):
        if end == len(order):
            out.append(order[start:end])
            break
        padded = (end + 1 - start) * int(lengths[order[end]])
        waste = padded - int(lengths[order[start:end + 1]].sum())
        if padded > budget or (padded >= min_tokens and waste > max_padding * padded):
            out.append(order[start:end])
            start = end
    return out


def train_group(setup: RunSetup, starts: Sequence[ClientStart], lr: float,
                head_lr: float | None = None, compiled: CompiledPass | None = None,
                pass_tokens: int | None = None) -> list[ClientResult | None]:
    """Local training of ``starts`` together (heads at ``head_lr``, default ``lr``); one result (or
    None: dropped) per start. ``compiled``: the run's compiled pass (``train.compile``), whose rows
    and masks this group then uses. ``pass_tokens``: the most padded tokens per pass (default
    ``train.batch_tokens``)."""
    c, model, t = setup.config, setup.model, starts[0].t
    pass_tokens = pass_tokens or c.train.batch_tokens
    seed, task = c.run.seed, c.model.task
    clients = [s.client for s in starts]
    for start in starts:
        if start.rules is not None:
            start.rules.require("the client-batched trainer", privacy=False)
    corrections = [s.rules.correction if s.rules is not None else None for s in starts]
    if compiled is not None:
        rows, streams = compiled.rows, compiled.streams
    elif c.train.dropout_masks == "fast":
        rows, streams = Rows(), PassMasks(derive_seed(seed, "dropout-passes", t, *clients), setup.device)
    else:
        rows, streams = Rows(), ClientStreams([derive_seed(seed, "dropout", t, k) for k in clients], setup.device)
    layers = client_adapters(setup.adapters, [s.tensors for s in starts], starts[0].trainable, setup.method,
                             c.lora.alpha, rows, streams)
    heads = ClientHeads(model, [s.dense for s in starts], rows) if setup.train_head else None
    adapted = [[p for layer in layers.values() for p in layer.trainable(slot)] for slot in range(len(starts))]
    head = [heads.trainable(slot) if heads else [] for slot in range(len(starts))]
    params = [a + h for a, h in zip(adapted, head)]
    by_key = [{**{(name, n): p for name, layer in layers.items() for n, p in layer.params[slot].items()
                  if p.requires_grad},
               **({(DENSE, n): p for n, p in heads.params[slot].items()} if heads else {})}
              for slot in range(len(starts))]  # each client's tensors as its rules key them (local_rules)
    if not params[0]:
        raise ValueError(f"round {t}: method {setup.method.name} trains nothing this round")
    optimizer = reference.make_optimizer(c, [p for ps in adapted for p in ps], lr, [p for hs in head for p in hs],
                                         head_lr, compiled=compiled is not None)
    samples = [setup.clients[k] for k in clients]
    orders = [list(reference.batch_order(len(s), c.train.batch_size, c.train.local_steps, c.train.local_epochs,
                                         derive_seed(seed, "batches", t, k))) for s, k in zip(samples, clients)]
    lengths = setup.train.lengths
    alive = [True] * len(starts)
    losses = [[] for _ in starts]
    tokens, computed = [0] * len(starts), [0] * len(starts)
    model.train()
    with ExitStack() as stack:
        stack.enter_context(rows_forward(setup.adapters, layers))
        stack.enter_context(client_dropouts(model, streams))
        if heads:
            stack.enter_context(heads.installed())
        first_token = FIRST_TOKEN_TOP and c.train.dropout_masks == "fast" and first_token_applies(model, task)
        unpadded = None
        if (UNPADDED_BLOCKS and compiled is None and c.train.dropout_masks == "fast" and setup.device.type == "cpu"
                and unpadded_applies(model)):
            unpadded = stack.enter_context(unpadded_blocks(model, rows, first_token))
        elif first_token:
            stack.enter_context(first_token_top_block(model))
        for j in range(max(len(o) for o in orders)):
            active = [s for s in range(len(starts)) if alive[s] and j < len(orders[s])]
            if not active:
                break
            step_rows = [(s, i, int(samples[s][pos])) for s in active for i, pos in enumerate(orders[s][j])]
            sizes = {s: len(orders[s][j]) for s in active}
            streams.begin_step({s: ClientBatch([int(lengths[samples[s][pos]]) for pos in orders[s][j]]) for s in active})
            release_freed_memory()  # the last step's activations, back to the OS (peak RSS)
            optimizer.zero_grad(set_to_none=True)
            step_loss = torch.zeros(len(starts), dtype=torch.float64)
            finite = torch.ones(len(starts), dtype=torch.bool)
            row_lengths = np.array([lengths[r[2]] for r in step_rows])
            for number, chunk in enumerate(chunks(row_lengths, pass_tokens)):
                picked = sorted((step_rows[i] for i in chunk), key=lambda r: r[0])  # grouped by client
                slots = torch.tensor([r[0] for r in picked], dtype=torch.int64)
                weights = torch.tensor([1.0 / sizes[r[0]] for r in picked], dtype=torch.float32)
                tensors = batch(setup.train, [r[2] for r in picked])
                if compiled is None:
                    rows.segments = Rows.of([r[0] for r in picked]).segments
                    streams.begin_chunk([(r[0], r[1]) for r in picked])
                    tensors = {k: x.to(setup.device) for k, x in tensors.items()}
                    if unpadded is not None:  # the layout's indices on the activations' device
                        unpadded.begin_pass(tensors["attention_mask"])
                    per_sample = loss(model, tensors, task)
                    total = finite_weighted_sum(per_sample, weights.to(per_sample.device))
                    width = tensors["attention_mask"].shape[1]
                else:  # the same, as one compiled graph (llm/compiled_step.py), masks seeded per pass
                    torch.manual_seed(derive_seed(seed, "dropout-compiled", t, *clients, j, number))
                    per_sample, total, width = compiled.run(tensors, slots, weights, setup.device)
                total.backward()
                per_sample = per_sample.detach().cpu()
                ok = torch.isfinite(per_sample)
                finite &= ~torch.zeros(len(starts), dtype=torch.bool).index_fill(0, slots[~ok], True)
                step_loss.index_add_(0, slots, (per_sample * weights).double())
                for s, _, idx in picked:
                    tokens[s] += int(lengths[idx])
                    computed[s] += width
            for s in active:
                if not bool(finite[s]):
                    log.warning("round %d: client %s dropped, its loss is %s at local step %d", t, clients[s],
                                step_loss[s].item(), j + 1)
                    alive[s] = False
                    for p in params[s]:
                        p.grad = None  # an optimiser skips a tensor without gradient: it stops here
                    continue
                if corrections[s] is not None:  # its own FedProx/SCAFFOLD term, before its own clipping
                    corrections[s].add_to(by_key[s])
                if c.train.max_grad_norm > 0:
                    torch.nn.utils.clip_grad_norm_(params[s], c.train.max_grad_norm)
                losses[s].append(float(step_loss[s]))
            optimizer.step()
    model.eval()
    return [ClientResult(tensors={name: layer.read(s) for name, layer in layers.items()},
                         num_samples=float(len(samples[s])),
                         dense=heads.read(s) if heads else {},
                         metrics={"train_loss": float(np.mean(losses[s])), "tokens": tokens[s],
                                  "computed_tokens": computed[s], "steps": len(losses[s]), "lr": lr,
                                  **({"head_lr": lr if head_lr is None else head_lr} if heads else {})})
            if alive[s] else None for s in range(len(starts))]


def batched_training(setup: RunSetup, progress=None):
    """A ``LocalTraining`` callable that trains the participants in client-batched groups: split
    among the run's client workers (``setup.workers``, :mod:`rolora.llm.client_workers`), each
    worker's share in groups of :func:`group_size`."""
    mode = setup.config.train.compile
    compiled = None if mode == "off" else CompiledPass.of(setup.model, setup.config.model.task, setup.train.pad_id, mode)
    workers = Workers(setup, setup.workers.count)
    pass_tokens = max(1, setup.config.train.batch_tokens // workers.count)  # the tokens in flight: as one worker's
    progress_lock = threading.Lock()

    def train(t: int, starts: Sequence[ClientStart]) -> list[ClientResult | None]:
        lr, head_lr = reference.learning_rate(setup.config, t), reference.head_learning_rate(setup.config, t)
        size = group_size(setup, starts)

        def share(own: RunSetup, part: list[ClientStart]) -> list:
            results: list = []
            for first in range(0, len(part), size):
                group = part[first:first + size]
                try:
                    results += train_group(own, group, lr, head_lr, compiled, pass_tokens)
                except NotBatchable as err:  # one by one below, in the calling thread (torch's global RNG)
                    results += [_OneByOne(start, str(err)) for start in group]
                    continue
                if progress is not None:
                    with progress_lock:
                        progress(len(group))
            return results

        parts = [p for p in split(list(starts), workers.count) if p]
        results = [r for done in workers.run(share, parts) for r in done]
        reasons = {r.reason for r in results if isinstance(r, _OneByOne)}
        for reason in sorted(reasons):
            log.info("round %d: clients trained one by one (%s)", t, reason)
        out = []
        for r in results:
            if isinstance(r, _OneByOne):
                r = reference.train_client(setup, r.start, lr, head_lr)
                if progress is not None:
                    progress(1)
            out.append(r)
        return out

    return train


@dataclass(frozen=True)
class _OneByOne:
    """A client whose group the batched trainer could not take (``NotBatchable``), and why."""

    start: ClientStart
    reason: str


def padding_share(results) -> float:
    """Share of computed token positions that were padding, over a round's results."""
    done = [r for r in results if r is not None]
    computed = sum(r.metrics.get("computed_tokens", 0) for r in done)
    return 0.0 if computed == 0 else 1.0 - sum(r.metrics["tokens"] for r in done) / computed

