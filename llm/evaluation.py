"""Test metrics of the global model, or of each client's own model for personalised methods.

Shared-model methods: the model every client would start the next round from, on the whole test set.
Personalised methods (FedSA-LoRA, Fed-ALoRA): each evaluated client's own next-round model, scored
on the test set re-weighted to that client's training label mix (accuracy = Σ_c p_k(c)·acc_k(c),
likewise the loss), then the mean over those clients weighted by their training-sample counts —
exactly as ``rolora toy`` does. For IID clients this is close to plain test accuracy; for label-skewed
clients it measures what a personalised model is for. Instruction tuning has no labels: plain loss.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence

import numpy as np

from rolora.federated import GlobalState, ModelTensors
from rolora.federated.round import next_model
from rolora.llm.adapters import load_head, load_tensors
from rolora.llm.prepare import RunSetup
from rolora.llm.tasks import Encoded, evaluate


def load_model_of(setup: RunSetup, state: GlobalState, client, kept: Mapping) -> None:
    """Put ``client``'s next-round tensors (and the averaged head) into the shared model, frozen."""
    tensors = next_model(setup.method, state, client, kept)
    load_tensors(setup.adapters, tensors, frozenset(), setup.method, setup.config.lora.alpha)
    if setup.train_head:
        load_head(setup.model, dict(state.dense), trainable=False)


def subset(encoded: Encoded, rows: np.ndarray) -> Encoded:
    """The encoded samples at ``rows``."""
    pick = [int(i) for i in rows]
    return dataclasses.replace(
        encoded,
        input_ids=[encoded.input_ids[i] for i in pick],
        labels=None if encoded.labels is None else encoded.labels[pick],
        token_type_ids=None if encoded.token_type_ids is None else [encoded.token_type_ids[i] for i in pick],
        answer_start=None if encoded.answer_start is None else [encoded.answer_start[i] for i in pick],
    )


def label_mix(setup: RunSetup, client) -> np.ndarray:
    """Client ``client``'s training label frequencies."""
    labels = setup.train.labels[setup.clients[client]]
    counts = np.bincount(labels, minlength=len(setup.label_names)).astype(np.float64)
    return counts / counts.sum()


def per_class(setup: RunSetup) -> dict[str, np.ndarray]:
    """Metrics of the loaded model on each test class (arrays over classes; nan where a class is absent)."""
    out: dict[str, list[float]] = {}
    for c in range(len(setup.label_names)):
        rows = np.flatnonzero(setup.test.labels == c)
        scores = evaluate(setup.model, subset(setup.test, rows), setup.config.run.eval_batch_size) if len(rows) else {}
        for key in ("loss", "accuracy"):
            out.setdefault(key, []).append(scores.get(key, math.nan))
    return {k: np.asarray(v) for k, v in out.items()}


def evaluate_round(setup: RunSetup, state: GlobalState, kept: Mapping[object, ModelTensors | None],
                   clients: Sequence) -> dict[str, float]:
    """Test metrics after ``state.round`` rounds (``clients``: whom to score for personalised methods)."""
    if not setup.method.personalised:
        load_model_of(setup, state, clients[0], kept)
        return evaluate(setup.model, setup.test, setup.config.run.eval_batch_size)
    if setup.config.model.task == "instruction":
        weights, rows = [], []
        for k in clients:
            load_model_of(setup, state, k, kept)
            rows.append(evaluate(setup.model, setup.test, setup.config.run.eval_batch_size))
            weights.append(len(setup.clients[k]))
        w = np.asarray(weights, dtype=np.float64) / np.sum(weights)
        return {key: float(sum(wi * r[key] for wi, r in zip(w, rows))) for key in rows[0]}
    totals = {"loss": 0.0, "accuracy": 0.0}
    weight = float(sum(len(setup.clients[k]) for k in clients))
    for k in clients:
        load_model_of(setup, state, k, kept)
        scores, mix = per_class(setup), label_mix(setup, k)
        present = ~np.isnan(scores["accuracy"])
        mix = np.where(present, mix, 0.0)
        mix = mix / mix.sum() if mix.sum() > 0 else present / present.sum()
        for key in totals:
            totals[key] += len(setup.clients[k]) / weight * float(np.nansum(mix * scores[key]))
    return totals
