"""Everything a run needs before its first round: data, partition, tokens, model, adapters, method.

Built once per run (tokenising included) and shared by every simulated client: ONE frozen base
model in memory, each client only its adapter tensors (``rolora.llm.adapters``).
"""

from __future__ import annotations

import dataclasses

import logging
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from rolora.federated import GlobalState, Method
from rolora.llm.run_method import run_method
from rolora.llm.adapter_layer import FederatedLinear
from rolora.llm.adapters import Targets, attach, layer_specs, read_head
from rolora.llm.base_dtype import DtypeChoice, choose_dtype
from rolora.llm.client_workers import choose_workers
from rolora.llm.config import ConfigError, RunConfig
from rolora.llm.cpu_threads import passive_waits
from rolora.llm.data import BUILTIN_DATASETS, load_builtin, load_file, split
from rolora.llm.host_memory import limit_matmul_cache
from rolora.llm.models import load_model, position_limit
from rolora.llm.partition import partition
from rolora.llm.tasks import Encoded, encode

log = logging.getLogger("rolora.llm")


@dataclass
class RunSetup:
    """The run's fixed ingredients (nothing here changes during the run but the model's adapters)."""

    config: RunConfig
    method: Method
    model: nn.Module
    tokenizer: object
    adapters: dict[str, FederatedLinear]
    train: Encoded
    test: Encoded
    clients: list[np.ndarray]
    """Client k's training samples: indices into ``train``."""
    label_names: list[str]
    device: torch.device
    ranks: dict
    initial_head: dict
    """The classification head as loaded (round 0 of the averaged head), kept apart from the model's
    own head parameters, which every client's training overwrites."""
    prefix_cache: object = None
    """A :class:`rolora.llm.frozen_prefix.PrefixCache` when ``train.frozen_prefix = "cache"``."""
    base_dtype: DtypeChoice = DtypeChoice("float32", "default")
    """The frozen base's dtype (``model.dtype`` resolved) and why it was chosen."""

    @property
    def workers(self):
        """Client workers: ``train.client_workers`` resolved for the device, and why."""
        return choose_workers(self.config.train, self.device)

    @property
    def train_head(self) -> bool:
        return self.config.lora.train_head and self.config.model.task == "classification"

    def initial_state(self) -> GlobalState:
        c = self.config
        return self.method.init(layer_specs(self.adapters), self.ranks, alpha=c.lora.alpha, seed=c.run.seed,
                                dense=self.initial_head if self.train_head else None)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"model.device: {name!r} asked for, but torch sees no CUDA device")
    return device


def load_data(config: RunConfig):
    """The configured dataset: a built-in name or a local file."""
    d = config.data
    if config.model.task == "instruction":
        from rolora.llm.data import load_instructions

        return load_instructions(d.dataset)
    if d.dataset in BUILTIN_DATASETS:
        options = {"trec": {"fine": d.fine_labels},
                   "vader": {"neutral_threshold": d.neutral_threshold, "keep_neutral": d.keep_neutral}}
        return load_builtin(d.dataset, deduplicate_rows=d.deduplicate, **options.get(d.dataset, {}))
    if not Path(d.dataset).exists():
        raise ConfigError(f"data.dataset: {d.dataset!r} is neither a built-in set ({', '.join(BUILTIN_DATASETS)}) nor a file")
    if Path(d.dataset).is_dir():
        raise ConfigError(f"data.dataset: {d.dataset!r} is a folder; name a data file in it (CSV, TSV, JSON, JSONL "
                          f"or parquet) or a built-in set ({', '.join(BUILTIN_DATASETS)})")
    return load_file(d.dataset, d.text_column, d.label_column, pair_column=d.pair_column or None,
                     group_column=d.group_column or None)


def client_ranks(config: RunConfig) -> dict:
    """Every client's rank: ``lora.rank`` for all (key None), or ``lora.client_ranks`` cycled over clients."""
    pattern = config.lora.client_ranks
    if not pattern:
        return {None: config.lora.rank}
    return {k: int(pattern[k % len(pattern)]) for k in range(config.federated.clients)}


def split_data(config: RunConfig):
    """(train, validation, test) of the configured dataset: the fixed split every seed shares."""
    c = config
    return split(load_data(c), test_size=_size(c.data.test_size), val_size=_size(c.data.val_size), seed=c.split_seed)


def test_majority(config: RunConfig) -> float | None:
    """The test accuracy of always answering the test split's most common label (None for instruction
    data, which has no labels): the floor below which a classifier has learned nothing."""
    if config.model.task == "instruction":
        return None
    labels = np.asarray(split_data(config)[2].labels)
    return float(np.bincount(labels).max() / len(labels)) if len(labels) else None


def prepare_data(config: RunConfig):
    """(train set, test set, clients' sample indices, label names) of ``config`` (deterministic)."""
    c = config
    train_ds, _, test_ds = split_data(c)
    if c.data.partition == "natural" and c.model.task != "instruction" and train_ds.groups is None:
        raise ConfigError(f"data.partition: natural gives each client one group of samples, but {c.data.dataset} "
                          "has no groups: set data.group_column to a column of the file (of the built-in sets, "
                          "vader has its domains), or choose another partition")
    if c.data.max_train_samples and len(train_ds) > c.data.max_train_samples:
        keep = np.sort(np.random.default_rng([c.run.seed, 11]).permutation(len(train_ds))[: c.data.max_train_samples])
        train_ds = train_ds.subset(keep)
    parts = partition(train_ds, c.data.partition, c.federated.clients, c.run.seed, alpha=c.data.dirichlet_alpha,
                      labels_per_client=c.data.labels_per_client)
    labels = [] if c.model.task == "instruction" else list(train_ds.label_names)
    if len(parts) != c.federated.clients:
        raise ConfigError(f"federated.clients = {c.federated.clients}, but the {c.data.partition} partition "
                          f"made {len(parts)} clients")
    return train_ds, test_ds, parts, labels


def build(config: RunConfig, quiet: bool = True) -> RunSetup:
    """Load and prepare everything for ``config`` (deterministic for its seed)."""
    c = config
    if c.run.threads:
        torch.set_num_threads(c.run.threads)
    device = resolve_device(c.model.device)
    if device.type == "cpu":
        limit_matmul_cache()
    base_dtype = choose_dtype(c.model.dtype, device)
    workers = choose_workers(c.train, device)
    if workers.count > 1 and device.type != "cpu":
        raise ConfigError(f"train.client_workers: {workers.count} needs a CPU device, got {device} (use 1)")
    log.info("frozen base in %s (%s); client workers: %d (%s); OpenMP waits: %s", base_dtype.name,
             base_dtype.reason, workers.count, workers.reason, passive_waits())
    train_ds, test_ds, parts, labels = prepare_data(c)

    model_task = "classification" if c.model.task == "classification" else "causal-lm"
    with quiet_transformers():  # its load report lists the new head as "MISSING": expected, we train it
        model, tokenizer = load_model(c.model.name, model_task, num_labels=len(labels) or None,
                                      dtype=base_dtype.dtype, seed=c.run.seed)
    _check_max_length(c, model)
    options = {}
    if c.model.task == "generation-classification":
        if c.data.template:
            options["template"] = c.data.template
        if c.data.label_words:
            options["label_words"] = list(c.data.label_words)
    train = encode(c.model.task, tokenizer, train_ds, c.model.max_length, **options)
    test = encode(c.model.task, tokenizer, test_ds, c.model.max_length, **options)

    model.to(device)
    targets = Targets(modules=tuple(c.lora.targets) or None, layers=tuple(c.lora.layers) or None)
    adapters = attach(model, targets, dropout=c.lora.dropout, backend=c.model.backend)
    prefix_cache = None
    if c.train.frozen_prefix != "off":
        from rolora.llm.frozen_prefix import PrefixCache, first_adapted_block, prefix_dropout_off

        first = first_adapted_block(adapters)
        try:
            prefix_dropout_off(model, first)
            if c.train.frozen_prefix == "cache":
                prefix_cache = PrefixCache(model, train, first, c.run.eval_batch_size)
        except ValueError as e:
            raise ConfigError(str(e)) from None
    method = run_method(c, {k: float(len(p)) for k, p in enumerate(parts)})
    return RunSetup(config=c, method=method, model=model, tokenizer=tokenizer, adapters=adapters, train=train,
                    test=test, clients=[np.asarray(p, dtype=np.int64) for p in parts], label_names=labels,
                    device=device, ranks=client_ranks(c), initial_head={k: x.cpu() for k, x in read_head(model).items()},  # the server state lives on the CPU
                    prefix_cache=prefix_cache, base_dtype=base_dtype)


def _check_max_length(config: RunConfig, model: nn.Module) -> None:
    """``model.max_length`` must fit the model's position table (found only once the model is loaded;
    a longer sample would fail mid-run in the embedding)."""
    limit = position_limit(model)
    if limit is not None and config.model.max_length > limit:
        table = model.config.max_position_embeddings
        reserved = "" if table == limit else f", less {table - limit} RoBERTa reserves below its first position"
        raise ConfigError(f"model.max_length: {config.model.max_length} is more than {config.model.name} takes: "
                          f"{limit} tokens (its max_position_embeddings = {table}{reserved}); use at most {limit}")


def for_method(setup: RunSetup, config: RunConfig) -> RunSetup | None:
    """``setup`` for ``config`` when the two configs differ in ``federated.method`` alone (the model, data,
    adapters and cache are method-independent: every round loads its tensors and head from the state),
    else None. Lets ``--methods a,b,c`` load once; results equal a fresh build (tested)."""
    mine, theirs = setup.config.to_dict(), config.to_dict()
    mine["federated"].pop("method"), theirs["federated"].pop("method")
    if mine != theirs:
        return None
    sizes = {k: float(len(p)) for k, p in enumerate(setup.clients)}
    return dataclasses.replace(setup, config=config, method=run_method(config, sizes))


@contextmanager
def quiet_transformers():
    """Silence transformers' info/warning messages and progress bars for the duration (restored after)."""
    from transformers.utils import logging as hf_logging

    level, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()


def _size(value: float) -> float | int:
    """A split size from the config: counts are whole numbers ≥ 1, fractions are < 1."""
    return int(value) if value >= 1 else value
