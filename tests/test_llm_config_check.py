"""``rolora.llm.config.check``: every key with fixed choices or a range is refused, naming the key,
the bad value and what is allowed; the tables name real fields."""

from __future__ import annotations

from dataclasses import fields

import pytest

from rolora.llm.config import CHOICES, RANGES, ConfigError, RunConfig, load_config

CHOICE_KEYS = {"model.task", "model.dtype", "data.partition", "train.optimizer", "train.schedule",
               "train.client_batching", "train.frozen_prefix", "train.dropout_masks", "federated.weighting", "train.dp",
               "train.compile"}

# key, a value outside its range, what the error says is allowed (written out here, not read from the tables)
OUT_OF_RANGE = [
    ("model.max_length", "0", "≥ 1"), ("lora.rank", "0", "≥ 1"), ("federated.clients", "0", "≥ 1"),
    ("federated.rounds", "0", "≥ 1"), ("train.batch_size", "0", "≥ 1"), ("run.eval_every", "0", "≥ 1"),
    ("train.batch_tokens", "0", "≥ 1"), ("run.eval_batch_size", "0", "≥ 1"), ("train.galore_rank", "0", "≥ 1"),
    ("train.galore_period", "0", "≥ 1"),
    ("train.local_epochs", "-1", "≥ 0"), ("train.local_steps", "-1", "≥ 0"), ("train.weight_decay", "-0.1", "≥ 0"),
    ("train.max_grad_norm", "-1.0", "≥ 0"), ("train.warmup_rounds", "-1", "≥ 0"), ("train.momentum", "-0.5", "≥ 0"),
    ("train.head_lr", "-1e-3", "≥ 0"),
    ("run.seed", "-1", "≥ 0"), ("train.client_group", "-1", "≥ 0"), ("train.client_workers", "-1", "≥ 0"),
    ("run.checkpoint_every", "-1", "≥ 0"),
    ("run.threads", "-1", "≥ 0"), ("data.max_train_samples", "-1", "≥ 0"),
    ("federated.reference_clients", "-1", "≥ 0"), ("data.val_size", "-0.1", "≥ 0"),
    ("lora.alpha", "0", "> 0"), ("train.lr", "0", "> 0"), ("train.galore_scale", "0", "> 0"),
    ("data.dirichlet_alpha", "0", "> 0"), ("data.test_size", "0", "> 0 (a count or a fraction)"),
    ("lora.dropout", "1.0", "in [0, 1)"), ("lora.dropout", "-0.1", "in [0, 1)"),
    ("federated.participation", "0", "in (0, 1]"), ("federated.participation", "1.5", "in (0, 1]"),
    ("train.prox_mu", "-0.1", "≥ 0"), ("train.dp_clip", "0", "> 0"), ("train.dp_noise", "-1", "≥ 0"),
    ("train.dp_delta", "0", "in (0, 1)"), ("train.dp_delta", "1", "in (0, 1)"),
]


def _value(config: RunConfig, key: str):
    section, _, name = key.partition(".")
    return getattr(getattr(config, section), name)


def test_the_tables_name_real_fields_and_cover_every_checked_key():
    field_names = {f"{section}.{name}" for section, values in RunConfig().to_dict().items() for name in values}
    assert set(CHOICES) | set(RANGES) <= field_names
    assert set(CHOICES) == CHOICE_KEYS
    assert set(RANGES) == {key for key, _, _ in OUT_OF_RANGE}


@pytest.mark.parametrize("key", sorted(CHOICE_KEYS))
def test_a_value_outside_the_choices_names_the_key_the_value_and_the_choices(key):
    with pytest.raises(ConfigError) as err:
        load_config(None, [f"{key}=bogus"])
    message = str(err.value)
    assert message.startswith(f"{key}: must be one of ") and message.endswith("got 'bogus'")
    for choice in CHOICES[key]:
        assert choice in message


@pytest.mark.parametrize("key", sorted(CHOICE_KEYS))
def test_every_choice_is_accepted(key):
    for choice in CHOICES[key]:
        needs = {"galore": ["federated.method=fedavg-full"],  # galore: full-rank methods only
                 "client": ["federated.weighting=uniform"],  # client-level DP: uniform weights
                 **{mode: ["train.dropout_masks=fast"] for mode in ("inductor", "reduce-overhead", "aot_eager",
                                                                    "eager")}}.get(choice, [])  # compile: masks in the graph
        assert _value(load_config(None, [f"{key}={choice}", *needs]), key) == choice


@pytest.mark.parametrize("key, bad, allowed", OUT_OF_RANGE)
def test_a_value_outside_its_range_names_the_key_the_value_and_the_range(key, bad, allowed):
    with pytest.raises(ConfigError) as err:
        load_config(None, [f"{key}={bad}"])
    message = str(err.value)
    assert message.startswith(f"{key}: must be a finite number {allowed}, got ")
    assert float(message.rpartition("got ")[2]) == float(bad)


@pytest.mark.parametrize("bad", ["nan", "inf"])
@pytest.mark.parametrize("key", ["train.weight_decay", "train.lr", "lora.dropout", "federated.participation"])
def test_nan_and_inf_are_outside_every_range(key, bad):
    with pytest.raises(ConfigError, match=f"{key}: must be a finite number .*, got {bad}"):
        load_config(None, [f"{key}={bad}"])


def test_the_cross_key_rules_still_name_their_key():
    with pytest.raises(ConfigError, match="train.local_steps: need local_steps ≥ 1 or local_epochs ≥ 1"):
        load_config(None, ["train.local_steps=0", "train.local_epochs=0"])
    with pytest.raises(ConfigError, match=r"lora.client_ranks: every rank must be ≥ 1, got \[2, 0\]"):
        load_config(None, ["lora.client_ranks=[2, 0]"])


def test_galore_reads_the_method_name_through_the_spec_parser():
    assert load_config(None, ["train.optimizer=galore", "federated.method=fedavg-full"])
    with pytest.raises(ConfigError, match="train.optimizer: galore trains full-rank updates"):
        load_config(None, ["train.optimizer=galore", "federated.method=rolora:period=2"])
    # a malformed spec is a config error naming the key, not an aggregation error from deep inside
    with pytest.raises(ConfigError, match="federated.method: method spec 'fedavg-full:x': expected key=value"):
        load_config(None, ["train.optimizer=galore", "federated.method=fedavg-full:x"])
