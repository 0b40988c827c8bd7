"""Held-out metrics (test, and validation where the run has one) of the global model, or of each
client's own model for personalised methods.

The validation split (``data.val_size``) is what a learning rate is chosen on: a sweep's selection
cells score it alone (``run.eval_splits = ["val"]``), so the test set never steers a choice.

Shared-model methods: the model every client would start the next round from, on the whole test set.
Personalised methods (FedSA-LoRA, Fed-ALoRA): each evaluated client's own next-round model, scored
on the test set re-weighted to that client's training label mix (accuracy = Σ_c p_k(c)·acc_k(c),
likewise the loss), then the mean over those clients weighted by their training-sample counts —
exactly as ``rolora toy`` does. For IID clients this is close to plain test accuracy; for label-skewed
clients it measures what a personalised model is for. Instruction tuning has no labels: plain loss.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from rolora.federated import GlobalState, ModelTensors
from rolora.federated.round import next_model
from rolora.llm.adapters import load_head, load_tensors
from rolora.llm.prepare import RunSetup
from rolora.llm.tasks import Encoded, evaluate, per_sample_metrics, summarise


def load_model_of(setup: RunSetup, state: GlobalState, client, kept: Mapping) -> None:
    """Put ``client``'s next-round tensors (and the averaged head) into the shared model, frozen."""
    tensors = next_model(setup.method, state, client, kept)
    load_tensors(setup.adapters, tensors, frozenset(), setup.method, setup.config.lora.alpha)
    if setup.train_head:
        load_head(setup.model, dict(state.dense), trainable=False)


def label_mix(setup: RunSetup, client) -> np.ndarray:
    """Client ``client``'s training label frequencies."""
    labels = setup.train.labels[setup.clients[client]]
    counts = np.bincount(labels, minlength=len(setup.label_names)).astype(np.float64)
    return counts / counts.sum()


def mix_weighted(setup: RunSetup, metrics: dict[str, np.ndarray], mix: np.ndarray,
                 data: Encoded | None = None) -> dict[str, float]:
    """Loss and accuracy of per-sample metrics on ``data`` (default: the test set) re-weighted to
    the label mix ``mix``.

    Each sample of class c weighs mix[c] / (samples of class c); classes absent from ``data`` drop
    out and the rest are renormalised.
    """
    labels = (data or setup.test).labels
    per_class = np.bincount(labels, minlength=len(mix)).astype(np.float64)
    mix = np.where(per_class > 0, mix, 0.0)
    if mix.sum() == 0:  # the client's labels are all absent from the test set: plain means
        mix = per_class
    w = mix[labels] / per_class[labels]
    w = w / w.sum()
    return {"loss": float(w @ metrics["loss"]), "accuracy": float(w @ metrics["correct"].astype(np.float64))}


def evaluate_round(setup: RunSetup, state: GlobalState, kept: Mapping[object, ModelTensors | None],
                   clients: Sequence, data: Encoded | None = None) -> dict[str, float]:
    """Metrics on ``data`` (default: the test set) after ``state.round`` rounds (``clients``: whom
    to score for personalised methods)."""
    batch_size = setup.config.run.eval_batch_size
    data = data or setup.test
    if not setup.method.personalised:
        load_model_of(setup, state, clients[0], kept)
        return evaluate(setup.model, data, batch_size)
    weights = np.asarray([len(setup.clients[k]) for k in clients], dtype=np.float64)
    weights /= weights.sum()
    scores = []
    for k in clients:
        load_model_of(setup, state, k, kept)
        metrics = per_sample_metrics(setup.model, data, batch_size)
        if setup.config.model.task == "instruction":  # no labels: the plain held-out loss
            scores.append(summarise(metrics))
        else:
            scores.append(mix_weighted(setup, metrics, label_mix(setup, k), data))
    return {key: float(sum(w * s[key] for w, s in zip(weights, scores))) for key in scores[0]}


def eval_sets(setup: RunSetup) -> dict[str, Encoded]:
    """The splits to score, by name, in ``run.eval_splits`` order ("val" only where the run has one).

    The validation rows are the ones :func:`rolora.llm.data.split` set aside in ``prepare_data``
    (same seed, same sizes), encoded like the test set.
    """
    c = setup.config
    sets = {}
    for name in c.run.eval_splits:
        if name == "test":
            sets["test"] = setup.test
        elif c.data.val_size > 0:
            sets["val"] = validation_set(setup)
    return sets


def validation_set(setup: RunSetup) -> Encoded:
    from rolora.llm.data import split
    from rolora.llm.prepare import _size, load_data
    from rolora.llm.tasks import encode

    c = setup.config
    _, val_ds, _ = split(load_data(c), test_size=_size(c.data.test_size), val_size=_size(c.data.val_size),
                         seed=c.split_seed)
    options = {}
    if c.model.task == "generation-classification":
        options = {k: v for k, v in (("template", c.data.template), ("label_words", list(c.data.label_words))) if v}
    return encode(c.model.task, setup.tokenizer, val_ds, c.model.max_length, **options)
