"""The compiled client step (``train.compile``, ``llm/compiled_step.py``).

Three links, each tested: (1) the gathered pass and the functional update ("eager" mode, nothing
compiled) train exactly as the engine's client-batched step, for every method, with every dropout
off (the masks are the only thing that differs by design); (2) the compiled modes equal that eager
reference with dropout on (the same masks: seeded per pass, drawn inside the graph in program order),
per method family, with no graph break (``fullgraph``) and a bounded number of graphs; (3) the
update equals ``torch.optim``'s AdamW and SGD.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch._dynamo.utils import counters

from test_llm_batched import _for, _rounds
from test_llm_engine import TINY

from rolora.federated import available_methods
from rolora.llm import compiled_step
from rolora.llm.batched_training import batched_training
from rolora.llm.compiled_step import ROW_BUCKET, WIDTH_BUCKET, CompiledOptimizer, TorchMasks, bucketed, compile_options
from rolora.llm.config import ConfigError, load_config
from rolora.llm.prepare import build
from rolora.llm.tasks import IGNORE

COMMON = ["data.max_train_samples=36", "federated.clients=3", "train.local_steps=2", "train.batch_size=4",
          "lora.rank=2", "lora.alpha=4.0", "lora.dropout=0.1", "train.max_grad_norm=0.5", "train.batch_tokens=64",
          "train.dropout_masks=fast", "train.weight_decay=0.01", "model.dtype=float32"]


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()  # every test counts its own graphs and compiles its own
    counters.clear()
    yield
    torch._dynamo.reset()


@pytest.fixture(scope="module", params=["roberta", "llama"])
def setup(request):
    return build(load_config(None, TINY[request.param] + COMMON))


@pytest.fixture
def no_dropout(setup):
    saved = [(m, m.p) for m in setup.model.modules() if isinstance(m, torch.nn.Dropout)]
    lora = [(m, m.dropout) for m in setup.adapters.values()]
    for m, _ in saved:
        m.p = 0.0
    for m, _ in lora:
        m.dropout = 0.0
    yield setup
    for m, p in saved:
        m.p = p
    for m, p in lora:
        m.dropout = p


def _assert_close(a, b, what):
    """Nested tensor dicts equal within fp32 tolerance (AdamW's first steps divide tiny gradients by
    their own size: the rounding of two correct orders of operations shows at 1e-6 there)."""
    assert a.keys() == b.keys(), what
    for key in a:
        if isinstance(a[key], dict):
            _assert_close(a[key], b[key], f"{what}/{key}")
        else:
            torch.testing.assert_close(b[key], a[key], atol=1e-5, rtol=1e-4, msg=lambda m: f"{what}/{key}: {m}")


def _compare(a_rounds, b_rounds, what):
    for (u_a, r_a, g_a), (u_b, r_b, g_b) in zip(a_rounds, b_rounds, strict=True):
        for a, b in zip(u_a, u_b, strict=True):
            _assert_close(a.tensors, b.tensors, f"{what} upload {a.client}")
            _assert_close(dict(a.dense), dict(b.dense), f"{what} head {a.client}")
        for a, b in zip(r_a, r_b, strict=True):
            assert b.metrics["train_loss"] == pytest.approx(a.metrics["train_loss"], abs=2e-6), what
            assert (b.metrics["tokens"], b.metrics["steps"]) == (a.metrics["tokens"], a.metrics["steps"])
        _assert_close(g_a.layers, g_b.layers, f"{what} state")


@pytest.mark.parametrize("buckets", [False, True])  # the width padded as under CUDA graphs, or not
@pytest.mark.parametrize("spec", available_methods())
def test_the_gathered_step_trains_as_the_engine_for_every_method(no_dropout, spec, buckets, monkeypatch):
    """No dropout anywhere: "eager" (gathered rows, the functional AdamW; passes padded to buckets
    or not) gives the engine's client-batched numbers (stacked LoRA, torch.optim.AdamW), mixed ranks
    included."""
    monkeypatch.setattr(compiled_step, "WIDTH_BUCKETED_MODES", {"eager"} if buckets else set())
    engine = _rounds(_for(no_dropout, spec), batched_training)
    gathered_setup = _for(no_dropout, spec, compile="eager")
    gathered = _rounds(gathered_setup, batched_training)
    _compare(engine, gathered, spec)
    start = gathered_setup.initial_state()
    assert any(not torch.allclose(x, start.layers[layer][n]) for layer, named in gathered[-1][2].layers.items()
               for n, x in named.items() if n in start.layers[layer])


FAMILIES = [("roberta", "fedavg-lora"), ("roberta", "rolora"), ("llama", "rolora"), ("roberta", "ffa-lora"),
            ("roberta", "fedavg-full"), ("roberta", "flexlora"), ("roberta", "fedex-lora")]
"""A and B train; B then A (two phases, two graphs); A frozen; the full-rank delta path; mixed ranks;
a shared frozen base (W0 + base)."""


@pytest.mark.parametrize("model,spec", FAMILIES)
def test_the_compiled_step_equals_its_eager_reference_with_dropout_on(model, spec):
    setup = build(load_config(None, TINY[model] + COMMON))
    eager = _rounds(_for(setup, spec, compile="eager"), batched_training)
    traced = _rounds(_for(setup, spec, compile="aot_eager"), batched_training)
    _compare(eager, traced, spec)
    phases = 2 if spec == "rolora" else 1
    assert 2 <= counters["stats"]["unique_graphs"] <= 2 * phases + 1  # the pass and the update per phase


def test_recompiles_stay_bounded_while_pass_shapes_vary():
    """Three rounds of passes of many shapes (a small token budget): a few graphs, not one per shape."""
    setup = build(load_config(None, TINY["roberta"] + COMMON + ["train.batch_tokens=200", "train.local_steps=3", "train.batch_size=10",
                                                        "data.max_train_samples=48"]))
    s = _for(setup, "fedavg-lora", compile="aot_eager")
    shapes = set()
    original = compiled_step.CompiledPass.run

    def spy(self, tensors, *args):
        shapes.add(tuple(tensors["input_ids"].shape))
        return original(self, tensors, *args)

    compiled_step.CompiledPass.run = spy
    try:
        m, state, train = s.method, s.initial_state(), batched_training(s)
        from rolora.federated.round import client_starts, client_uploads

        for t in (1, 2, 3):
            starts = client_starts(m, state, [0, 1, 2])
            state = m.aggregate(state, client_uploads(m, t, starts, train(t, starts))[0], t)
    finally:
        compiled_step.CompiledPass.run = original
    assert len(shapes) >= 5, shapes  # or the bound below proves nothing
    assert counters["stats"]["unique_graphs"] <= 3


def test_inductor_compiles_the_step_and_equals_eager():
    """Code generation (inductor) with dropout on. On a CPU ``train.compile = "inductor"`` draws its
    random numbers through ATen's generator (``fallback_random``, set by ``compile_options``, not
    here), so the masks are eager's and the numbers can be compared: without it they differ."""
    import torch._inductor.config as inductor

    assert not inductor.fallback_random  # torch's default: the option, not the global, must do it
    setup = build(load_config(None, TINY["roberta"] + COMMON))
    eager = _rounds(_for(setup, "fedavg-lora", compile="eager"), batched_training)
    compiled = _rounds(_for(setup, "fedavg-lora", compile="inductor"), batched_training)
    _compare(eager, compiled, "inductor")


def test_inductor_keeps_its_own_random_numbers_on_cuda():
    assert compile_options("inductor", "cpu") == {"backend": "inductor", "options": {"fallback_random": True}}
    assert compile_options("inductor", "cuda") == {"backend": "inductor"}


def test_a_graph_break_in_the_step_fails_loudly(monkeypatch):
    """A data-dependent Python value inside the pass breaks the graph: ``fullgraph`` must raise."""
    setup = build(load_config(None, TINY["roberta"] + COMMON))

    def breaking(self, x, p):
        if x.sum() > 0.5:  # Python branching on a tensor's value
            return torch.nn.functional.dropout(x, p)
        return x

    monkeypatch.setattr(TorchMasks, "tokens", breaking)
    with pytest.raises(Exception, match="(?i)graph break|unsupported|data-dependent|dynamic control flow"):
        _rounds(_for(setup, "fedavg-lora", compile="aot_eager"), batched_training)


@pytest.mark.parametrize("mode", ["eager", "aot_eager"])
@pytest.mark.parametrize("kind", ["adamw", "sgd"])
def test_the_update_is_torch_optim_s(kind, mode):
    """Two learning-rate groups, weight decay, momentum, a tensor skipped at one step (no gradient)."""
    g = torch.Generator().manual_seed(0)
    ours = [torch.randn(5, 3, generator=g) for _ in range(3)] + [torch.randn(7, generator=g)]
    theirs = [p.clone() for p in ours]
    if kind == "adamw":
        ref = torch.optim.AdamW([{"params": theirs[:2]}, {"params": theirs[2:], "lr": 0.03}], lr=5e-3, weight_decay=0.1)
        opt = CompiledOptimizer([{"params": ours[:2], "lr": 5e-3}, {"params": ours[2:], "lr": 0.03}], kind, mode, 0.1)
    else:
        ref = torch.optim.SGD([{"params": theirs[:2]}, {"params": theirs[2:], "lr": 0.03}], lr=5e-2, momentum=0.9,
                              weight_decay=0.1)
        opt = CompiledOptimizer([{"params": ours[:2], "lr": 5e-2}, {"params": ours[2:], "lr": 0.03}], kind, mode,
                                0.1, momentum=0.9)
    for step in range(6):
        for a, b in zip(ours, theirs):
            grad = torch.randn(a.shape, generator=g)
            a.grad, b.grad = grad.clone(), grad.clone()
        if step == 2:
            ours[1].grad = theirs[1].grad = None
        ref.step()
        opt.step()
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert not torch.equal(ours[1], ours[0])


def test_passes_are_padded_to_buckets_without_changing_real_rows():
    tensors = {"input_ids": torch.arange(30).view(3, 10), "attention_mask": torch.ones(3, 10, dtype=torch.int64),
               "labels": torch.tensor([1, 0, 1])}
    out, slot, real = bucketed(tensors, torch.tensor([0, 0, 2]), pad_id=1, width_bucket=WIDTH_BUCKET)
    assert real == 3 and out["input_ids"].shape == (ROW_BUCKET, WIDTH_BUCKET) and slot.tolist()[:3] == [0, 0, 2]
    assert torch.equal(out["input_ids"][:3, :10], tensors["input_ids"])
    assert (out["input_ids"][:3, 10:] == 1).all() and (out["attention_mask"][:, 10:] == 0).all()
    assert out["labels"].shape == (ROW_BUCKET,) and set(slot.tolist()[3:]) == {2}
    tokens = {"input_ids": torch.ones(2, 3, dtype=torch.int64), "labels": torch.ones(2, 3, dtype=torch.int64)}
    padded, _, _ = bucketed(tokens, torch.tensor([0, 1]), pad_id=0, width_bucket=WIDTH_BUCKET)
    assert (padded["labels"][:, 3:] == IGNORE).all()


@pytest.mark.parametrize("override,key", [
    ("train.dropout_masks=exact", "train.dropout_masks"),
    ("train.client_batching=off", "train.client_batching"),
    ("train.frozen_prefix=cache", "train.frozen_prefix"),
    ("train.optimizer=galore federated.method=fedavg-full", "train.optimizer"),
])
def test_compile_refuses_what_it_cannot_take(override, key):
    with pytest.raises(ConfigError, match=f"train.compile.*{key}"):
        load_config(None, TINY["roberta"] + COMMON + ["train.compile=inductor", *override.split()])
    with pytest.raises(ConfigError, match="train.compile: must be one of"):
        load_config(None, TINY["roberta"] + COMMON + ["train.compile=fast"])
