"""rolora.llm.adapters: forward parity with W0 + method.delta for every method, trainable tensors,
mixed ranks, the shared frozen base, target selection and bad input (tiny random models, CPU)."""

import pytest
import torch

from rolora.federated import available_methods, get_method
from rolora.llm.adapters import (
    Targets,
    adapter_bytes,
    attach,
    frozen_bytes,
    head_parameters,
    layer_specs,
    load_head,
    load_tensors,
    read_head,
    read_tensors,
)
from rolora.llm.adapter_layer import FederatedLinear
from rolora.llm.models import load_model

MODELS = {"bert": ("tiny-bert", "classification"), "roberta": ("tiny-roberta", "classification"),
          "llama": ("tiny-llama", "causal-lm")}
ALPHA = 8.0


def fresh(family, seed=0):
    name, task = MODELS[family]
    model, tok = load_model(name, task, 3 if task == "classification" else None, seed=seed)
    batch = tok(["hello world", "a somewhat longer sentence here"], padding=True, return_tensors="pt")
    return model, batch


def client_tensors(method, adapters, rank=4, seed=1):
    """A client's tensors (names and shapes of round 1) with every value random (B, base, W non-zero)."""
    state = method.init(layer_specs(adapters), rank, ALPHA, seed=0)
    start = method.client_start(state, 0, None, 1)
    gen = torch.Generator().manual_seed(seed)
    return {layer: {k: 0.1 * torch.randn(v.shape, generator=gen) for k, v in ts.items()} for layer, ts in start.items()}


def merged_logits(family, tensors, method, batch):
    """Logits of an untouched model whose adapted weights are W0 + method.delta (the reference)."""
    model, _ = fresh(family)
    with torch.no_grad():
        for layer, ts in tensors.items():
            model.get_submodule(layer).weight += method.delta(ts, ALPHA)
        return model(**batch).logits


def param_bytes(model):
    return sum(p.numel() * p.element_size() for p in model.parameters())


@pytest.mark.parametrize("family", MODELS)
def test_zero_b_gives_the_untouched_model(family):
    model, batch = fresh(family)
    with torch.no_grad():
        expected = model(**batch).logits
    adapters = attach(model, Targets())
    method = get_method("fedavg-lora")
    state = method.init(layer_specs(adapters), 4, ALPHA, seed=0)
    load_tensors(adapters, method.client_start(state, 0, None, 1), method.trains(1), method, ALPHA)
    with torch.no_grad():
        assert torch.equal(model(**batch).logits, expected)


@pytest.mark.parametrize("family", MODELS)
def test_random_lora_equals_merged_weights(family):
    model, batch = fresh(family)
    adapters = attach(model, Targets())
    method = get_method("fedavg-lora")
    tensors = client_tensors(method, adapters)
    load_tensors(adapters, tensors, frozenset(), method, ALPHA)
    assert all(m.fused for m in adapters.values())
    with torch.no_grad():
        torch.testing.assert_close(model(**batch).logits, merged_logits(family, tensors, method, batch),
                                   rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", available_methods())
def test_every_method_equals_w0_plus_its_delta(name):
    model, batch = fresh("roberta")
    adapters = attach(model, Targets(layers=(-1,)))
    method = get_method(name)
    rank = {"fed-alora": 3}.get(name, 4)
    tensors = client_tensors(method, adapters, rank=rank)
    load_tensors(adapters, tensors, method.trains(1), method, ALPHA)
    fused = frozenset(next(iter(tensors.values()))) in ({"A", "B"}, {"A", "B", "base"}) and name != "fed-alora"
    assert all(m.fused == fused for m in adapters.values())
    with torch.no_grad():
        torch.testing.assert_close(model(**batch).logits, merged_logits("roberta", tensors, method, batch),
                                   rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("names", [("A", "B"), ("A", "B", "base")])
def test_fused_path_matches_the_reference_path_and_its_gradients(names):
    torch.manual_seed(0)
    layer = FederatedLinear(torch.nn.Linear(12, 10), "q")
    method = get_method("fedex-lora")
    tensors = {"A": 0.3 * torch.randn(3, 12), "B": 0.3 * torch.randn(10, 3), "base": 0.3 * torch.randn(10, 12)}
    tensors = {k: tensors[k] for k in names}
    x = torch.randn(2, 5, 12, requires_grad=True)
    grads = []
    for path in ("fused", "reference"):
        params = layer.load(tensors, frozenset({"A", "B"}), method, ALPHA)
        assert layer.fused
        y = layer(x) if path == "fused" else layer.reference_forward(x)
        (gx,) = torch.autograd.grad(y.square().sum(), [x], retain_graph=True)
        y.square().sum().backward()
        grads.append((y.detach(), gx, *[p.grad for p in params]))
    for fused, reference in zip(*grads):
        torch.testing.assert_close(fused, reference, rtol=1e-5, atol=1e-5)
    assert grads[0][-1].abs().sum() > 0


@pytest.mark.parametrize("t,trained,frozen", [(1, "B", "A"), (2, "A", "B")])
def test_only_trainable_tensors_get_gradients(t, trained, frozen):
    model, batch = fresh("llama")
    adapters = attach(model, Targets())
    method = get_method("rolora")
    params = load_tensors(adapters, client_tensors(method, adapters), method.trains(t), method, ALPHA)
    assert len(params) == len(adapters) and all(p.requires_grad for p in params)
    model(**batch).logits.square().mean().backward()
    for m in adapters.values():
        assert m.tensors[trained].grad is not None and m.tensors[trained].grad.abs().sum() > 0
        assert m.tensors[frozen].grad is None and not m.tensors[frozen].requires_grad
        assert m.weight.grad is None
    assert all(p.grad is None for n, p in model.named_parameters() if ".tensors." not in n)


def test_mixed_ranks_reuse_the_same_adapters():
    model, batch = fresh("bert")
    adapters = attach(model, Targets())
    method = get_method("flexlora")
    for rank in (2, 6, 1):
        tensors = client_tensors(method, adapters, rank=rank, seed=rank)
        tensors["bert.encoder.layer.0.attention.self.query"] = client_tensors(method, adapters, rank=5)[
            "bert.encoder.layer.0.attention.self.query"]  # one layer of another rank, too
        load_tensors(adapters, tensors, method.trains(1), method, ALPHA)
        with torch.no_grad():
            torch.testing.assert_close(model(**batch).logits, merged_logits("bert", tensors, method, batch),
                                       rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("family", MODELS)
def test_the_frozen_base_is_shared_not_copied(family):
    model, _ = fresh(family)
    before = {n: p.data_ptr() for n, p in model.named_parameters()}
    bytes_before, frozen_before = param_bytes(model), frozen_bytes(model)
    adapters = attach(model, Targets())
    method = get_method("fedex-lora")  # a merged base, the largest client state
    load_tensors(adapters, client_tensors(method, adapters), method.trains(1), method, ALPHA)
    after = {n: p.data_ptr() for n, p in model.named_parameters() if ".tensors." not in n}
    assert after == before
    for m in adapters.values():
        assert m.weight.data_ptr() == before[f"{m.name}.weight"]
    client_params = sum(t.numel() * t.element_size() for m in adapters.values() for t in m.tensors.values())
    assert param_bytes(model) == bytes_before + client_params
    assert frozen_bytes(model) == frozen_before
    assert adapter_bytes(adapters) == client_params + sum(m.weight.numel() * 4 for m in adapters.values())


@pytest.mark.parametrize("family,targets,expected", [
    ("bert", Targets(), ["0.attention.self.query", "0.attention.self.value", "1.attention.self.query",
                         "1.attention.self.value"]),
    ("bert", Targets(("key", "output.dense"), layers=(-1,)), ["1.attention.self.key", "1.attention.output.dense",
                                                             "1.output.dense"]),
    ("roberta", Targets(("attention.self.query",), layers=(0,)), ["0.attention.self.query"]),
    ("roberta", Targets(layers=(-2, 1, 1)), ["0.attention.self.query", "0.attention.self.value",
                                            "1.attention.self.query", "1.attention.self.value"]),
    ("llama", Targets(layers=(-1,)), ["1.self_attn.q_proj", "1.self_attn.v_proj"]),
    ("llama", Targets(("gate_proj", "down_proj"), layers=(0,)), ["0.mlp.gate_proj", "0.mlp.down_proj"]),
])
def test_target_selection(family, targets, expected):
    model, _ = fresh(family)
    prefix = {"bert": "bert.encoder.layer.", "roberta": "roberta.encoder.layer.", "llama": "model.layers."}[family]
    adapters = attach(model, targets)
    assert list(adapters) == [prefix + e for e in expected]
    assert all(model.get_submodule(n) is m for n, m in adapters.items())


def unattached(model):
    return not any(isinstance(m, FederatedLinear) for m in model.modules())


@pytest.mark.parametrize("family,targets,message", [
    ("bert", Targets(("query", "qproj")), r"\['qproj'\] match no nn.Linear.*'query'.*'value'"),
    ("llama", Targets(("query",)), r"\['query'\].*'q_proj'"),
    ("bert", Targets(("classifier",)), "match no nn.Linear inside the transformer blocks"),
    ("roberta", Targets(layers=(2,)), "2 transformer blocks"),
    ("llama", Targets(layers=(-3, 0)), "2 transformer blocks"),
])
def test_bad_targets_are_named_and_leave_the_model_untouched(family, targets, message):
    model, _ = fresh(family)
    with pytest.raises(ValueError, match=message):
        attach(model, targets)
    assert unattached(model)


def test_bad_target_arguments():
    for bad in [dict(modules=()), dict(layers=()), dict(layers=(1.5,)), dict(modules=("",))]:
        with pytest.raises(ValueError, match="Targets"):
            Targets(**bad)
    assert Targets(modules="query").modules == ("query",)
    model, _ = fresh("bert")
    with pytest.raises(ValueError, match="dropout"):
        attach(model, Targets(), dropout=1.0)
    with pytest.raises(ValueError, match="backend"):
        attach(model, Targets(), backend="cuda")
    assert unattached(model)
    attach(model, Targets())
    with pytest.raises(ValueError, match="already"):
        attach(model, Targets(("key",)))


def test_bad_tensors_are_named_and_leave_the_loaded_ones_in_place():
    model, batch = fresh("bert")
    adapters = attach(model, Targets())
    method = get_method("fedavg-lora")
    good = client_tensors(method, adapters)
    load_tensors(adapters, good, method.trains(1), method, ALPHA)
    layer = "bert.encoder.layer.1.attention.self.value"
    ab = frozenset({"A", "B"})
    cases = [
        ({k: v for k, v in good.items() if k != layer}, ab, ALPHA, "missing layers.*layer.1.attention.self.value"),
        ({**good, "bert.pooler.dense": good[layer]}, ab, ALPHA, "unknown layers.*pooler"),
        ({**good, layer: {"A": good[layer]["A"], "B": torch.zeros(32, 5)}}, ab, ALPHA, "value.*B must be 32×r = 32×4"),
        ({**good, layer: {"A": torch.zeros(4, 31), "B": good[layer]["B"]}}, ab, ALPHA, "A must be r×32"),
        ({**good, layer: {"A": good[layer]["A"], "C": good[layer]["B"]}}, frozenset(), ALPHA, "fedavg-lora cannot compute"),
        ({**good, layer: {"A": good[layer]["A"], "B": torch.zeros(32, 4, dtype=torch.long)}}, ab, ALPHA, "floating"),
        (good, ab, 0.0, "alpha"),
        (good, frozenset({"W"}), ALPHA, r"trainable tensors \['W'\] are not among"),
    ]
    for tensors, trainable, alpha, message in cases:
        with pytest.raises(ValueError, match=message):
            load_tensors(adapters, tensors, trainable, method, alpha)
        current = read_tensors(adapters)
        assert all(torch.equal(current[n][k], good[n][k]) for n in good for k in good[n])


def test_read_tensors_are_detached_copies_and_load_copies_too():
    model, _ = fresh("llama")
    adapters = attach(model, Targets(layers=(0,)))
    method = get_method("fedavg-lora")
    tensors = client_tensors(method, adapters)
    load_tensors(adapters, tensors, method.trains(1), method, ALPHA)
    out = read_tensors(adapters)
    layer = next(iter(out))
    assert not out[layer]["A"].requires_grad
    out[layer]["A"].zero_()
    tensors[layer]["B"].zero_()
    assert adapters[layer].tensors["A"].abs().sum() > 0 and adapters[layer].tensors["B"].abs().sum() > 0


def test_clear_restores_the_frozen_layer():
    model, batch = fresh("roberta")
    with torch.no_grad():
        expected = model(**batch).logits
    adapters = attach(model, Targets())
    with torch.no_grad():
        assert torch.equal(model(**batch).logits, expected)  # no tensors yet: the frozen layer
    method = get_method("fedex-lora")
    load_tensors(adapters, client_tensors(method, adapters), method.trains(1), method, ALPHA)
    for m in adapters.values():
        m.clear()
    with torch.no_grad():
        assert torch.equal(model(**batch).logits, expected)
    with pytest.raises(ValueError, match="holds no tensors"):
        read_tensors(adapters)


def test_lora_dropout_only_in_training_and_follows_the_seed():
    model, batch = fresh("bert")
    adapters = attach(model, Targets(), dropout=0.5)
    method = get_method("fedavg-lora")
    tensors = client_tensors(method, adapters)
    load_tensors(adapters, tensors, method.trains(1), method, ALPHA)
    with torch.no_grad():
        evaluated = model(**batch).logits
        torch.testing.assert_close(evaluated, merged_logits("bert", tensors, method, batch), rtol=1e-5, atol=1e-5)
        model.train()
        torch.manual_seed(5)
        first = model(**batch).logits
        torch.manual_seed(5)
        assert torch.equal(model(**batch).logits, first)
    assert not torch.allclose(first, evaluated)


@pytest.mark.parametrize("family,keys", [
    ("bert", ["classifier.weight", "classifier.bias"]),
    ("roberta", ["classifier.dense.weight", "classifier.dense.bias", "classifier.out_proj.weight",
                 "classifier.out_proj.bias"]),
    ("llama", []),
])
def test_head_parameters_load_and_read(family, keys):
    model, batch = fresh(family)
    assert list(head_parameters(model)) == keys
    head = {k: torch.full_like(v, 0.01) for k, v in read_head(model).items()}
    params = load_head(model, head, trainable=True)
    assert len(params) == len(keys) and all(p.requires_grad for p in params)
    assert all(torch.equal(read_head(model)[k], head[k]) for k in keys)
    if keys:
        model(**batch).logits.sum().backward()
        assert all(p.grad is not None for p in params)
    assert load_head(model, head, trainable=False) == []
    assert all(not p.requires_grad for p in head_parameters(model).values())


def test_bad_head_is_named_and_leaves_the_head_untouched():
    model, _ = fresh("roberta")
    head = read_head(model)
    with pytest.raises(ValueError, match=r"missing \['classifier.out_proj.bias'\]"):
        load_head(model, {k: v for k, v in head.items() if k != "classifier.out_proj.bias"}, True)
    with pytest.raises(ValueError, match="'classifier.dense.weight' has shape"):
        load_head(model, {**{k: v + 1 for k, v in head.items()}, "classifier.dense.weight": torch.zeros(2, 2)}, True)
    assert all(torch.equal(read_head(model)[k], head[k]) for k in head)


@pytest.mark.parametrize("trainable,keeps_x", [({"B"}, False), ({"A"}, True), ({"A", "B"}, True)])
def test_the_phase_follows_requires_grad_a_b_only_round_keeps_no_input(trainable, keeps_x):
    layer = FederatedLinear(torch.nn.Linear(24, 16), "q")
    layer.load({"A": torch.randn(2, 24), "B": torch.randn(16, 2)}, frozenset(trainable), get_method("rolora"), ALPHA)
    x = torch.randn(40, 24, requires_grad=True)
    shapes = []

    def keep(t):
        shapes.append(tuple(t.shape))
        return t

    with torch.autograd.graph.saved_tensors_hooks(keep, lambda t: t):
        layer(x)
    assert ((40, 24) in shapes) == keeps_x


@pytest.mark.parametrize("method_name", ["fedavg-lora", "fed-alora"])
def test_half_precision_base_with_fp32_adapters(method_name):
    model, batch = fresh("llama")
    method = get_method(method_name)
    tensors = client_tensors(method, attach(fresh("llama")[0], Targets()), rank=3)
    expected = merged_logits("llama", tensors, method, batch)
    model.to(torch.bfloat16)
    adapters = attach(model, Targets())
    params = load_tensors(adapters, tensors, method.trains(1), method, ALPHA)
    assert {p.dtype for p in params} == {torch.float32}
    logits = model(**batch).logits
    assert logits.dtype == torch.bfloat16
    assert (logits.float() - expected).abs().max() < 0.02 * expected.abs().max()
    logits.float().square().mean().backward()
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in params)
