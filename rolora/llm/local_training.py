"""Clients' local steps on the shared base model: the ``LocalTraining`` callable of a round.

Every participant gets a fresh optimiser (AdamW or SGD) over the tensors its method trains this
round (``ClientStart.trainable``) plus the classification head, runs ``local_steps`` steps of
``batch_size`` samples (or ``local_epochs`` passes), and returns its tensors. Reproducible and
independent of history: the batch order and every dropout mask of client k in round t come from
seeds derived from (run seed, t, k), so a resumed run replays exactly the same steps.

The round protocol's :class:`~rolora.federated.local_rules.LocalRules` (``start.rules``) are
honoured here: a drift correction (FedProx/SCAFFOLD) is added to the gradients after backward and
before clipping; DP-SGD computes each sample's gradient with its own forward/backward pass (the
obviously correct way: :func:`private_gradients`), clips, sums and noises them
(:func:`rolora.federated.privacy.dp_sgd_step`). Metrics report ``steps`` and ``lr`` (and
``head_lr`` when the head trains), which SCAFFOLD's control-variate update needs.

This module is the reference: :func:`sequential_training` trains the participants one after another
through :func:`train_client`. :mod:`rolora.llm.batched_training` trains them together (the same
results), and :func:`rolora.llm.training.local_training` picks one of the two for a run.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import torch

from rolora.federated.local_rules import DENSE, Key, SamplePrivacy
from rolora.federated.privacy import dp_sgd_step
from rolora.federated.round import ClientResult, ClientStart
from rolora.federated.seeding import derive_seed
from rolora.llm.adapter_layer import FederatedLinear
from rolora.llm.adapters import head_parameters, load_head, load_tensors, read_head, read_tensors
from rolora.llm.prepare import RunSetup
from rolora.llm.tasks import batch, loss

log = logging.getLogger("rolora.llm")


def learning_rate(config, t: int) -> float:
    """The round-t learning rate: linear warm-up over ``warmup_rounds``, then the schedule to the last round."""
    tr, total = config.train, config.total_rounds
    if tr.warmup_rounds and t <= tr.warmup_rounds:
        return tr.lr * t / tr.warmup_rounds
    if tr.schedule == "constant" or total <= tr.warmup_rounds + 1:
        return tr.lr
    progress = (t - tr.warmup_rounds - 1) / (total - tr.warmup_rounds - 1)  # 0 at the first decayed round
    if tr.schedule == "linear":
        return tr.lr * (1 - progress) + tr.lr * 1e-2 * progress  # ends at 1 % (a zero lr wastes the last round)
    return tr.lr * (1e-2 + (1 - 1e-2) * 0.5 * (1 + math.cos(math.pi * progress)))


def head_learning_rate(config, t: int) -> float:
    """The round-t learning rate of the classification head: ``train.head_lr`` (0: ``train.lr``)
    under the same warm-up and schedule as :func:`learning_rate`."""
    tr = config.train
    lr = learning_rate(config, t)
    return lr if tr.head_lr == 0 else lr * tr.head_lr / tr.lr


def batch_order(n: int, batch_size: int, steps: int, epochs: int, seed: int) -> Iterator[np.ndarray]:
    """Positions (0..n-1) of each local step's samples: ``epochs`` shuffled passes if > 0, else
    ``steps`` batches drawn from successive shuffles (a batch never holds a sample twice)."""
    rng = np.random.default_rng(seed)
    size = min(batch_size, n)
    if epochs > 0:
        for _ in range(epochs):
            order = rng.permutation(n)
            for start in range(0, n, size):
                yield order[start:start + size]
        return
    order, pos = rng.permutation(n), 0
    for _ in range(steps):
        if pos + size > n:
            order, pos = rng.permutation(n), 0
        yield order[pos:pos + size]
        pos += size


def make_optimizer(config, params: list, lr: float, head: list = (), head_lr: float | None = None,
                   compiled: bool = False) -> torch.optim.Optimizer:
    """The configured optimiser over ``params`` at ``lr`` and the ``head`` tensors at ``head_lr``
    (param groups; every optimiser here is per tensor, so groups change nothing else); ``compiled``:
    its update compiled as ``train.compile`` says (the client-batched trainer)."""
    tr = config.train
    head = list(head)
    groups = [{"params": list(params) + head}]
    if tr.optimizer == "galore":  # per tensor, so one optimiser over many clients' tensors is still one each
        from rolora.optim import galore_groups

        groups = galore_groups(groups[0]["params"], tr.galore_rank, tr.galore_period, tr.galore_scale)
    groups = _head_apart(groups, head, lr if head_lr is None else head_lr)
    if compiled:  # llm/compiled_step.py
        from rolora.llm.compiled_step import CompiledOptimizer

        for g in groups:
            g.setdefault("lr", lr)
        return CompiledOptimizer(groups, tr.optimizer, tr.compile, tr.weight_decay, tr.momentum)
    if tr.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=tr.momentum, weight_decay=tr.weight_decay)
    if tr.optimizer == "galore":
        from rolora.optim import GaLoreAdamW

        return GaLoreAdamW(groups, lr=lr, weight_decay=tr.weight_decay)
    return torch.optim.AdamW(groups, lr=lr, weight_decay=tr.weight_decay)


def _head_apart(groups: list[dict], head: list, head_lr: float) -> list[dict]:
    """Each group split in two: its non-head tensors (the optimiser's lr) and its head tensors (``head_lr``)."""
    ids = {id(p) for p in head}
    out = []
    for g in groups:
        rest = [p for p in g["params"] if id(p) not in ids]
        mine = [p for p in g["params"] if id(p) in ids]
        if rest:
            out.append({**g, "params": rest})
        if mine:
            out.append({**g, "params": mine, "lr": head_lr})
    return out


def trained_by_key(adapters: dict[str, FederatedLinear], model: torch.nn.Module,
                   train_head: bool) -> dict[Key, torch.nn.Parameter]:
    """The loaded client's trainable tensors as the round protocol keys them (``local_rules``):
    ``(layer, name)`` for an adapter tensor, ``(DENSE, "classifier.weight")`` etc. for the head."""
    out = {(layer, name): p for layer, module in adapters.items() for name, p in module.tensors.items()
           if p.requires_grad}
    if train_head:
        out.update({(DENSE, name): p for name, p in head_parameters(model).items()})
    return out


def private_gradients(setup: RunSetup, rows, params: dict[Key, torch.nn.Parameter], privacy: SamplePrivacy,
                      generator: torch.Generator) -> tuple[torch.Tensor, dict[str, int]]:
    """DP-SGD's gradient of one step, put in ``p.grad`` (:func:`rolora.federated.privacy.dp_sgd_step`:
    each sample's own forward/backward, drawing its own dropout masks). Returns the batch's mean loss
    (not finite: the gradients are not set) and the step's token counts."""
    c, model = setup.config, setup.model
    counts = {"tokens": 0, "computed": 0}

    def sample_losses():
        for row in rows:
            tensors = {name: x.to(setup.device) for name, x in batch(setup.train, [row]).items()}
            counts["tokens"] += int(tensors["attention_mask"].sum())
            counts["computed"] += tensors["attention_mask"].numel()
            yield loss(model, tensors, c.model.task).sum()

    return dp_sgd_step(params, sample_losses(), privacy.clip, privacy.noise, generator), counts


def train_client(setup: RunSetup, start: ClientStart, lr: float, head_lr: float | None = None) -> ClientResult | None:
    """One client's local training from ``start`` (the head at ``head_lr``, default ``lr``), under
    ``start.rules`` if any; None if its loss turns non-finite (it is dropped)."""
    c, k, t = setup.config, start.client, start.t
    model = setup.model
    adapted = load_tensors(setup.adapters, start.tensors, start.trainable, setup.method, c.lora.alpha)
    head = load_head(model, start.dense, trainable=True) if setup.train_head else []
    params = adapted + head
    if not params:
        raise ValueError(f"round {t}, client {k}: method {setup.method.name} trains nothing this round")
    by_key = trained_by_key(setup.adapters, model, setup.train_head)
    correction = start.rules.correction if start.rules is not None else None
    privacy = start.rules.privacy if start.rules is not None else None
    optimizer = make_optimizer(c, adapted, lr, head, head_lr)
    samples = setup.clients[k]
    torch.manual_seed(derive_seed(c.run.seed, "dropout", t, k))  # dropout masks: LoRA's and the model's
    model.train()
    losses, tokens, computed, steps = [], 0, 0, 0
    for positions in batch_order(len(samples), c.train.batch_size, c.train.local_steps, c.train.local_epochs,
                                 derive_seed(c.run.seed, "batches", t, k)):
        optimizer.zero_grad(set_to_none=True)
        if privacy is None:
            tensors = {name: x.to(setup.device) for name, x in batch(setup.train, samples[positions]).items()}
            value = loss(model, tensors, c.model.task).mean()
            counts = {"tokens": int(tensors["attention_mask"].sum()), "computed": tensors["attention_mask"].numel()}
            if bool(torch.isfinite(value)):
                value.backward()
        else:  # step j of client k draws its noise from privacy.generator(t, k, j), j = 0, 1, ...
            value, counts = private_gradients(setup, samples[positions], by_key, privacy,
                                              privacy.generator(t, k, steps))
        if not bool(torch.isfinite(value)):
            log.warning("round %d: client %s dropped, its loss is %s at local step %d", t, k, value.item(), steps + 1)
            model.eval()
            return None
        if correction is not None:  # FedProx / SCAFFOLD: part of the gradient, so before clipping
            correction.add_to(by_key)
        # Under DP-SGD each sample's gradient is already clipped (privatise_batch): clipping the
        # noisy mean again would change the noise's calibration, so max_grad_norm is skipped.
        if c.train.max_grad_norm > 0 and privacy is None:
            torch.nn.utils.clip_grad_norm_(params, c.train.max_grad_norm)
        optimizer.step()
        losses.append(value.item())
        tokens += counts["tokens"]
        computed += counts["computed"]
        steps += 1
    model.eval()
    metrics = {"train_loss": float(np.mean(losses)), "tokens": tokens, "computed_tokens": computed, "steps": steps,
               "lr": lr}
    if head:
        metrics["head_lr"] = lr if head_lr is None else head_lr
    return ClientResult(
        tensors=read_tensors(setup.adapters),
        num_samples=float(len(samples)),
        dense=read_head(model) if setup.train_head else {},
        metrics=metrics,
    )


def sequential_training(setup: RunSetup, progress: Callable[[int], None] | None = None):
    """A ``LocalTraining`` callable that trains the participants one after another."""

    def train(t: int, starts: Sequence[ClientStart]) -> list[ClientResult | None]:
        lr, head_lr = learning_rate(setup.config, t), head_learning_rate(setup.config, t)
        results = []
        for start in starts:
            results.append(train_client(setup, start, lr, head_lr))
            if progress is not None:
                progress(1)
        return results

    return train
