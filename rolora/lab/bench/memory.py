"""``rolora bench memory``: a client's training memory and per-round communication, per method.

For each setting (the toy's one 784×784 layer; MiniLM-L6's query and value, 12 layers of 384×384)
and each (method, local optimiser) it prints:

- trained: the numbers a client trains in a round (the method's ``trains(t)`` tensors; the peak
  over rounds 1 and 2, so RoLoRA's larger phase);
- gradient: the same count (one gradient per trained number; GaLore's gradient is still dense d×n);
- optimiser state: the bytes in ``optimizer.state`` of the optimiser the client builds, counted
  after one step (:func:`rolora.optim.memory.measured_state_bytes`), not from a formula;
- up / down: per-client bytes of rounds 1 and 2 from ``method.communication`` (fp32).

Everything is float32 and excludes the frozen base, activations and the classification head (the
same dense head for every method). A GaLore refresh also holds one matrix's SVD (U, Σ, Vᵀ) for a
moment, one layer at a time: ≤ 2·d·n numbers transiently, not counted here.

    rolora bench memory
    rolora bench memory --lora-rank 4 --galore-rank 4
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass

from rolora.federated.api import LayerSpec
from rolora.federated.registry import get_method
from rolora.optim.memory import measured_state_bytes

TOY = {"hidden": LayerSpec(784, 784)}
"""The toy's targeted layer (``rolora.toy.model.layer_specs``; repeated: llm never imports toy)."""
MINILM = {f"layer.{i}.{m}": LayerSpec(384, 384) for i in range(6) for m in ("query", "value")}
"""MiniLM-L6 (hidden 384, 6 blocks), LoRA/full-rank on query and value as in minilm-rotten-tomatoes."""

RUNS = [
    ("fedavg-lora", "adamw"), ("flexlora", "adamw"), ("ffa-lora", "adamw"), ("rolora", "adamw"),
    ("fedavg-full", "sgd"), ("fedavg-full", "adamw"), ("fedavg-full", "galore"),
]


@dataclass
class Row:
    setting: str
    method: str
    optimizer: str
    trained_params: int
    state_bytes: int
    upload_bytes: tuple[int, int]
    download_bytes: tuple[int, int]

    @property
    def training_bytes(self) -> int:
        """Trained tensors + their gradients + optimiser state (fp32)."""
        return 2 * 4 * self.trained_params + self.state_bytes


def trained_shapes(method_name: str, specs: dict[str, LayerSpec], rank: int, t: int) -> list[tuple[int, ...]]:
    """Shapes of the tensors a client trains in round t (from the method's own init and ``trains``)."""
    method = get_method(method_name)
    state = method.init(specs, rank, alpha=2.0 * rank, seed=0)
    names = method.trains(t)
    return [tuple(x.shape) for layer in state.layers.values() for k, x in layer.items() if k in names]


def measure(setting: str, specs: dict[str, LayerSpec], lora_rank: int, galore_rank: int) -> list[Row]:
    rows = []
    for name, optimizer in RUNS:
        per_round = [trained_shapes(name, specs, lora_rank, t) for t in (1, 2)]
        peak = max(per_round, key=lambda shapes: sum(a * b for a, b in shapes))
        comm = [get_method(name).communication(specs, lora_rank, t) for t in (1, 2)]
        rows.append(Row(
            setting=setting, method=name, optimizer=optimizer if optimizer != "galore" else f"galore r={galore_rank}",
            trained_params=sum(a * b for a, b in peak),
            state_bytes=measured_state_bytes(peak, optimizer, rank=galore_rank),
            upload_bytes=(comm[0].upload_bytes, comm[1].upload_bytes),
            download_bytes=(comm[0].download_bytes, comm[1].download_bytes),
        ))
    return rows


def _mib(n: int) -> str:
    return f"{n / 2**20:.2f}"


def _pair(pair: tuple[int, int]) -> str:
    return _mib(pair[0]) if pair[0] == pair[1] else f"{_mib(pair[0])} / {_mib(pair[1])}"


def markdown(rows: list[Row]) -> str:
    lines = [
        "| setting | method | local optimiser | trained numbers | optimiser state (MiB) | "
        "tensors + grads + state (MiB) | upload / client / round (MiB) | download (MiB) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r.setting} | {r.method} | {r.optimizer} | {r.trained_params:,} | {_mib(r.state_bytes)} | "
                     f"{_mib(r.training_bytes)} | {_pair(r.upload_bytes)} | {_pair(r.download_bytes)} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="rolora bench memory", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--lora-rank", type=int, default=0, help="LoRA rank (0: the toy's 16, MiniLM's 8)")
    p.add_argument("--galore-rank", type=int, default=0, help="GaLore rank (0: the setting's LoRA rank)")
    args = p.parse_args(argv)
    if args.lora_rank < 0 or args.galore_rank < 0:
        print("rolora bench memory: error: ranks must be ≥ 0", file=sys.stderr)
        return 2
    rows = []
    for setting, specs, default_rank in (("toy 784×784", TOY, 16), ("MiniLM-L6 q,v 12×384×384", MINILM, 8)):
        lora_rank = args.lora_rank or default_rank
        rows += measure(setting, specs, lora_rank, args.galore_rank or lora_rank)
    print("fp32; up/down: round 1 / round 2 where they differ; base, activations and head excluded")
    print(markdown(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
