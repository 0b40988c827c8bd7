"""Client memory and bytes per round, per method, from ``rolora bench memory``'s own functions.

Counted, not timed (the same on any machine): trained numbers, optimiser state measured from the
optimiser the client builds, and upload/download from ``method.communication``. The MiniLM setting is
at the client-count experiment's LoRA rank (4; GaLore at the same rank), the toy at its rank 16.
"""

from __future__ import annotations

from typing import Any

from rolora.lab.bench.memory import MINILM, TOY, measure

MEMORY_FIELDS = ("setting", "method", "optimizer", "trained_params", "state_bytes", "training_bytes",
                 "upload_round1", "upload_round2", "download_round1", "download_round2")
SETTINGS = (("toy 784×784, r16", TOY, 16), ("MiniLM-L6 q,v, r4", MINILM, 4))


def memory_rows() -> list[dict[str, Any]]:
    rows = []
    for setting, specs, rank in SETTINGS:
        for r in measure(setting, specs, rank, rank):
            rows.append(dict(setting=setting, method=r.method, optimizer=r.optimizer, trained_params=r.trained_params,
                             state_bytes=r.state_bytes, training_bytes=r.training_bytes,
                             upload_round1=r.upload_bytes[0], upload_round2=r.upload_bytes[1],
                             download_round1=r.download_bytes[0], download_round2=r.download_bytes[1]))
    return rows
