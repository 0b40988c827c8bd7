"""SecAgg+ (``rolora.flower.secagg``): which methods are summable, and a secure run equals a plain one
within the quantisation bound.

The in-process grid of ``test_flower_faults`` runs Flower's own ``SecAggPlusWorkflow`` and
``secaggplus_mod`` (no Ray); one simulation through ``rolora llm run --engine flower`` with
``ROLORA_FLOWER_SECAGG=1`` runs it over Flower's real message transport.
"""

from __future__ import annotations

import os

import pytest
import torch
from test_flower_faults import TINY, LocalGrid, task_identity  # noqa: F401  (task_identity: autouse fixture)

from rolora.federated import ClientUpdate, LayerSpec, available_methods, get_method
from rolora.federated.serial import state_to_flat
from rolora.flower.codec import models_from_record
from rolora.flower.secagg import (
    REFUSED,
    SECRET_ARRAYS,
    SECRET_INFO,
    SUMMABLE,
    SecAggRefused,
    SecAggSettings,
    check_method,
    from_environment,
    max_weight,
)
from rolora.flower.server_loop import serve
from rolora.llm.checkpoint import CHECKPOINTS, load_checkpoint
from rolora.llm.config import load_config

EPS32 = 2.0**-24


# --------------------------------------------------------------------------- which methods are summable
def test_every_method_is_either_summable_or_refused_with_a_reason():
    assert set(SUMMABLE) | set(REFUSED) == set(available_methods())
    assert not set(SUMMABLE) & set(REFUSED)


def _round_updates(method, state, t, gen):
    """Three clients' uploads for round t: the start's trained tensors moved by noise, weights 5, 9, 2."""
    updates = []
    for k, n in enumerate((5.0, 9.0, 2.0)):
        start = method.client_start(state, k, None, t)
        trained = {layer: {name: x + 0.1 * torch.randn(x.shape, generator=gen, dtype=torch.float64)
                           if name in method.trains(t) else x for name, x in tensors.items()}
                   for layer, tensors in start.items()}
        dense = {name: x + 0.1 * torch.randn(x.shape, generator=gen, dtype=torch.float64) for name, x in state.dense.items()}
        updates.append(ClientUpdate(k, n, method.client_upload(trained, t), dense=dense))
    return updates


def _mean_update(updates):
    """ONE update carrying sum_k p_k x_k (what SecAgg+ gives the server), weight 1, computed by hand."""
    p = [u.num_samples / sum(v.num_samples for v in updates) for u in updates]
    mean = {layer: {name: sum(w * u.tensors[layer][name] for w, u in zip(p, updates)) for name in tensors}
            for layer, tensors in updates[0].tensors.items()}
    dense = {name: sum(w * u.dense[name] for w, u in zip(p, updates)) for name in updates[0].dense}
    return ClientUpdate(updates[0].client, 1.0, mean, dense=dense)


def _max_diff(a, b) -> float:
    fa, ma = state_to_flat(a)
    fb, mb = state_to_flat(b)
    assert ma == mb
    return max(float((fa[k] - fb[k]).abs().max()) for k in fa)


@pytest.mark.parametrize("name", available_methods())
def test_aggregating_the_mean_as_one_update_equals_plain_aggregation_exactly_for_the_summable_methods(name):
    """What the SecAgg+ mode rests on, checked for every method in float64 over two rounds (RoLoRA:
    a B round and an A round): ``method.aggregate`` of the one mean update equals ``method.aggregate``
    of the individual uploads for the summable methods, and differs for every refused one."""
    method = get_method(name)
    gen = torch.Generator().manual_seed(0)
    state = method.init({"q": LayerSpec(6, 5), "v": LayerSpec(4, 5)}, ranks=2, alpha=4.0, seed=0,
                        dtype=torch.float64, dense={"head": torch.randn(2, 6, generator=gen, dtype=torch.float64)})
    diffs = []
    for t in (1, 2):
        updates = _round_updates(method, state, t, gen)
        plain = method.aggregate(state, updates, t)
        diffs.append(_max_diff(method.aggregate(state, [_mean_update(updates)], t), plain))
        state = plain
    if name in SUMMABLE:
        assert max(diffs) < 1e-12, diffs
    else:
        assert max(diffs) > 1e-6, f"{name}: the mean as one update gives plain aggregation's state; is it summable?"


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_a_refused_method_names_itself_and_why_before_anything_runs(tmp_path, name):
    config = load_config(None, TINY + [f"federated.method={name}"])
    with pytest.raises(SecAggRefused, match=rf"method '{name}' cannot run under SecAgg\+ .*uploading .*Methods that "
                                            r"can: fedavg-full, fedavg-lora, fedsa-lora, ffa-lora, rolora"):
        serve(LocalGrid(3), config, tmp_path / "run", quiet=True, secagg=SecAggSettings())
    assert not (tmp_path / "run").exists()
    check_method("rolora:period=2")  # a spec with parameters: summable


def test_settings_from_options_and_the_environment():
    assert from_environment({}) is None and from_environment({"ROLORA_FLOWER_SECAGG": "0"}) is None
    assert from_environment({"ROLORA_FLOWER_SECAGG": "1"}) == SecAggSettings()
    s = from_environment({"ROLORA_FLOWER_SECAGG": "secagg-clip=4 secagg-quantization=1024 secagg-shares=3"})
    assert (s.clipping_range, s.quantization_range, s.num_shares) == (4.0, 1024, 3)
    with pytest.raises(ValueError, match="unknown SecAgg"):
        SecAggSettings.from_options({"secagg-clipping": 1})
    assert [max_weight([w]) for w in (1, 2, 3, 16, 17)] == [1, 2, 4, 16, 32]
    # 3 clients of 16 samples, the defaults: 2·8·3·16 / (2^22·48)
    assert SecAggSettings().error_bound([16, 16, 16]) == pytest.approx(2 * 8 * 3 * 16 / (2**22 * 48))


# --------------------------------------------------------------------------- secure runs on Flower's protocol
class WatchingGrid(LocalGrid):
    """The in-process grid, also recording what the test (not the server) can see on the nodes: each
    node's kept upload in every round, and every reply's record names (the server's view)."""

    def __init__(self, clients: int) -> None:
        super().__init__(clients)
        self.uploads: dict[int, list[ClientUpdate]] = {}
        self.reply_records: set[str] = set()

    def send_and_receive(self, messages, *, timeout=None):
        messages = list(messages)
        replies = super().send_and_receive(messages, timeout=timeout)
        for msg, reply in zip(messages, replies):
            self.reply_records.update(reply.content.keys() if not reply.has_error() else [])
            config = msg.content["config"] if "config" in msg.content else {}
            state = self.contexts[msg.metadata.dst_node_id].state
            if "secagg" in config and SECRET_ARRAYS in state:
                result = reply.content["result"]
                models, dense = models_from_record(state[SECRET_ARRAYS], str(result["meta"]))
                [model] = models.values()
                assert int(state[SECRET_INFO]["weight"]) == int(result["num_samples"])
                self.uploads.setdefault(int(config["t"]), []).append(
                    ClientUpdate(int(result["client"]), float(result["num_samples"]), model, dense=dense))
        return replies


def _checkpoint_state(run_dir, t):
    return load_checkpoint(run_dir / CHECKPOINTS / f"round-{t:06d}").state


@pytest.mark.parametrize("name", ["rolora", "fedavg-lora"])
def test_a_secagg_run_equals_plain_aggregation_within_the_quantisation_bound(tmp_path, name):
    """Two rounds (RoLoRA: B, then A). Round 1 against a plain Flower run from the same start (the
    same uploads); round 2 against ``method.aggregate`` of the uploads the nodes kept (read off the
    nodes by the test: the server never received them). Each entry within SecAgg+'s bound
    2c·K·W/(Q·sum w_k) plus the float32 rounding of the means; and the quantisation is visible."""
    config = load_config(None, TINY + [f"federated.method={name}", "run.checkpoint_every=1"])
    settings = SecAggSettings()
    grid = WatchingGrid(3)
    secure = serve(grid, config, tmp_path / "sec", quiet=True, secagg=settings)
    plain = serve(LocalGrid(3), config, tmp_path / "plain", quiet=True)
    assert "upload" not in grid.reply_records  # no reply carried an upload in the clear
    method = get_method(name)
    errors = []
    for t in (1, 2):
        updates = sorted(grid.uploads[t], key=lambda u: u.client)
        assert [u.client for u in updates] == [0, 1, 2]
        bound = settings.error_bound([int(u.num_samples) for u in updates])
        largest = max(float(x.abs().max()) for u in updates for x in
                      [*(v for m in u.tensors.values() for v in m.values()), *u.dense.values()])
        tol = bound + 8 * EPS32 * largest
        got = _checkpoint_state(tmp_path / "sec", t)
        want = (_checkpoint_state(tmp_path / "plain", 1) if t == 1 else
                method.aggregate(_checkpoint_state(tmp_path / "sec", 1), updates, 2))
        errors.append(_max_diff(got, want))
        assert errors[-1] <= tol, (t, errors[-1], bound)
    print(f"{name}: max error per round {errors}, bound {bound:.3g}")
    assert max(errors) > 8 * EPS32 * largest  # SecAgg+'s rounding is there: the server did not get plain sums
    rows_s, rows_p = secure.rows, plain.rows
    for key in ("upload_bytes", "download_bytes", "participants", "dropped"):
        assert [r.get(key) for r in rows_s] == [r.get(key) for r in rows_p], key
    assert rows_s[1]["train_loss"] == pytest.approx(rows_p[1]["train_loss"], rel=1e-6)
    # the protocol's bytes (keys, shares, masked int vectors) exceed the plain float32 upload
    assert rows_s[1]["flower_upload_bytes"] > rows_p[1]["flower_upload_bytes"]


def test_a_coarse_quantisation_has_a_visible_error_still_within_its_bound(tmp_path):
    config = load_config(None, TINY + ["federated.method=fedavg-lora", "federated.rounds=1"])
    coarse = SecAggSettings(quantization_range=2**12)
    secure = serve(WatchingGrid(3), config, tmp_path / "sec", quiet=True, secagg=coarse)
    plain = serve(LocalGrid(3), config, tmp_path / "plain", quiet=True)
    bound = coarse.error_bound([16, 16, 16])
    error = _max_diff(secure.state, plain.state)
    assert SecAggSettings().error_bound([16, 16, 16]) < error <= bound + 1e-6, (error, bound)


def test_a_node_that_dies_before_the_secure_sum_is_dropped_and_secagg_still_sums_the_others(tmp_path):
    """A node failing in round 2's training: the remaining two run SecAgg+ between them."""
    config = load_config(None, TINY + ["federated.method=rolora"])
    grid = LocalGrid(3, down={101: 2})
    history = serve(grid, config, tmp_path / "run", quiet=True, secagg=SecAggSettings())
    assert [r["dropped"] for r in history.rows[1:]] == [[], [1]]
    assert history.state.round == 2


@pytest.mark.slow
def test_secagg_through_the_cli_on_the_flower_simulation(tmp_path, monkeypatch):
    """``ROLORA_FLOWER_SECAGG=1 rolora llm run --engine flower``: Flower's real transport carries the
    protocol; one round equals the embedded engine's within the bound."""
    from rolora.cli import main as rolora_main
    from rolora.llm.engine import run as embedded_run

    overrides = [o for o in TINY if not o.startswith("federated.rounds")] + ["federated.rounds=1",
                                                                            "federated.method=rolora"]
    monkeypatch.setenv("ROLORA_FLOWER_SECAGG", "1")
    out = tmp_path / "fl"
    assert rolora_main(["llm", "run", "--config", "tiny-roberta", "--engine", "flower", "--quiet", "--out", str(out), *overrides]) == 0
    monkeypatch.delenv("ROLORA_FLOWER_SECAGG")
    embedded = embedded_run(load_config("tiny-roberta", overrides), tmp_path / "emb", quiet=True)
    log = (out / "run.log").read_text()
    assert "SecAgg+" in log
    error = _max_diff(_checkpoint_state(out, 1), embedded.state)
    assert error <= SecAggSettings().error_bound([16, 16, 16]) + 1e-6
    assert os.environ.get("ROLORA_FLOWER_SECAGG") is None


class UnmaskFails(LocalGrid):
    """Node ``node`` fails SecAgg+'s last stage (unmask), after its masked upload arrived."""

    def __init__(self, clients: int, node: int) -> None:
        super().__init__(clients)
        self.node, self.failed = node, 0

    def send_and_receive(self, messages, *, timeout=None):
        messages = list(messages)
        kept = [m for m in messages if not (m.metadata.dst_node_id == self.node and _stage(m) == "unmask")]
        self.failed += len(messages) - len(kept)
        return super().send_and_receive(kept, timeout=timeout)  # no reply from it: as a dead node


def _stage(msg) -> str | None:
    configs = msg.content.get("secaggplus_configs") if hasattr(msg.content, "get") else None
    return None if configs is None else str(configs.get("stage"))


def test_a_node_lost_after_masking_is_unmasked_from_the_others_shares(tmp_path):
    """SecAgg+'s dropout recovery: the lost node's masked upload still counts (its mask is rebuilt from
    the other two's shares, threshold 2 of 3): nobody is dropped and the state is the plain one."""
    config = load_config(None, TINY + ["federated.method=fedavg-lora", "federated.rounds=1"])
    grid = UnmaskFails(3, node=102)
    secure = serve(grid, config, tmp_path / "sec", quiet=True, secagg=SecAggSettings())
    plain = serve(LocalGrid(3), config, tmp_path / "plain", quiet=True)
    assert grid.failed == 1 and secure.rows[1]["dropped"] == []
    assert _max_diff(secure.state, plain.state) <= SecAggSettings().error_bound([16, 16, 16]) + 1e-6


def test_the_app_config_turns_secagg_on_with_the_pyproject_defaults(monkeypatch):
    """``flwr run rolora/flower/app --run-config 'secagg=true'``: the app's defaults (pyproject) plus the
    override reach ``serve`` as Flower's default SecAgg+ settings; ``secagg=false`` passes None."""
    import tomllib
    from pathlib import Path

    from flwr.app import Context, RecordDict

    from rolora.flower import server_app

    app_config = tomllib.loads((Path(server_app.__file__).parent / "app" / "pyproject.toml").read_text())
    defaults = app_config["tool"]["flwr"]["app"]["config"]
    seen = []
    monkeypatch.setattr(server_app, "serve", lambda grid, config, out, **kw: seen.append(kw["secagg"]))
    for secagg in (True, False):
        run_config = {**defaults, "config": "tiny-roberta", "secagg": secagg}
        server_app.main(None, Context(run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config=run_config))
    assert seen == [SecAggSettings(), None]
