"""A training round's metrics row: one function, so the embedded engine and the Flower server write
the same keys with the same values (a new per-round key goes here, once, for both)."""

from __future__ import annotations

from rolora.federated.diagnostics import summary
from rolora.llm.local_training import learning_rate


def round_row(config, t: int, outcome, wall: float, transport: dict | None = None, state=None) -> dict:
    """Round ``t``'s row from ``outcome`` (anything with ``results``, ``participants``, ``dropped``,
    ``communication`` and ``diagnostics``: the core's RoundResult, Flower's RoundRecord) and its
    ``wall`` seconds. ``product_gap`` / ``client_drift`` are the means over layers of the round's
    product-averaging gap and client drift (:mod:`rolora.federated.diagnostics`; None where the
    server cannot see them: personalised methods, SecAgg+, layers that are not plain LoRA);
    ``layers`` holds each layer's gap, drift and update norm.

    ``transport``: keys an engine adds about what its transport carried (Flower's ``flower_*_bytes``),
    placed next to the method's own byte counts.
    """
    results = outcome.results
    samples = sum(r.num_samples for r in results.values())
    train_loss = sum(r.num_samples * r.metrics["train_loss"] for r in results.values()) / samples
    tokens = sum(int(r.metrics["tokens"]) for r in results.values())
    comm = outcome.communication
    return {
        "round": t,
        "train_loss": train_loss,
        "lr": learning_rate(config, t),
        "participants": len(outcome.participants),
        "dropped": list(outcome.dropped),
        "upload_bytes": comm.total_upload_params * comm.bytes_per_param,
        "download_bytes": comm.total_download_params * comm.bytes_per_param,
        **(transport or {}),
        "wall_s": wall,
        "tokens": tokens,
        "tokens_per_s": tokens / wall if wall > 0 else None,
        **summary(outcome.diagnostics),
        **privacy_spent(state),
        "layers": {name: {"gap": d.gap, "drift": d.drift, "update_norm": d.update_norm}
                   for name, d in outcome.diagnostics.items()},
    }


def privacy_spent(state) -> dict:
    """``dp_epsilon`` / ``dp_delta`` of the state's accountant (``{}`` without differential privacy)."""
    spent = {} if state is None else state.extras.get("privacy")
    if not spent:
        return {}
    return {"dp_epsilon": spent["epsilon"], "dp_delta": spent["delta"]}
