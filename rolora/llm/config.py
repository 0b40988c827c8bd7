"""Run configuration: one TOML file with sections, ``section.key=value`` overrides, validation.

Every field has a default, so ``RunConfig()`` is a complete (tiny) run. A resolved config is written
into the run folder, and resuming compares it key by key with what the resume asks for.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
import typing
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path

CONFIG_DIR = Path(__file__).parent / "configs"
"""Example configs that ship with the package (``rolora llm run --config NAME`` finds them by name)."""

TASKS = ("classification", "generation-classification", "instruction")
PARTITIONS = ("iid", "dirichlet", "k-labels", "natural")
OPTIMIZERS = ("adamw", "sgd", "galore")
SCHEDULES = ("constant", "linear", "cosine")
DTYPES = ("auto", "float32", "bfloat16", "float16")
CLIENT_BATCHING = ("auto", "off")
DROPOUT_MASKS = ("exact", "fast")
COMPILE_MODES = ("off", "inductor", "reduce-overhead", "aot_eager", "eager")  # llm/compiled_step.py
FROZEN_PREFIX = ("off", "no-dropout", "cache")  # llm/frozen_prefix.py
EVAL_SPLITS = ("val", "test")
WEIGHTINGS = ("samples", "uniform")
DP_LEVELS = ("off", "client", "sample")


class ConfigError(ValueError):
    """A bad configuration: the message names the key and what is wrong."""


@dataclass(frozen=True)
class ModelConfig:
    name: str = "tiny-bert"
    """minilm | smollm2 | tiny-bert | tiny-roberta | tiny-llama, or a local Hugging Face folder."""
    task: str = "classification"
    """classification (encoder) | generation-classification | instruction (decoder)."""
    max_length: int = 128
    dtype: str = "auto"
    """Dtype of the frozen base weights; adapters and optimiser state stay float32. auto: bfloat16
    where the device computes it natively (CUDA; a CPU with AVX-512 BF16 or AMX), else float32
    (``llm/base_dtype.py``; the choice and its reason are written to run.log and versions.json)."""
    backend: str = "auto"
    """LoRA kernel backend: auto (CUDA: Triton with LoRA dropout above M = 512, else cuBLAS; CPU: PyTorch)
    | torch | triton (see ``rolora.kernels.op.choose_backend``)."""
    device: str = "auto"
    """auto (cuda if available, else cpu) | cpu | cuda | cuda:N."""


@dataclass(frozen=True)
class DataConfig:
    dataset: str = "rotten_tomatoes"
    """A built-in set (rotten_tomatoes, trec, vader, sms_spam) or a CSV/JSON/JSONL/parquet file."""
    text_column: str = "text"
    label_column: str = "label"
    pair_column: str = ""
    group_column: str = ""
    """The file's column of each sample's group (a user, a domain): the clients of ``partition = "natural"``."""
    deduplicate: bool = True
    """Built-in sets: keep repeated sentences once (drop those with conflicting labels)."""
    fine_labels: bool = False
    """trec: the 50 fine classes instead of the 6 coarse ones."""
    neutral_threshold: float = 0.5
    """vader: |mean sentiment| below this is neutral (dropped, or a third class with keep_neutral)."""
    keep_neutral: bool = False
    test_size: float = 0.1
    """Held-out test set: a count (≥ 1) or a fraction (< 1) of the data."""
    val_size: float = 0.0
    split_seed: int = -1
    """Seed of the train / validation / test split (-1: ``run.seed``). Fix it (e.g. 0) to keep one test
    set across seeds, so seeds vary only the initialisation and sampling (the shipped sweeps do)."""
    max_train_samples: int = 0
    """Use at most this many training samples before partitioning (0: all)."""
    partition: str = "iid"
    dirichlet_alpha: float = 0.5
    labels_per_client: int = 2
    template: str = ""
    """Prompt template for generation-classification ('' = the task's default)."""
    label_words: list[str] = field(default_factory=list)
    """One word per class for generation-classification ([] = the dataset's defaults)."""


@dataclass(frozen=True)
class LoRAConfig:
    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    targets: list[str] = field(default_factory=list)
    """Module short names ([] = the family default: query/value, or q_proj/v_proj on Llama)."""
    layers: list[int] = field(default_factory=list)
    """Transformer blocks that get adapters ([] = all; negative counts from the top: [-2, -1])."""
    client_ranks: list[int] = field(default_factory=list)
    """Mixed ranks: client k gets ``client_ranks[k % len]`` ([] = ``rank`` for every client). Different
    ranks need a method that declares it mixes them (``Method.mixes_ranks``: flexlora, flora, fed-alora)."""
    train_head: bool = True
    """Train the classification head and average it every round (False: frozen at its init)."""


@dataclass(frozen=True)
class FederatedConfig:
    method: str = "rolora"
    """A method spec (``rolora``, ``rolora:ffa_after=0.5``, ``flexlora:split=balanced``, ...)."""
    clients: int = 3
    participation: float = 1.0
    rounds: int = 2
    reference_clients: int = 0
    """If > 0, rounds scale as 1/N: ``rounds`` at this many clients, ⌈rounds·ref/clients⌉ here."""
    weighting: str = "samples"
    server_opt: str = ""
    """A server optimiser on the round's pseudo-gradient: fedavgm | fedadam | fedyogi | fedadagrad, with
    ``:key=value`` settings (``fedadam:lr=1e-2:tau=1e-3``); "" = none (the plain aggregate). Only
    methods whose aggregate is a weighted mean take it (``rolora.federated.additions``)."""


@dataclass(frozen=True)
class TrainConfig:
    local_steps: int = 2
    local_epochs: int = 0
    """If > 0, each client makes this many passes over its data instead of ``local_steps`` steps."""
    batch_size: int = 8
    optimizer: str = "adamw"
    """adamw | sgd | galore: GaLore-AdamW (rolora.optim) for full-rank methods (fedavg-full): every
    trained matrix with both sides ≥ galore_rank (the W updates, and a head's hidden dense layer where
    the model has one) keeps rank-r projected moments, the rest (biases, a thin output layer) AdamW. New each round, so its projection is recomputed at
    each round's first local step (and every galore_period steps after)."""
    galore_rank: int = 8
    galore_period: int = 200
    galore_scale: float = 0.25
    lr: float = 5e-4
    head_lr: float = 0.0
    """Learning rate of the classification head when it trains (``lora.train_head``), following the
    same warm-up and schedule as ``lr`` (0: the same as ``lr``)."""
    weight_decay: float = 0.0
    momentum: float = 0.0
    max_grad_norm: float = 0.0
    """Clip each client's gradient norm to this (0: no clipping)."""
    warmup_rounds: int = 0
    schedule: str = "constant"
    """Learning rate across rounds after warm-up: constant | linear | cosine (to 0 at the last round)."""
    client_batching: str = "auto"
    """auto: a round's clients take their local steps together (one pass over the shared base per
    step, the same results as one by one); off: one client after another (the reference)."""
    batch_tokens: int = 2048
    """Client batching: the most padded tokens one forward/backward pass computes (bounds activation
    memory; a step's samples are sorted by length into passes of this size)."""
    client_group: int = 0
    """Client batching: the most clients trained together (0: as many as keep their adapter and
    optimiser state under 256 MiB)."""
    client_workers: int = 0
    """Client batching on a CPU: the round's participants split into this many shares, trained at the
    same time by as many threads, each on its own replica of the model (frozen weights shared) with
    its passes at batch_tokens / client_workers (0, auto: 2 on a CPU; 1 on CUDA, with
    train.compile or the frozen-prefix cache). The results depend on this value (which clients share
    a pass: the per-pass masks' bits), not on the number of cores; 1 gives the numbers of versions
    before this option (llm/client_workers.py)."""
    frozen_prefix: str = "off"
    """off | no-dropout (dropout off in the embeddings and the blocks below the lowest adapted one) |
    cache (as no-dropout, and those blocks' output is computed once per training sample and reused
    every step and round: for LoRA on the top blocks only; BERT/RoBERTa; llm/frozen_prefix.py)."""
    prox_mu: float = 0.0
    """FedProx: each client adds prox_mu/2·‖w − w_start‖² over its trained tensors (0: off)."""
    scaffold: bool = False
    """SCAFFOLD control variates (option II) on the trained tensors and the head; needs a method
    whose trained tensors are all averaged."""
    dp: str = "off"
    """Differential privacy: off | client (each client's update clipped to dp_clip, Gaussian noise
    dp_noise·dp_clip on the sum; needs federated.weighting = uniform) | sample (DP-SGD in local
    training: each sample's gradient clipped to dp_clip, noise dp_noise·dp_clip per step)."""
    dp_clip: float = 1.0
    dp_noise: float = 1.0
    """The noise multiplier σ (the accountant reports the (ε, δ) it buys each round)."""
    dp_delta: float = 1e-5
    dropout_masks: str = "exact"
    """Client batching: exact (every client's dropout masks are the bits it draws trained alone, so
    the results equal one-by-one training) | fast (each pass draws its own: the same distribution,
    seeded up to a keep probability quantised to 1/65,536, ~1/5 less round time with dropout on a CPU
    (two −11 % steps, BENCHMARKS.md "llm/ speed"), not bit-equal to one by one; llm/pass_masks.py);
    with them, on a CPU, a BERT/RoBERTa encoder's blocks run on the real tokens only
    (llm/unpadded_blocks.py), and an encoder classifier's top block is computed at the first token
    only, the one its head reads (llm/first_token_top.py: ~−8 % of an fp32 round)."""
    compile: str = "off"
    """Client batching: off | inductor | reduce-overhead (inductor + CUDA graphs, for GPUs) |
    aot_eager (traced, no code generation: for checking) | eager (the same pass and update, not
    compiled: the reference the compiled modes are tested against). Each pass's forward, loss and backward run
    as one ``torch.compile`` graph (no graph breaks; shapes dynamic, and lengths bucketed for CUDA
    graphs, so a run compiles a few times, not per pass) and the AdamW/SGD update as a second one. Needs
    ``dropout_masks = "fast"``: inside the graph the per-pass masks come from torch's generator,
    seeded per pass (llm/compiled_step.py)."""


@dataclass(frozen=True)
class RunSettings:
    seed: int = 0
    eval_every: int = 1
    eval_splits: list[str] = field(default_factory=lambda: ["val", "test"])
    """Held-out splits scored at each evaluation, logged as val_* / test_*. "val" is skipped when
    data.val_size = 0; ["val"] alone keeps the test set unseen (choosing a learning rate)."""
    eval_batch_size: int = 64
    checkpoint_every: int = 1
    threads: int = 0
    """torch intra-op threads (0: leave torch's default)."""


@dataclass(frozen=True)
class RunConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    lora: LoRAConfig = field(default_factory=LoRAConfig)
    federated: FederatedConfig = field(default_factory=FederatedConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    run: RunSettings = field(default_factory=RunSettings)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @property
    def split_seed(self) -> int:
        """The seed of the train / validation / test split."""
        return self.run.seed if self.data.split_seed < 0 else self.data.split_seed

    @property
    def total_rounds(self) -> int:
        f = self.federated
        if f.reference_clients > 0:
            return max(1, math.ceil(f.rounds * f.reference_clients / f.clients))
        return f.rounds


SECTIONS = {f.name: f.type for f in fields(RunConfig)}


def _section_class(name: str):
    return {"model": ModelConfig, "data": DataConfig, "lora": LoRAConfig, "federated": FederatedConfig,
            "train": TrainConfig, "run": RunSettings}[name]


def _coerce(key: str, value: object, default: object, item: type | None = None) -> object:
    """``value`` as the type of the field's default (a list's items as ``item``), or a ConfigError naming the key."""
    kind = type(default)
    if kind is bool:
        if isinstance(value, bool):
            return value
    elif kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif kind is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif kind is str:
        if isinstance(value, str):
            return value
    elif kind is list:
        if isinstance(value, (list, str)):
            return _list_of(key, value, item)
    raise ConfigError(f"{key}: expected {kind.__name__}, got {type(value).__name__} {value!r}")


def _list_of(key: str, value: list | str, item: type | None) -> list:
    """A list key's value, every item an ``item``. A string is a command-line list with bare words,
    ``a,b`` or ``[a, b]`` (not TOML): each item is read as a value, so ``[0, 1]`` are ints and
    ``[query, value]`` strings."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("[") and text.endswith("]"):
            text = text[1:-1]
        value = [parse_value(v.strip()) for v in text.split(",") if v.strip()]
    for position, v in enumerate(value):
        if item is not None and not _is_a(v, item):
            hint = "; quote words that look like numbers or booleans: [\"1\", \"2\"]" if item is str else ""
            raise ConfigError(f"{key}: expected a list of {item.__name__}, got {type(v).__name__} {v!r} "
                              f"at position {position}{hint}")
    return list(value)


def _is_a(value: object, kind: type) -> bool:
    if isinstance(value, bool):  # True is an int to Python, not to a config
        return kind is bool
    if kind is float:
        return isinstance(value, (int, float))
    return isinstance(value, kind)


def _item_type(cls: type, name: str) -> type | None:
    """The item type of a ``list[...]`` field (None for other fields)."""
    return next(iter(typing.get_args(typing.get_type_hints(cls)[name])), None)


def _check_tables(data: dict, where: str) -> None:
    """Every top-level entry must be a section's table: a key above the first [section], an array of
    tables [[section]] or a section given a value are refused, saying where the key belongs."""
    for name, values in data.items():
        if isinstance(values, dict):
            continue
        if name in SECTIONS:
            if isinstance(values, list) and values and all(isinstance(v, dict) for v in values):
                raise ConfigError(f"{where}: [[{name}]] is an array of tables; write one table [{name}]")
            raise ConfigError(f"{where}: `{name}` must be a table [{name}] of keys, got {type(values).__name__} "
                              f"{values!r}")
        owners = [f"[{s}]" for s in SECTIONS if name in {f.name for f in fields(_section_class(s))}]
        where_to = (f"put it under {' or '.join(owners)}" if owners
                    else f"keys go under a section: {', '.join(f'[{s}]' for s in SECTIONS)}")
        raise ConfigError(f"{where}: `{name}` is not in a section; {where_to}")


def from_dict(data: dict, where: str = "config") -> RunConfig:
    """A config from nested sections; unknown sections or keys are errors that list the valid ones."""
    _check_tables(data, where)
    sections = {}
    for section, values in data.items():
        if section not in SECTIONS:
            raise ConfigError(f"{where}: unknown section [{section}]; valid: {', '.join(SECTIONS)}")
        cls = _section_class(section)
        defaults = cls()
        known = {f.name for f in fields(cls)}
        kwargs = {}
        for key, value in values.items():
            if key not in known:
                raise ConfigError(f"{where}: unknown key {section}.{key}; valid: {', '.join(sorted(known))}")
            default = getattr(defaults, key)
            item = _item_type(cls, key) if isinstance(default, list) else None
            kwargs[key] = _coerce(f"{section}.{key}", value, default, item)
        sections[section] = cls(**kwargs)
    config = RunConfig(**sections)
    check(config)
    return config


def find_config(name_or_path: str) -> Path:
    """A config file by path, or by the name of an example that ships in ``rolora/llm/configs``."""
    return find_toml(name_or_path, CONFIG_DIR, "config", "example")


def find_toml(name_or_path: str, folder: Path, what: str, shipped_as: str) -> Path:
    """A TOML file by path, or by the stem of one in ``folder`` (the package's shipped ones)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    shipped = folder / (name_or_path if name_or_path.endswith(".toml") else f"{name_or_path}.toml")
    if shipped.is_file():
        return shipped
    names = ", ".join(sorted(p.stem for p in folder.glob("*.toml")))
    raise ConfigError(f"{what} {name_or_path!r}: no such file, and no shipped {shipped_as} of that name ({names})")


def parse_value(text: str) -> object:
    """A command-line value read as TOML (numbers, booleans, [lists], "strings"), else a bare string
    (which a list key reads as bare items: ``[query, value]``, see :func:`_list_of`)."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """``section.key=value`` overrides applied to nested config data (a new dict). An unknown section
    or key is refused naming the override (not the file it would have changed)."""
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in data.items()}
    for item in overrides:
        key, sep, value = item.partition("=")
        section, dot, name = key.strip().partition(".")
        if not sep or not dot or not name:
            raise ConfigError(f"override {item!r}: expected section.key=value (e.g. train.lr=1e-3)")
        if section not in SECTIONS:
            raise ConfigError(f"override {item!r}: unknown section [{section}]; valid: {', '.join(SECTIONS)}")
        known = {f.name for f in fields(_section_class(section))}
        if name not in known:
            raise ConfigError(f"override {item!r}: unknown key {section}.{name}; valid: {', '.join(sorted(known))}")
        values = out.setdefault(section, {})
        if isinstance(values, dict):  # else the file's own layout is wrong: from_dict says so, naming the file
            values[name] = parse_value(value.strip())
    return out


def load_config(name_or_path: str | None, overrides: list[str] = ()) -> RunConfig:
    """The config of a TOML file (or the defaults when None) with overrides applied and checked."""
    data: dict = {}
    where = "defaults"
    if name_or_path:
        from rolora.llm.file_data import read_utf8  # here: it loads numpy, the config does not

        path = find_config(name_or_path)
        where = str(path)
        try:
            data = tomllib.loads(read_utf8(path))
        except tomllib.TOMLDecodeError as err:
            raise ConfigError(f"{path}: not valid TOML: {err}") from None
        except ValueError as err:
            raise ConfigError(str(err)) from None
        _check_tables(data, where)  # before the overrides, which go into the file's tables
    return from_dict(apply_overrides(data, list(overrides)), where)


def _fail(key: str, message: str) -> None:
    raise ConfigError(f"{key}: {message}")


CHOICES: dict[str, tuple[str, ...]] = {
    "model.task": TASKS,
    "model.dtype": DTYPES,
    "data.partition": PARTITIONS,
    "train.optimizer": OPTIMIZERS,
    "train.schedule": SCHEDULES,
    "train.client_batching": CLIENT_BATCHING,
    "train.frozen_prefix": FROZEN_PREFIX,
    "train.dropout_masks": DROPOUT_MASKS,
    "train.compile": COMPILE_MODES,
    "federated.weighting": WEIGHTINGS,
    "train.dp": DP_LEVELS,
}
"""Keys whose value must be one of a fixed set."""


@dataclass(frozen=True)
class Range:
    """An allowed range of a number: ``text`` says it in the error, ``holds`` tests it (written so that
    NaN fails every range)."""

    text: str
    holds: Callable[[float], bool]


AT_LEAST_1 = Range("≥ 1", lambda v: v >= 1)
AT_LEAST_0 = Range("≥ 0", lambda v: v >= 0)
ABOVE_0 = Range("> 0", lambda v: v > 0)
FRACTION_OF_ONE = Range("in (0, 1]", lambda v: 0 < v <= 1)
PROBABILITY = Range("in [0, 1)", lambda v: 0 <= v < 1)
COUNT_OR_FRACTION = Range("> 0 (a count or a fraction)", lambda v: v > 0)

RANGES: dict[str, Range] = {
    "model.max_length": AT_LEAST_1,
    "data.test_size": COUNT_OR_FRACTION,
    "data.val_size": AT_LEAST_0,
    "data.max_train_samples": AT_LEAST_0,
    "data.dirichlet_alpha": ABOVE_0,
    "lora.rank": AT_LEAST_1,
    "lora.alpha": ABOVE_0,
    "lora.dropout": PROBABILITY,
    "federated.clients": AT_LEAST_1,
    "federated.participation": FRACTION_OF_ONE,
    "federated.rounds": AT_LEAST_1,
    "federated.reference_clients": AT_LEAST_0,
    "train.local_steps": AT_LEAST_0,
    "train.local_epochs": AT_LEAST_0,
    "train.batch_size": AT_LEAST_1,
    "train.galore_rank": AT_LEAST_1,
    "train.galore_period": AT_LEAST_1,
    "train.galore_scale": ABOVE_0,
    "train.lr": ABOVE_0,
    "train.head_lr": AT_LEAST_0,
    "train.weight_decay": AT_LEAST_0,
    "train.momentum": AT_LEAST_0,
    "train.max_grad_norm": AT_LEAST_0,
    "train.warmup_rounds": AT_LEAST_0,
    "train.batch_tokens": AT_LEAST_1,
    "train.client_group": AT_LEAST_0,
    "train.client_workers": AT_LEAST_0,
    "train.prox_mu": AT_LEAST_0,
    "train.dp_clip": ABOVE_0,
    "train.dp_noise": AT_LEAST_0,
    "train.dp_delta": Range("in (0, 1)", lambda v: 0 < v < 1),
    "run.seed": AT_LEAST_0,
    "run.eval_every": AT_LEAST_1,
    "run.eval_batch_size": AT_LEAST_1,
    "run.checkpoint_every": AT_LEAST_0,
    "run.threads": AT_LEAST_0,
}
"""Numeric keys and their allowed range."""


def _value_of(c: RunConfig, key: str) -> object:
    section, _, name = key.partition(".")
    return getattr(getattr(c, section), name)


def _method_name(spec: str) -> str:
    """The method's name in ``spec``; a malformed spec is refused naming federated.method."""
    from rolora.federated import AggregationError, parse_method_spec  # here: it loads torch, the config does not

    try:
        return parse_method_spec(spec)[0]
    except AggregationError as err:
        raise ConfigError(f"federated.method: {err}") from None


def check(c: RunConfig) -> None:
    """Raise ConfigError naming the first bad key, its value and what is allowed."""
    for key, choices in CHOICES.items():
        value = _value_of(c, key)
        if value not in choices:
            _fail(key, f"must be one of {', '.join(choices)}, got {value!r}")
    for key, allowed in RANGES.items():
        value = _value_of(c, key)
        if not (math.isfinite(value) and allowed.holds(value)):  # inf, like NaN, is never a setting
            _fail(key, f"must be a finite number {allowed.text}, got {value}")
    if c.train.local_steps == 0 and c.train.local_epochs == 0:
        _fail("train.local_steps", "need local_steps ≥ 1 or local_epochs ≥ 1")
    if not all(AT_LEAST_1.holds(r) for r in c.lora.client_ranks):
        _fail("lora.client_ranks", f"every rank must be ≥ 1, got {c.lora.client_ranks}")
    _check_rank_mix(c)
    _check_device(c.model.device)
    if c.train.optimizer == "galore" and _method_name(c.federated.method) != "fedavg-full":
        _fail("train.optimizer", f"galore trains full-rank updates: needs federated.method fedavg-full, "
                                 f"got {c.federated.method!r} (LoRA methods use adamw or sgd)")
    _check_compile(c)
    _check_workers(c)
    _check_additions(c)
    splits = c.run.eval_splits
    if not splits or any(s not in EVAL_SPLITS for s in splits) or len(set(splits)) < len(splits):
        _fail("run.eval_splits", f"must be a non-empty list of distinct names from {', '.join(EVAL_SPLITS)}, "
                                 f"got {splits}")
    if list(splits) == ["val"] and c.data.val_size == 0:
        _fail("run.eval_splits", "is ['val'] but data.val_size = 0: there is no validation split")


def _check_rank_mix(c: RunConfig) -> None:
    """Clients of different ranks need a method that declares it mixes ranks (``Method.mixes_ranks``)."""
    pattern = c.lora.client_ranks
    if len({pattern[k % len(pattern)] for k in range(c.federated.clients)} if pattern else ()) < 2:
        return
    from rolora.federated import METHODS  # torch, as for the method name

    name = _method_name(c.federated.method)
    if name in METHODS and not METHODS[name].mixes_ranks:  # an unknown name is refused by its own check
        mixing = sorted(n for n, cls in METHODS.items() if cls.mixes_ranks and getattr(cls, "uses_ranks", True))
        _fail("lora.client_ranks", f"{pattern} gives the clients different ranks, but federated.method {name} "
                                   f"needs one rank for every client; use one rank, or a method that mixes ranks "
                                   f"({', '.join(mixing)})")


def _check_device(name: str) -> None:
    """``model.device`` must be a device torch can name, of a type runs use (CPU or CUDA); whether this
    machine has it is known only when the run starts."""
    if name == "auto":
        return
    import torch  # here: the config does not load torch unless a device is named

    try:
        device = torch.device(name)
    except (RuntimeError, ValueError, TypeError):
        device = None
    if device is None or device.type not in ("cpu", "cuda"):
        _fail("model.device", f"must be auto, cpu, cuda or cuda:N, got {name!r}")


def _check_compile(c: RunConfig) -> None:
    """``train.compile`` needs the client-batched trainer with per-pass masks and a plain optimiser."""
    if c.train.compile == "off":
        return
    t = c.train
    needs = [("train.client_batching", t.client_batching == "auto", "auto"),
             ("train.dropout_masks", t.dropout_masks == "fast", "fast (masks drawn inside the graph)"),
             ("train.optimizer", t.optimizer in ("adamw", "sgd"), "adamw or sgd"),
             ("train.frozen_prefix", t.frozen_prefix != "cache", "off or no-dropout (the cache is looked up per sample)")]
    for key, ok, wanted in needs:
        if not ok:
            _fail("train.compile", f"{t.compile!r} needs {key} = {wanted}, got {_value_of(c, key)!r}")


def _check_workers(c: RunConfig) -> None:
    """More than one client worker needs the client-batched trainer on models of its own."""
    t = c.train
    if t.client_workers <= 1:
        return
    needs = [("train.client_batching", t.client_batching == "auto", "auto"),
             ("train.compile", t.compile == "off", "off (the compiled step runs on one model)"),
             ("train.frozen_prefix", t.frozen_prefix != "cache", "off or no-dropout (the cache is installed on one model)"),
             ("model.device", c.model.device in ("auto", "cpu"), "cpu or auto (one CUDA stream: use 1)")]
    for key, ok, wanted in needs:
        if not ok:
            _fail("train.client_workers", f"{t.client_workers} needs {key} = {wanted}, got {_value_of(c, key)!r}")


def _check_additions(c: RunConfig) -> None:
    """The server optimiser, drift correction and DP settings, and whether the method takes them."""
    if not (c.federated.server_opt or c.train.prox_mu or c.train.scaffold or c.train.dp != "off"):
        return
    from rolora.federated.server_opt import parse_server_optimizer  # torch, as for the method name
    from rolora.llm.run_method import additions_of, run_method

    if c.federated.server_opt:
        try:
            parse_server_optimizer(c.federated.server_opt)
        except ValueError as err:
            _fail("federated.server_opt", str(err))
    try:
        additions_of(c)
    except ValueError as err:
        _fail("train.dp" if c.train.dp != "off" else "train.scaffold", str(err))
    try:
        run_method(c)
    except ValueError as err:
        _fail("federated.weighting" if "weighting" in str(err) else "federated.method", str(err))


def diff(a: RunConfig, b: RunConfig) -> list[str]:
    """The ``section.key`` names whose values differ between two configs."""
    da, db = a.to_dict(), b.to_dict()
    return [f"{s}.{k}" for s in da for k in da[s] if da[s][k] != db[s][k]]


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} as TOML")


def to_toml(config: RunConfig, header: str = "") -> str:
    """The config as TOML (every key, resolved); ``header`` becomes leading comment lines."""
    lines = [f"# {line}" for line in header.splitlines()]
    for section, values in config.to_dict().items():
        lines.append(f"\n[{section}]")
        lines.extend(f"{key} = {_toml_value(value)}" for key, value in values.items())
    return "\n".join(lines).lstrip("\n") + "\n"
