"""A LoRA rule with additions (:mod:`rolora.federated.additions`): one :class:`Method` that both engines run.

:class:`Composed` wraps a method and keeps its contract, so the round protocol, checkpoints and the
Flower engine need nothing new. Per round t, around the inner method:

client side (:meth:`Composed.local_rules`, :meth:`Composed.client_finish`)
  - FedProx / SCAFFOLD: ``start.rules.correction`` adds μ·(w − w_start) + (c − c_k) to each trained
    tensor's gradient (the local trainer applies it);
  - DP-SGD: ``start.rules.privacy`` (the local trainer clips per sample and adds noise);
  - client-level DP: the update (uploaded tensors and dense ones, jointly) is clipped to ``dp_clip``
    ON THE CLIENT before it leaves (so it composes with SecAgg+: the server never needs one update);
  - SCAFFOLD: c_k ← c_k − c + (x − y_k)/(K·η) for the trained tensors (option II of Karimireddy et
    al. 2020; K local steps at lr η as the trainer reports them; with AdamW this is the mean step
    direction, not a gradient: documented, not hidden), kept on the client; Δc_k is uploaded beside
    the factors (``ctl.<name>``, counted in the communication).

server side (:meth:`Composed.aggregate`)
  1. the inner rule aggregates the (clipped) uploads;
  2. client-level DP: Gaussian noise N(0, (σ·clip)²) / m on every averaged tensor (m = the round's
     uploading clients), seeded by (seed, t): the noise of the sum, divided as the mean is;
  3. a server optimiser steps each averaged tensor on Δ = step-2 result − previous value, with ONE
     state per tensor (RoLoRA: m_A, v_A move only in A rounds, m_B, v_B only in B rounds; the factor
     that trained last round is frozen now and keeps its moments untouched);
  4. SCAFFOLD: c ← c + (1/N)·Σ_k Δc_k;
  5. the privacy spent so far, (ε, δ), by Opacus's RDP accountant, in ``state.extras["privacy"]``.

Server optimiser moments live in ``state.server`` (saved, never broadcast); SCAFFOLD's c in the
broadcast layers as ``ctl.<name>`` (clients need it); each c_k in the client's kept state.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import replace

import torch
from torch import Tensor

from rolora.federated.additions import Additions, refusal
from rolora.federated.api import AggregationError, ClientUpdate, CommCost, GlobalState, LayerSpec, Method, ModelTensors
from rolora.federated.local_rules import DENSE, GradCorrection, Key, LocalRules, SamplePrivacy, flat_keys
from rolora.federated.privacy import clip_update, epsilon, gaussian_noise
from rolora.federated.seeding import derive_seed

CTL = "ctl."
"""Prefix of SCAFFOLD's control variates among a layer's tensors (and the dense ones)."""


def _is_ctl(name: str) -> bool:
    return name.startswith(CTL)


def _plain_layers(layers: ModelTensors) -> ModelTensors:
    return {layer: {n: x for n, x in named.items() if not _is_ctl(n)} for layer, named in layers.items()
            if layer != DENSE}


def plain_state(state: GlobalState) -> GlobalState:
    """The state as the inner method knows it: no control variates, no server moments."""
    return replace(state, layers=_plain_layers(state.layers), server={})


def compose(method: Method, additions: Additions, weighting: str = "samples") -> Method:
    """``method`` with ``additions``, or ``method`` itself when there are none. Refuses (AggregationError,
    naming both) a combination that cannot work, before anything runs."""
    if additions.empty:
        return method
    why = refusal(method, additions, weighting)
    if why is not None:
        raise AggregationError(why)
    return Composed(method, additions)


class Composed(Method):
    """``inner`` plus ``additions`` (see the module docstring); everything else is the inner method's."""

    def __init__(self, inner: Method, additions: Additions) -> None:
        if isinstance(inner, Composed):
            raise AggregationError("compose the additions once (the method is already composed)")
        self.inner, self.additions = inner, additions
        self.name = inner.name
        self.exact = inner.exact
        self.mixes_ranks = inner.mixes_ranks
        self.summary = inner.summary

    def __getattr__(self, attr: str):  # method-specific attributes (schedule, uses_ranks, ...)
        if attr == "inner":
            raise AttributeError(attr)
        return getattr(self.inner, attr)

    def describe(self) -> str:
        return f"{self.inner.name} + {self.additions.describe()}"

    @property
    def personalised(self) -> bool:
        return self.inner.personalised

    @property
    def keeps_state(self) -> bool:
        return self.inner.keeps_state or self.additions.scaffold

    # ----------------------------------------------------------------------------- what trains and travels
    def trains(self, t: int) -> frozenset[str]:
        return self.inner.trains(t)

    def averaged(self, t: int) -> frozenset[str]:
        return self.inner.averaged(t)

    def uploads(self, t: int) -> frozenset[str]:
        up = self.inner.uploads(t)
        if self.additions.scaffold:
            up = up | {CTL + n for n in self.inner.trains(t)}
        return up

    def _ctl_names(self) -> frozenset[str]:
        return frozenset().union(*(self.inner.trains(t) for t in range(1, 9)))

    # ----------------------------------------------------------------------------- round 0
    def init(self, specs, ranks, alpha, seed, dtype=None, device=None, dense=None) -> GlobalState:
        state = self.inner.init(specs, ranks, alpha, seed, dtype=dtype, device=device, dense=dense)
        if not self.additions.scaffold:
            return state
        names = self._ctl_names()
        layers = {layer: {**named, **{CTL + n: torch.zeros_like(named[n]) for n in sorted(names) if n in named}}
                  for layer, named in state.layers.items()}
        if state.dense:  # the dense tensors' control variates sit in a pseudo-layer (state.dense stays plain)
            layers[DENSE] = {CTL + n: torch.zeros_like(x) for n, x in state.dense.items()}
        return replace(state, layers=layers)

    # ----------------------------------------------------------------------------- client side
    def _inner_kept(self, kept: ModelTensors | None) -> ModelTensors | None:
        if kept is None:
            return None
        inner = {layer: {n: x for n, x in named.items() if not _is_ctl(n)}
                 for layer, named in kept.items() if layer != DENSE}
        return inner if any(inner.values()) else None

    def client_start(self, state: GlobalState, client, kept, t: int) -> ModelTensors:
        return self.inner.client_start(plain_state(state), client, self._inner_kept(kept), t)

    def _control(self, state: GlobalState, kept: ModelTensors | None, t: int) -> tuple[dict[Key, Tensor], dict[Key, Tensor]]:
        """(c of the tensors trained in round t, the client's c_k of every tensor), keyed as in
        :mod:`.local_rules`; a c_k the client never had is 0."""
        trained = self.inner.trains(t)
        c = {(layer, n[len(CTL):]): x for layer, named in state.layers.items() for n, x in named.items()
             if _is_ctl(n) and (layer == DENSE or n[len(CTL):] in trained)}
        c_k = {} if kept is None else {(layer, n[len(CTL):]): x for layer, named in kept.items()
                                       for n, x in named.items() if _is_ctl(n)}
        for key, x in c.items():
            c_k.setdefault(key, torch.zeros_like(x))
        return c, c_k

    def local_rules(self, state: GlobalState, client, kept, t: int) -> LocalRules | None:
        a = self.additions
        correction = privacy = None
        c_k: dict[Key, Tensor] = {}
        if a.prox_mu or a.scaffold:
            anchor: dict[Key, Tensor] = {}
            if a.prox_mu:
                start = self.client_start(state, client, kept, t)
                anchor = {k: x.detach().clone() for k, x in
                          flat_keys(start, state.dense, self.inner.trains(t)).items()}
            shift: dict[Key, Tensor] = {}
            if a.scaffold:
                c, c_k = self._control(state, kept, t)
                shift = {key: c[key] - c_k[key] for key in c}
            correction = GradCorrection(mu=a.prox_mu, anchor=anchor, shift=shift)
        if a.dp == "sample":
            privacy = SamplePrivacy(clip=a.dp_clip, noise=a.dp_noise, seed=state.seed)
        return LocalRules(correction=correction, privacy=privacy, control=c_k)

    def client_finish(self, start, result) -> tuple[ModelTensors | None, ModelTensors, dict[str, Tensor]]:
        t = start.t
        kept, upload, dense = self.inner.client_finish(start, result)
        a = self.additions
        if a.dp == "client":
            upload, dense = self._clipped(start, upload, dense)
        if not a.scaffold:
            return kept, upload, dense
        steps, lr = result.metrics.get("steps"), result.metrics.get("lr")
        if not steps or not lr:
            raise AggregationError(f"round {t}, client {start.client!r}: SCAFFOLD needs the local trainer to report "
                                   f"metrics 'steps' and 'lr' (got steps={steps!r}, lr={lr!r})")
        c_k = start.rules.control  # every c_k of the client: those not trained now are kept as they are
        shift = start.rules.correction.shift  # c − c_k of the tensors trained now
        x = flat_keys(start.tensors, start.dense, self.inner.trains(t))
        y = flat_keys(result.tensors, result.dense, self.inner.trains(t))
        new_kept: ModelTensors = {layer: dict(named) for layer, named in (kept or {}).items()}
        for (layer, n), v in c_k.items():
            new_kept.setdefault(layer, {})[CTL + n] = v
        upload = {layer: dict(named) for layer, named in upload.items()}
        head_lr = result.metrics.get("head_lr", lr)  # a head may train at its own lr (train.head_lr)
        for key in shift:
            eta = float(head_lr if key[0] == DENSE else lr)
            c_new = -shift[key] + (x[key] - y[key].to(x[key].dtype)) / (float(steps) * eta)  # c_k − c + (x − y)/(Kη)
            delta = (c_new - c_k[key]).detach()
            layer, n = key
            new_kept.setdefault(layer, {})[CTL + n] = c_new.detach().clone()
            upload.setdefault(layer, {})[CTL + n] = delta
        return new_kept, upload, dense

    def _clipped(self, start, upload: ModelTensors, dense: dict[str, Tensor]) -> tuple[ModelTensors, dict[str, Tensor]]:
        """The client's upload and dense tensors with their joint update (vs its start) clipped."""
        end = flat_keys(upload, dense)
        begin = {(layer, n): start.tensors[layer][n] for layer, named in upload.items() for n in named}
        begin.update({(DENSE, n): start.dense[n] for n in dense})
        clipped, _ = clip_update(begin, {k: v.to(begin[k].dtype) for k, v in end.items()}, self.additions.dp_clip)
        out: ModelTensors = {layer: {n: clipped[(layer, n)] for n in named} for layer, named in upload.items()}
        return out, {n: clipped[(DENSE, n)] for n in dense}

    # ----------------------------------------------------------------------------- server side
    def aggregate(self, state: GlobalState, updates: Sequence[ClientUpdate], t: int, weighting="samples") -> GlobalState:
        a = self.additions
        if a.dp == "client" and weighting != "uniform":
            raise AggregationError(refusal(self.inner, a, weighting))
        plain = [replace(u, tensors=_plain_layers(u.tensors)) for u in updates]
        new = self.inner.aggregate(plain_state(state), plain, t, weighting=weighting)
        members = sum(max(1, len(u.members)) for u in updates)
        averaged = self.inner.averaged(t)
        if a.dp == "client":
            new = self._noised(new, averaged, members, t)
        server = {layer: dict(named) for layer, named in state.server.items()}
        if a.server_opt is not None:
            new, server = self._stepped(state, new, averaged, server)
        layers = self._controls(state, updates, new, t) if a.scaffold else new.layers
        extras = dict(new.extras)
        if a.dp != "off":
            extras["privacy"] = self._accounted(state, updates, members)
        return replace(new, layers=layers, server=server, extras=extras)

    def _noised(self, new: GlobalState, averaged: frozenset[str], members: int, t: int) -> GlobalState:
        a = self.additions
        std = a.dp_noise * a.dp_clip / members
        g = torch.Generator().manual_seed(derive_seed(new.seed, "dp-client", t))
        like = {(layer, n): new.layers[layer][n] for layer in new.specs for n in sorted(averaged) if n in new.layers[layer]}
        like.update({(DENSE, n): x for n, x in sorted(new.dense.items())})
        noise = gaussian_noise(like, std, g) if std > 0 else {}
        if not noise:
            return new
        layers = {layer: {n: x + noise[(layer, n)] if (layer, n) in noise else x for n, x in named.items()}
                  for layer, named in new.layers.items()}
        dense = {n: x + noise[(DENSE, n)] for n, x in new.dense.items()}
        return replace(new, layers=layers, dense=dense)

    def _stepped(self, old: GlobalState, new: GlobalState, averaged: frozenset[str], server: dict) -> tuple[GlobalState, dict]:
        opt = self.additions.server_opt
        slots = opt.slots()

        def step(where: str, name: str, before: Tensor, after: Tensor) -> Tensor:
            mine = server.setdefault(where, {})
            current = {s: mine[f"{name}.{s}"] for s in slots if f"{name}.{s}" in mine}
            x, moved = opt.step(before, after - before, current)
            mine.update({f"{name}.{s}": v for s, v in moved.items()})
            return x

        layers = {}
        for layer, named in new.layers.items():
            layers[layer] = {n: step(layer, n, old.layers[layer][n], x) if n in averaged else x
                             for n, x in named.items()}
        dense = {n: step(DENSE, n, old.dense[n], x) for n, x in new.dense.items()}
        return replace(new, layers=layers, dense=dense), server

    def _controls(self, old: GlobalState, updates: Sequence[ClientUpdate], new: GlobalState, t: int):
        """c ← c + (1/N)·Σ_k Δc_k for the tensors trained in round t; other c unchanged."""
        n_total = self.additions.clients
        layers = {layer: dict(named) for layer, named in new.layers.items()}
        layers[DENSE] = {}
        for layer in layers:
            for n, c in old.layers.get(layer, {}).items():
                if not _is_ctl(n):
                    continue
                if layer != DENSE and n[len(CTL):] not in self.inner.trains(t):
                    layers[layer][n] = c
                    continue
                missing = [u.client for u in updates if n not in u.tensors.get(layer, {})]
                if missing:
                    raise AggregationError(f"round {t}, layer {layer!r}: SCAFFOLD's {n} is missing from the uploads "
                                           f"of clients {missing}")
                deltas = [u.tensors[layer][n] for u in updates]
                layers[layer][n] = c + sum(deltas) / n_total
        if not layers[DENSE]:
            del layers[DENSE]
        return layers

    def _accounted(self, state: GlobalState, updates: Sequence[ClientUpdate], members: int) -> dict:
        """The privacy spent after this round: the composed history and ε at δ (None: ∞, no noise)."""
        a = self.additions
        before = dict(state.extras.get("privacy", {}))
        if a.dp == "client":
            history = [list(h) for h in before.get("history", [])]
            q = min(1.0, members / a.clients)
            if history and history[-1][:2] == [a.dp_noise, q]:
                history[-1][2] += 1
            else:
                history.append([a.dp_noise, q, 1])
            eps = epsilon([tuple(h) for h in history], a.dp_delta)
            return {"level": "client", "history": history, "delta": a.dp_delta,
                    "epsilon": eps if math.isfinite(eps) else None}
        steps = dict(before.get("steps", {}))  # DP-SGD: per client, its total local steps so far
        for u in updates:
            for k in (u.members or (u.client,)):
                n_k = float(u.num_samples) if not u.members else float(self._size(k, u))
                key = str(k)
                per_round = (a.local_epochs * math.ceil(n_k / a.batch_size) if a.local_epochs else a.local_steps)
                steps[key] = [min(1.0, a.batch_size / n_k), steps.get(key, [0, 0])[1] + per_round]
        worst = max((epsilon([(a.dp_noise, q, s)], a.dp_delta) for q, s in steps.values()), default=0.0)
        return {"level": "sample", "steps": steps, "delta": a.dp_delta,
                "epsilon": worst if math.isfinite(worst) else None}

    def _size(self, client, update: ClientUpdate) -> float:
        sizes = self.additions.client_sizes
        if client not in sizes:
            raise AggregationError(f"DP-SGD accounting: no sample count for client {client!r} of a merged (SecAgg+) "
                                   "update: give Additions.client_sizes")
        return sizes[client]

    # ----------------------------------------------------------------------------- the rest
    def communication(self, specs: Mapping[str, LayerSpec], ranks, t: int, clients=1, bytes_per_param: int = 4,
                      dense_params: int = 0) -> CommCost:
        cost = self.inner.communication(specs, ranks, t, clients=clients, bytes_per_param=bytes_per_param,
                                        dense_params=dense_params)
        if not self.additions.scaffold:
            return cost
        shape_of = getattr(self.inner, "shape_of", None)
        if shape_of is None:
            raise AggregationError(f"SCAFFOLD with {self.inner.name}: its tensor shapes are unknown")
        from rolora.federated.ranks import participant_ranks

        per = {}
        for c, r in participant_ranks(ranks, clients).items():
            up = sum(math.prod(shape_of(n, spec, r)) for spec in specs.values() for n in self.inner.trains(t))
            down = sum(math.prod(shape_of(n, spec, r)) for spec in specs.values() for n in self.inner.trains(t + 1))
            u0, d0 = cost.per_client.get(c, (cost.upload_params, cost.download_params))
            per[c] = (u0 + up + dense_params, d0 + down + dense_params)  # Δc_k up; c of the next round's tensors down
        ups, downs = [u for u, _ in per.values()], [d for _, d in per.values()]
        return CommCost(upload_params=round(sum(ups) / len(ups)), download_params=round(sum(downs) / len(downs)),
                        bytes_per_param=bytes_per_param, per_client=per)

    def delta(self, layer, alpha: float) -> Tensor:
        return self.inner.delta({n: x for n, x in layer.items() if not _is_ctl(n)}, alpha)
