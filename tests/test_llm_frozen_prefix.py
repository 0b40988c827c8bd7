"""train.frozen_prefix: the cached prefix gives the numbers of the uncached run with prefix dropout off."""

from __future__ import annotations

import pytest
import torch
from nonsquare import NON_SQUARE_TARGETS
from torch import nn

from rolora.llm.config import ConfigError, load_config
from rolora.llm.engine import run
from rolora.llm.frozen_prefix import encoder_parts, first_adapted_block
from rolora.llm.prepare import build

TINY = ["model.name=tiny-roberta", "model.max_length=24", "data.dataset=rotten_tomatoes", "data.test_size=24",
        "data.max_train_samples=48", "run.eval_batch_size=24", "federated.clients=3", "federated.rounds=2",
        "train.local_steps=2", "train.batch_size=4", "lora.rank=2", "lora.alpha=4.0", "lora.dropout=0.1",
        "lora.layers=[-1]", *NON_SQUARE_TARGETS]


def _config(*more):
    return load_config(None, TINY + list(more))


def _state(history):
    return {(layer, k): x for layer, tensors in history.state.layers.items() for k, x in tensors.items()}


BATCHING = {"auto": ["train.client_batching=auto"], "off": ["train.client_batching=off"],
            "fast": ["train.client_batching=auto", "train.dropout_masks=fast", "train.client_workers=1"]}
"""``fast``: per-pass masks, so the blocks above the prefix run unpadded (llm/unpadded_blocks.py); one
worker on both sides (the cache's own choice), since per-pass masks follow the workers' grouping."""


@pytest.mark.parametrize("batching", ["auto", "off", "fast"])
@pytest.mark.parametrize("method", ["rolora", "fedavg-lora"])
def test_the_cached_prefix_equals_the_uncached_run_with_prefix_dropout_off(method, batching, tmp_path, monkeypatch):
    from rolora.llm.frozen_prefix import PrefixCache

    looked_up = []
    original = PrefixCache.lookup
    monkeypatch.setattr(PrefixCache, "lookup", lambda self, *a: looked_up.append(1) or original(self, *a))
    from rolora.llm import unpadded_blocks

    unpadded, block = [], unpadded_blocks.block_forward
    monkeypatch.setattr(unpadded_blocks, "block_forward", lambda *a, **k: unpadded.append(1) or block(*a, **k))
    runs = {}
    for mode in ("no-dropout", "cache"):
        config = _config(f"federated.method={method}", *BATCHING[batching], f"train.frozen_prefix={mode}")
        runs[mode] = run(config, tmp_path / mode, quiet=True)
    assert looked_up  # the cached run's training passes did read the cache
    assert bool(unpadded) is (batching == "fast")
    a, b = _state(runs["no-dropout"]), _state(runs["cache"])
    assert a.keys() == b.keys() and a
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=1e-5, atol=1e-6, msg=lambda m: f"{key}: {m}")
    for ra, rb in zip(runs["no-dropout"].rows, runs["cache"].rows):
        assert rb.get("test_loss") == pytest.approx(ra.get("test_loss"), rel=1e-5, abs=1e-7)
    # Dropout on above the prefix still moves the numbers: the comparison is not vacuous.
    plain = run(_config(f"federated.method={method}", *BATCHING[batching]), tmp_path / "off", quiet=True)
    assert any(not torch.allclose(_state(plain)[k], a[k]) for k in a)


def test_prefix_dropout_is_off_below_the_lowest_adapted_block_only():
    setup = build(_config("train.frozen_prefix=cache"))
    _, embeddings, blocks = encoder_parts(setup.model)
    first = first_adapted_block(setup.adapters)
    assert first == len(blocks) - 1 and first >= 1
    below = [m.p for part in [embeddings, *blocks[:first]] for m in part.modules() if isinstance(m, nn.Dropout)]
    above = [m.p for part in blocks[first:] for m in part.modules() if isinstance(m, nn.Dropout)]
    assert below and all(p == 0.0 for p in below)
    assert above and all(p > 0.0 for p in above)
    cache = setup.prefix_cache
    assert len(cache.rows) == len({bytes(x) for x in map(lambda s: bytes(str(list(s)), "ascii"), setup.train.input_ids)})
    with pytest.raises(KeyError, match="not a training sample"):
        cache.lookup(torch.full((1, 3), 5, dtype=torch.int64), None)


def test_bad_frozen_prefix_settings_are_named():
    with pytest.raises(ConfigError, match="train.frozen_prefix"):
        _config("train.frozen_prefix=yes")
    with pytest.raises(ConfigError, match="block 0"):
        build(_config("train.frozen_prefix=cache", "lora.layers=[]"))
