"""The registry, the class attributes the README table is built from, and the seeded round-0 state."""

from __future__ import annotations

import math

import pytest
import torch

from rolora.federated import METHODS, Exactness, LayerSpec, Method, available_methods, get_method, methods_table

SPECS = {"q": LayerSpec(10, 6), "v": LayerSpec(3, 8)}
NAMES = ["fedavg-lora", "ffa-lora", "rolora", "flexlora", "flora", "fedex-lora", "lora-fair",
         "fedsa-lora", "fed-alora", "fedavg-full"]


def test_every_requested_method_is_registered():
    assert sorted(NAMES) == available_methods() == sorted(METHODS)


@pytest.mark.parametrize("name", NAMES)
def test_class_attributes_for_the_readme_table(name):
    cls = METHODS[name]
    assert issubclass(cls, Method) and cls.name == name
    assert isinstance(cls.exact, Exactness)
    assert isinstance(cls.mixes_ranks, bool)
    assert get_method(name).personalised == (cls.exact is Exactness.PERSONALISED)  # one source of truth
    assert cls.summary and "\n" not in cls.summary and cls.__doc__


@pytest.mark.parametrize("name", NAMES)
def test_init_is_seeded_peft_like_and_identical_for_all_clients(name):
    method = get_method(name)
    a = method.init(SPECS, 4, alpha=8.0, seed=5, dtype=torch.float64)
    b = method.init(SPECS, 4, alpha=8.0, seed=5, dtype=torch.float64)
    c = method.init(SPECS, 4, alpha=8.0, seed=6, dtype=torch.float64)
    assert a.round == 0 and dict(a.specs) == SPECS
    differs = False
    for layer in SPECS:
        for k in a.layers[layer]:
            assert torch.equal(a.layers[layer][k], b.layers[layer][k])
            differs |= not torch.equal(a.layers[layer][k], c.layers[layer][k])
        starts = [method.client_start(a, client, None, 1)[layer] for client in range(3)]
        for s in starts[1:]:
            assert all(torch.equal(s[k], starts[0][k]) for k in s)
        other_seed = method.client_start(c, 0, None, 1)[layer]  # fed-alora draws A, M, B1 here, not in init
        differs |= any(not torch.equal(x, other_seed[k]) for k, x in starts[0].items())
        if "A" in starts[0]:
            n = SPECS[layer].in_features
            assert starts[0]["A"].abs().max() <= 1 / math.sqrt(n)  # kaiming_uniform_(a=sqrt(5)) bound
        for k in ("B", "W", "B2", "B_base", "base"):
            if k in starts[0]:
                assert not starts[0][k].any(), f"{k} starts at 0"
    # Every random init follows the seed; fedavg-full's W starts at 0, the same for every seed.
    assert differs == (name != "fedavg-full"), f"{name}: does the seed change the init? {differs}"
    # The model starts exactly at W0: every method's round-0 delta is 0.
    for layer in SPECS:
        assert not method.delta(method.client_start(a, 0, None, 1)[layer], 8.0).any()


def test_same_init_across_methods_and_dtypes():
    a64 = get_method("rolora").init(SPECS, 4, alpha=8.0, seed=1, dtype=torch.float64).layers["q"]["A"]
    a32 = get_method("fedavg-lora").init(SPECS, 4, alpha=8.0, seed=1, dtype=torch.float32).layers["q"]["A"]
    assert torch.equal(a64.to(torch.float32), a32)


def test_mixed_rank_clients_slice_one_shared_draw():
    method = get_method("flora")
    state = method.init(SPECS, {0: 2, 1: 5}, alpha=8.0, seed=0)
    low, high = (method.client_start(state, c, None, 1)["q"] for c in (0, 1))
    assert torch.equal(low["A"], high["A"][:2]) and low["B"].shape == (10, 2)


def test_delta_is_differentiable():
    method = get_method("rolora")
    state = method.init(SPECS, 2, alpha=8.0, seed=0)
    layer = {k: v.clone().requires_grad_() for k, v in method.client_start(state, 0, None, 1)["q"].items()}
    method.delta(layer, 8.0).square().sum().backward()
    assert layer["A"].grad is not None and layer["B"].grad is not None


def test_methods_table_has_a_row_per_method():
    rows = methods_table().splitlines()[2:]
    assert len(rows) == len(NAMES)
    for name in NAMES:
        assert any(r.startswith(f"| `{name}` | {METHODS[name].summary} |") for r in rows)


@pytest.mark.parametrize("name", NAMES)
def test_same_config_and_seed_give_bit_identical_rounds(name):
    from rolora.federated.synthetic import synthetic_round

    method = get_method(name)
    finals = []
    for _ in range(2):
        state = method.init(SPECS, {0: 2, 1: 3, None: 2} if method.mixes_ranks else 2, alpha=8.0, seed=4)
        kept: dict = {}
        for t in (1, 2, 3):
            _, updates, keeps = synthetic_round(method, state, [0, 1, 2], {0: 1.0, 1: 2.0, 2: 5.0}, kept, seed=7)
            state = method.aggregate(state, updates, t)
            kept.update(keeps)
        finals.append(state)
    for layer in SPECS:
        for k in finals[0].layers[layer]:
            assert torch.equal(finals[0].layers[layer][k], finals[1].layers[layer][k])


def test_method_spec_passes_typed_parameters_to_the_constructor():
    from rolora.federated import method_from_spec

    method = method_from_spec("rolora:period=2:start=A")
    assert (method.schedule.period, method.schedule.start) == (2, "A")
    assert method_from_spec("lora-fair:ridge=0.001").ridge == 0.001
    assert method_from_spec("ffa-lora").name == "ffa-lora"


def test_method_spec_takes_the_hand_over_fraction_of_the_runs_rounds():
    from rolora.federated import AggregationError, method_from_spec

    method = method_from_spec("rolora:ffa_after=0.25", total_rounds=8)
    assert [method.schedule.factor(t) for t in range(1, 9)] == ["B", "A", "B", "B", "B", "B", "B", "B"]
    assert method_from_spec("rolora:ffa_after=0.25:total_rounds=8", total_rounds=8).schedule.total_rounds == 8
    with pytest.raises(AggregationError, match="total_rounds=9 but the run has 8"):
        method_from_spec("rolora:ffa_after=0.25:total_rounds=9", total_rounds=8)
    # methods without a round-count parameter are not handed one
    assert method_from_spec("flexlora:split=balanced", total_rounds=3).split == "balanced"


@pytest.mark.parametrize(
    "spec, words",
    [("rolora:period", "key=value"), ("rolora:bogus=1", "bogus"), ("nope", "valid names")],
)
def test_bad_method_spec_says_what_is_wrong(spec, words):
    from rolora.federated import AggregationError, method_from_spec

    with pytest.raises(AggregationError, match=words):
        method_from_spec(spec)
