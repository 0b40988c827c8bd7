"""Where a run's config departs from the paper's recipe: one value per departure, read from the config.

Each :class:`Departure` names a way our sweeps differ from the paper (rolora-paper.md §5), says the
paper's value in words, and reads a config's value in words, so the report's departures table is
generated from what each sweep ran, never typed. :func:`control_key` is what two settings must share
for a difference in one departure alone to be a controlled comparison.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from rolora.lab.report.paper import BIG_GAP_TASKS, PAPER_RECIPE, SST2, TABLE1_50

DATASETS = {"rotten_tomatoes": "binary sentiment (Rotten Tomatoes)", "trec": "question types (TREC)",
            "vader": "sentiment by domain (VADER)"}


def local_work(c: Any) -> int:
    """Training samples a client sees in one round (local epochs, where set, are counted as unknown: 0)."""
    return 0 if c.train.local_epochs else c.train.local_steps * c.train.batch_size


def samples_per_cell(c: Any) -> int:
    return c.federated.clients * c.total_rounds * local_work(c)


def _head(c: Any) -> str:
    if c.model.task != "classification":
        return f"no classifier head ({c.model.task})"
    if not c.lora.train_head:
        return "frozen at its init"
    if c.train.head_lr:
        return f"trained and averaged every round, its own lr {c.train.head_lr:g}"
    return "trained and averaged every round, with the adapters' optimiser and lr"


def _scale(c: Any) -> str:
    return f"α = {c.lora.alpha:g} at r = {c.lora.rank} (s = {c.lora.alpha / c.lora.rank:g})"


def _dropout_length(c: Any) -> str:
    return f"{c.lora.dropout:g}, {c.model.max_length} tokens"


def _local(c: Any) -> str:
    if c.train.local_epochs:
        return f"{c.train.local_epochs} local epochs × batch {c.train.batch_size}"
    return f"{c.train.local_steps} steps × batch {c.train.batch_size} = {local_work(c)} samples"


def _samples_50(c: Any) -> str | None:
    return f"{samples_per_cell(c):,}" if c.federated.clients == PAPER_RECIPE["clients"] else None


def _task(c: Any) -> str:
    return DATASETS.get(c.data.dataset, c.data.dataset)


def _paper_task() -> str:
    """Table 1's per-task gaps at 50 clients, RoLoRA minus each baseline, from :data:`TABLE1_50`."""
    lead = {t: TABLE1_50["rolora"][t] - max(v[t] for m, v in TABLE1_50.items() if m != "rolora") for t in BIG_GAP_TASKS}
    sst2 = [TABLE1_50["rolora"][SST2] - TABLE1_50[m][SST2] for m in ("ffa-lora", "fedavg-lora")]
    return ("GLUE; the big gaps are on the sentence-pair tasks (RoLoRA over the best baseline: "
            + ", ".join(f"{t} {g:+.1f}" for t, g in lead.items())
            + f"); {SST2}'s gap is only " + " / ".join(f"{g:+.1f}" for g in sst2) + " (over FFA-LoRA / FedAvg-LoRA)")


@dataclass(frozen=True)
class Departure:
    name: str
    paper: str
    value: Callable[[Any], str | None]
    """The config's value in words (None: the departure does not apply to it, e.g. not 50 clients)."""
    at_paper: Callable[[Any], bool]
    """Whether the config has the paper's value."""


_R = PAPER_RECIPE
DEPARTURES = (
    Departure("classifier head", "frozen at its random init (the authors' code)", _head,
              lambda c: c.model.task == "classification" and not c.lora.train_head),
    Departure("LoRA scale", f"α = {_R['alpha']:g} at r = {_R['rank']} (s = {_R['alpha'] / _R['rank']:g})", _scale,
              lambda c: c.lora.alpha / c.lora.rank == _R["alpha"] / _R["rank"]),
    Departure("dropout, length", f"{_R['dropout']:g}, {_R['max_length']} tokens", _dropout_length,
              lambda c: c.lora.dropout == _R["dropout"] and c.model.max_length == _R["max_length"]),
    Departure("local work per round", f"{_R['local_steps']} steps × batch {_R['batch_size']} = "
              f"{_R['local_steps'] * _R['batch_size']} samples", _local,
              lambda c: local_work(c) == _R["local_steps"] * _R["batch_size"]),
    Departure("samples per 50-client cell",
              f"{_R['clients'] * _R['rounds_at_50'] * _R['local_steps'] * _R['batch_size']:,} "
              f"({_R['rounds_at_50']} rounds)", _samples_50,
              lambda c: c.federated.clients == _R["clients"]
              and samples_per_cell(c) == _R["clients"] * _R["rounds_at_50"] * _R["local_steps"] * _R["batch_size"]),
    Departure("task", _paper_task(), _task, lambda c: False),
)

SAMPLES = DEPARTURES[4]

CONTROLLED = ("model.name", "model.task", "data.partition", "data.dirichlet_alpha", "lora.rank",
              "lora.targets", "lora.layers", "federated.clients", "federated.participation", "train.optimizer",
              "train.dp", "train.dp_noise", "train.dp_clip", "federated.server_opt", "train.prox_mu", "train.scaffold")
"""Config keys two settings share in a controlled comparison, beside every other departure's value (the
additions among them: a DP-SGD or server-optimiser run is compared with runs that have the same)."""
NOT_COMPARED = ("run.", "train.lr", "federated.method")
"""Keys whose differences are not a difference of regime (seeds, evaluation, the method and its chosen lr)."""
PART_OF_DEPARTURES = ("lora.train_head", "train.head_lr", "lora.alpha", "lora.rank", "lora.dropout", "model.max_length",
                      "train.local_steps", "train.local_epochs", "train.batch_size", "federated.rounds",
                      "federated.reference_clients", "federated.clients", "data.dataset", "model.task")


def flat(c: Any) -> dict[str, Any]:
    return {f"{section}.{k}": repr(v) for section, values in c.to_dict().items() for k, v in values.items()}


def control_key(c: Any, free: Departure) -> tuple:
    """What must be equal for a difference in ``free`` alone: the other departures, the total training
    samples (unless ``free`` is the sample count itself: local work is compared at equal samples), and the
    :data:`CONTROLLED` keys."""
    values = flat(c)
    total = None if free is SAMPLES else samples_per_cell(c)
    return (tuple(d.value(c) for d in DEPARTURES if d is not free), total, tuple(values.get(k) for k in CONTROLLED))


def other_differences(configs: list[Any]) -> list[str]:
    """Config keys, beyond the departures and :data:`NOT_COMPARED`, that differ among ``configs``."""
    flats = [flat(c) for c in configs]
    keys = sorted({k for f in flats for k in f})
    return [k for k in keys if not k.startswith(NOT_COMPARED) and k not in PART_OF_DEPARTURES
            and len({f.get(k) for f in flats}) > 1]
