"""Local training, evaluation and the federated loop of the toy experiment.

Every round is :func:`rolora.federated.round.run_round` (participants, client start, keep, upload,
``method.aggregate``); this file only supplies the local training. Clients are stateless apart from
what ``method.client_keep`` returns, and their optimiser is re-created every round.

Evaluation (after round 0, i.e. the init, and after every round):
- shared-model methods: the broadcast model (``client_start`` of client 0 for round t+1) on the full
  test set.
- personalised methods (``method.personalised``, e.g. fedsa-lora, fed-alora): each participating
  client's own next-round model, scored on the test set *re-weighted to that client's training label
  mix* (accuracy = Σ_c p_k(c)·acc_k(c), likewise the loss), then the mean over participants weighted
  by their training-sample counts. For label-disjoint splits this is the client's accuracy on its own
  labels; for IID splits it is close to plain test accuracy.

Local training honours the round protocol's :class:`~rolora.federated.local_rules.LocalRules`
(``start.rules``): a drift correction (FedProx/SCAFFOLD, keys ``(LAYER, name)``) is added to the
gradients after backward; DP-SGD computes every sample's gradient with its own forward/backward
(the obviously correct reference) and combines them with
:func:`rolora.federated.privacy.dp_sgd_step`. Results report ``lr`` and ``steps``.

Reproducible: every random draw (batch order, participants, subsample, W_out, B₀) comes from an
explicit generator seeded by (seed, round, client); no global RNG is touched. Same config, seed and
torch thread count give bit-identical numbers on CPU (the test checks two runs for equality).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from rolora.federated.api import Method
from rolora.federated.local_rules import LocalRules
from rolora.federated.privacy import dp_sgd_step
from rolora.federated.partition import subsample
from rolora.federated.registry import method_from_spec
from rolora.federated.round import ClientResult, ClientStart, next_model, one_by_one, run_round
from rolora.optim import GaLoreAdamW
from rolora.toy.data import NUM_CLASSES, NUM_PIXELS, Mnist
from rolora.toy.init_state import initial_state
from rolora.toy.method_spec import split_spec, with_spec_training_keys
from rolora.toy.model import LAYER, logits, make_w_out
from rolora.toy.partition import make_partition

OPTIMIZERS = ("sgd", "adam", "galore")


@dataclass(frozen=True)
class ToyConfig:
    """One federated run. Defaults are the ones ``rolora toy`` uses (see the CLI help).

    The defaults were picked so that the default CLI run (2 splits × 3 methods × 40 rounds) takes
    about 1.5 minutes on one CPU core and shows the paper's ordering: plain SGD (Adam at 1e-4..2e-3
    drifted or stalled for every method on 10×1), lr 0.05 (0.1 converges faster but RoLoRA's 10×1
    curve then dips), batch 64, 5 local epochs (the paper's), 10% of each client's images (~500 or
    ~1,000 per client; a fraction keeps the split's shape), rank 16 and alpha 16 (s = 1).
    """

    method: str = "rolora"
    split: str = "10x1"
    model: str = "mlp"
    rank: int = 16
    alpha: float = 16.0  # s = alpha / rank = 1
    rounds: int = 40
    local_epochs: int = 5
    batch_size: int = 64
    optimizer: str = "sgd"
    lr: float = 0.05
    # optimizer "galore": GaLore-AdamW (rolora.optim) on the full-rank W of fedavg-full; rank r,
    # SVD refresh every `galore_period` steps (and at each round's first step: the optimiser is new
    # every round), update scale. Defaults: r = the LoRA rank, the GaLore paper's T = 200 and 0.25.
    galore_rank: int = 16
    galore_period: int = 200
    galore_scale: float = 0.25
    participation: float = 1.0  # fraction of clients per round (at least one)
    subsample: float = 0.1  # fraction of each client's training images used (1: all)
    num_clients: int = 10  # for iid / dirichlet
    alpha_dir: float = 0.5  # Dirichlet concentration
    b_init: float | None = None  # B₀ ~ U(±b_init); None: the balanced √(r/(n·d)), see init_state
    seed: int = 0

    def check(self) -> None:
        """Raise ValueError naming the first bad field."""
        from rolora.toy.model import KINDS
        from rolora.toy.partition import SPLITS

        if self.split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {self.split!r}")
        if self.model not in KINDS:
            raise ValueError(f"model must be one of {KINDS}, got {self.model!r}")
        if self.seed < 0:
            raise ValueError(f"seed must be ≥ 0, got {self.seed}")
        for name in ("alpha", "alpha_dir"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.b_init is not None and not self.b_init > 0:
            raise ValueError(f"b_init must be > 0, got {self.b_init}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        for name in ("rank", "rounds", "local_epochs", "batch_size", "num_clients", "galore_rank", "galore_period"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be ≥ 1, got {getattr(self, name)}")
        if not 0 < self.subsample <= 1:
            raise ValueError(f"subsample must be in (0, 1], got {self.subsample}")
        if not 0 < self.participation <= 1:
            raise ValueError(f"participation must be in (0, 1], got {self.participation}")
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.galore_rank > NUM_PIXELS:
            raise ValueError(f"galore_rank must be ≤ min(d, n) = {NUM_PIXELS}, got {self.galore_rank}")
        if not self.galore_scale > 0:
            raise ValueError(f"galore_scale must be > 0, got {self.galore_scale}")


@dataclass
class History:
    """Per-round results of one run; index 0 is the initial model."""

    config: ToyConfig
    rounds: list[int] = field(default_factory=list)
    test_acc: list[float] = field(default_factory=list)
    test_loss: list[float] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)  # mean local loss of the round (nan at 0)

    def rows(self) -> list[dict]:
        """One flat dict per round (config fields + metrics), for CSV."""
        cfg = asdict(self.config)
        return [
            {**cfg, "round": r, "test_acc": a, "test_loss": l, "train_loss": tl}
            for r, a, l, tl in zip(self.rounds, self.test_acc, self.test_loss, self.train_loss)
        ]


def derived_seed(*parts: int) -> int:
    """A 63-bit seed from a tuple of ints (NumPy's SeedSequence mixing, no global state).

    New code derives seeds with :func:`rolora.federated.seeding.derive_seed`. The toy keeps this
    older stream (head W_out, batch order) because switching would move every published number in
    ``docs/toy-mnist*.csv``.
    """
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1, dtype=np.uint64)[0] >> 1)


def local_steps(n: int, cfg: ToyConfig) -> int:
    """Optimiser steps :func:`local_train` takes on ``n`` samples: ``local_epochs`` passes of ⌈n / batch⌉."""
    return cfg.local_epochs * math.ceil(n / cfg.batch_size)


def local_train(method: Method, local: Mapping[str, Mapping[str, Tensor]], trainable: frozenset[str], x: Tensor,
                y: Tensor, cfg: ToyConfig, w_out: Tensor, gen: torch.Generator, rules: LocalRules | None = None,
                t: int = 0, client: object = 0) -> tuple[dict, float]:
    """Train the ``trainable`` tensors of ``local`` on (x, y); return (new tensors, mean batch loss).

    A fresh optimiser each call (clients keep no optimiser state). Tensors not in ``trainable`` are
    frozen. The inputs are not modified. ``rules`` (round ``t``, ``client``): a drift correction
    added to every step's gradient, and/or DP-SGD (step j's noise from ``privacy.generator(t, client, j)``).
    """
    tensors = {
        layer: {k: v.detach().clone().requires_grad_(k in trainable) for k, v in ts.items()}
        for layer, ts in local.items()
    }
    params = [v for ts in tensors.values() for v in ts.values() if v.requires_grad]
    if not params:
        raise ValueError(f"method {method.name} trains nothing ({sorted(trainable)}) in this round")
    opt = make_optimizer(cfg, tensors, method)
    by_key = {(layer, k): v for layer, ts in tensors.items() for k, v in ts.items() if v.requires_grad}
    correction = rules.correction if rules is not None else None
    privacy = rules.privacy if rules is not None else None
    n, losses = x.shape[0], []
    for _ in range(cfg.local_epochs):
        order = torch.randperm(n, generator=gen)
        for start in range(0, n, cfg.batch_size):
            idx = order[start:start + cfg.batch_size]
            opt.zero_grad(set_to_none=True)
            if privacy is None:
                loss = F.cross_entropy(logits(x[idx], tensors[LAYER], method, cfg.alpha, w_out, cfg.model), y[idx])
                loss.backward()
            else:
                loss = dp_sgd_step(by_key, sample_losses(method, tensors, x[idx], y[idx], cfg, w_out),
                                   privacy.clip, privacy.noise, privacy.generator(t, client, len(losses)))
            if correction is not None:  # FedProx / SCAFFOLD: an extra gradient term
                correction.add_to(by_key)
            opt.step()
            losses.append(loss.item())
    return {layer: {k: v.detach() for k, v in ts.items()} for layer, ts in tensors.items()}, float(np.mean(losses))


def sample_losses(method: Method, tensors: Mapping[str, Mapping[str, Tensor]], x: Tensor, y: Tensor,
                  cfg: ToyConfig, w_out: Tensor) -> Iterator[Tensor]:
    """Each sample's own loss, one at a time (for :func:`rolora.federated.privacy.dp_sgd_step`)."""
    for i in range(x.shape[0]):
        yield F.cross_entropy(logits(x[i:i + 1], tensors[LAYER], method, cfg.alpha, w_out, cfg.model), y[i:i + 1])


def make_optimizer(cfg: ToyConfig, tensors: Mapping[str, Mapping[str, Tensor]], method: Method) -> torch.optim.Optimizer:
    """The round's fresh local optimiser over the tensors that require grad.

    "galore": GaLore on every trained full-rank ``W`` (AdamW for anything else); a method that trains
    no ``W`` (every LoRA method) is refused, since GaLore is the optimiser of full-rank updates.
    """
    params = [v for ts in tensors.values() for v in ts.values() if v.requires_grad]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr)
    full = [ts["W"] for ts in tensors.values() if "W" in ts and ts["W"].requires_grad]
    if not full:
        raise ValueError(f"optimizer galore trains full-rank W tensors; method {method.name} trains "
                         f"{sorted({k for ts in tensors.values() for k, v in ts.items() if v.requires_grad})} "
                         f"(use optimizer sgd or adam for LoRA methods)")
    rest = [p for p in params if all(p is not w for w in full)]
    groups = [{"params": full, "galore": True}] + ([{"params": rest}] if rest else [])
    return GaLoreAdamW(groups, lr=cfg.lr, rank=cfg.galore_rank, period=cfg.galore_period, scale=cfg.galore_scale)


@torch.no_grad()
def per_class_scores(method: Method, layer: Mapping[str, Tensor], x: Tensor, y: Tensor, cfg: ToyConfig,
                     w_out: Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Accuracy and mean cross-entropy of one model on each test class (two arrays of length 10)."""
    out = logits(x, layer, method, cfg.alpha, w_out, cfg.model)
    correct = (out.argmax(1) == y).double()
    loss = F.cross_entropy(out, y, reduction="none").double()
    count = torch.bincount(y, minlength=NUM_CLASSES).double()
    acc = torch.bincount(y, weights=correct, minlength=NUM_CLASSES) / count
    ce = torch.bincount(y, weights=loss, minlength=NUM_CLASSES) / count
    return acc.numpy(), ce.numpy()


def evaluate(method: Method, models: Sequence[Mapping[str, Tensor]], label_mix: Sequence[np.ndarray],
             weights: Sequence[float], x: Tensor, y: Tensor, cfg: ToyConfig, w_out: Tensor) -> tuple[float, float]:
    """Weighted mean over ``models`` of (accuracy, loss) on the test set re-weighted by each label mix.

    With one model and the test set's own label frequencies this is plain test accuracy and loss.
    """
    accs, losses = [], []
    for layer, mix in zip(models, label_mix):
        acc, ce = per_class_scores(method, layer, x, y, cfg, w_out)
        accs.append(float(mix @ acc))
        losses.append(float(mix @ ce))
    w = np.asarray(weights, dtype=np.float64) / np.sum(weights)
    return float(w @ accs), float(w @ losses)


def run_federated(cfg: ToyConfig, data: Mnist, on_round: Callable[[int], None] | None = None) -> History:
    """Run ``cfg.rounds`` federated rounds of ``cfg.method`` on MNIST; return the per-round history.

    ``on_round(t)`` is called after each round (progress bars). Training keys in ``cfg.method``
    (``optimizer``, ``lr``, ``galore_*``; see :mod:`rolora.toy.method_spec`) override ``cfg``'s fields.
    """
    cfg = with_spec_training_keys(cfg)
    cfg.check()
    method = method_from_spec(split_spec(cfg.method)[0], total_rounds=cfg.rounds)
    parts = subsample(make_partition(cfg.split, data.train_y, cfg.seed, cfg.num_clients, cfg.alpha_dir),
                      cfg.subsample, cfg.seed)
    for k, idx in enumerate(parts):
        if len(idx) == 0:
            raise ValueError(f"client {k} of split {cfg.split} holds no training samples")
    xs = [torch.from_numpy(data.train_x[idx]) for idx in parts]
    ys = [torch.from_numpy(data.train_y[idx]) for idx in parts]
    sizes = [len(idx) for idx in parts]
    mixes = [np.bincount(data.train_y[idx], minlength=NUM_CLASSES) / len(idx) for idx in parts]
    test_x, test_y = torch.from_numpy(data.test_x), torch.from_numpy(data.test_y)
    test_mix = np.bincount(data.test_y, minlength=NUM_CLASSES) / len(data.test_y)
    w_out = make_w_out(derived_seed(cfg.seed, 1))

    state = initial_state(method, cfg.rank, cfg.alpha, cfg.seed, cfg.b_init)
    personal: dict[int, object] = {}
    history = History(config=cfg)

    def record(t: int, clients: list[int], train_loss: float) -> None:
        if method.personalised:
            models = [next_model(method, state, k, personal)[LAYER] for k in clients]
            acc, loss = evaluate(method, models, [mixes[k] for k in clients], [sizes[k] for k in clients],
                                 test_x, test_y, cfg, w_out)
        else:
            model = next_model(method, state, 0, personal)[LAYER]
            acc, loss = evaluate(method, [model], [test_mix], [1.0], test_x, test_y, cfg, w_out)
        history.rounds.append(t)
        history.test_acc.append(acc)
        history.test_loss.append(loss)
        history.train_loss.append(train_loss)

    def train_client(t: int, start: ClientStart) -> ClientResult:
        k = start.client
        gen = torch.Generator().manual_seed(derived_seed(cfg.seed, t, k, 2))
        tensors, loss = local_train(method, start.tensors, start.trainable, xs[k], ys[k], cfg, w_out, gen,
                                    rules=start.rules, t=t, client=k)
        return ClientResult(tensors=tensors, num_samples=sizes[k],
                            metrics={"loss": loss, "lr": cfg.lr, "steps": local_steps(sizes[k], cfg)})

    record(0, list(range(len(parts))), float("nan"))
    for t in range(1, cfg.rounds + 1):
        result = run_round(method, state, len(parts), one_by_one(train_client), personal,
                           fraction=cfg.participation, seed=cfg.seed, weighting="samples")
        state, personal = result.state, result.kept
        clients = list(result.results)
        losses = [result.results[k].metrics["loss"] for k in clients]
        record(t, clients, float(np.average(losses, weights=[sizes[k] for k in clients])))
        if on_round is not None:
            on_round(t)
    return history
