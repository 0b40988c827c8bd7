"""Test metrics of the global model, or of each client's own model for personalised methods.

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
from rolora.llm.tasks import evaluate, per_sample_metrics, summarise


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


def mix_weighted(setup: RunSetup, metrics: dict[str, np.ndarray], mix: np.ndarray) -> dict[str, float]:
    """Loss and accuracy of per-sample test metrics re-weighted to the label mix ``mix``.

    Each test sample of class c weighs mix[c] / (test samples of class c); classes absent from the
    test set drop out and the rest are renormalised.
    """
    labels = setup.test.labels
    per_class = np.bincount(labels, minlength=len(mix)).astype(np.float64)
    mix = np.where(per_class > 0, mix, 0.0)
    if mix.sum() == 0:  # the client's labels are all absent from the test set: plain means
        mix = per_class
    w = mix[labels] / per_class[labels]
    w = w / w.sum()
    return {"loss": float(w @ metrics["loss"]), "accuracy": float(w @ metrics["correct"].astype(np.float64))}


def evaluate_round(setup: RunSetup, state: GlobalState, kept: Mapping[object, ModelTensors | None],
                   clients: Sequence) -> dict[str, float]:
    """Test metrics after ``state.round`` rounds (``clients``: whom to score for personalised methods)."""
    batch_size = setup.config.run.eval_batch_size
    if not setup.method.personalised:
        load_model_of(setup, state, clients[0], kept)
        return evaluate(setup.model, setup.test, batch_size)
    weights = np.asarray([len(setup.clients[k]) for k in clients], dtype=np.float64)
    weights /= weights.sum()
    scores = []
    for k in clients:
        load_model_of(setup, state, k, kept)
        metrics = per_sample_metrics(setup.model, setup.test, batch_size)
        if setup.config.model.task == "instruction":  # no labels: the plain held-out loss
            scores.append(summarise(metrics))
        else:
            scores.append(mix_weighted(setup, metrics, label_mix(setup, k)))
    return {key: float(sum(w * s[key] for w, s in zip(weights, scores))) for key in scores[0]}
