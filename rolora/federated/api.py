"""The contract every federated LoRA method implements, and the data that flows through a round.

Shapes follow PyTorch/PEFT everywhere: a targeted layer has a frozen base ``W0`` of shape d×n
(out×in), ``A`` is r×n (``lora_A``), ``B`` is d×r (``lora_B``) and the layer's update is s·B·A with
s = alpha/r (r the layer's rank *on that client*).

A layer's tensors are a plain ``dict[str, Tensor]`` keyed by these names:

========  =====  ================================================================================
name      shape  meaning
========  =====  ================================================================================
``"A"``   r×n    LoRA down-projection
``"B"``   d×r    LoRA up-projection
``"W"``   d×n    a full-rank update of the layer, starting at 0 (only ``fedavg-full`` trains it)
``"base"``d×n    the frozen W0 as the method knows it; present only for methods that change it
                 (FedEx-LoRA's residual, FLoRA's merge). Added to the model's own frozen weight.
other     any    method-specific (e.g. Fed-ALoRA's ``"B_base"``, ``"M"``, ``"B1"``, ``"B2"``)
========  =====  ================================================================================

A round t = 1, 2, ... uses the methods below in one fixed order: for each participant
``client_start`` -> the caller's local training of ``trains(t)`` -> ``client_keep`` ->
``client_upload``, then ``aggregate`` over the uploads. That order is written once, in
:func:`rolora.federated.round.run_round`; call it rather than re-writing the loop.

``client_start(state, k, kept, t)`` and ``aggregate(state, updates, t)`` both need
t == state.round + 1 (the round being played). What a layer of ``state.layers`` holds is listed in
each method's docstring; evaluate a client's model as
``method.delta(method.client_start(state, k, kept, state.round + 1)[layer], alpha)``.

Everything is a pure function of its arguments: nothing is mutated in place, so a bad update (which
raises :class:`AggregationError` before any arithmetic) leaves the caller's state exactly as it was.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import ClassVar, Literal

from torch import Tensor

LayerTensors = dict[str, Tensor]
"""The named tensors of one layer (see the table above)."""

ModelTensors = dict[str, LayerTensors]
"""Layer name -> that layer's named tensors."""

Weighting = Literal["samples", "uniform"]


class AggregationError(ValueError):
    """Bad input to a federated method: the message names the client, the layer and the problem."""


class Exactness(str, Enum):
    """How the model a client runs after a round relates to the ideal aggregate (README table).

    The value is the word in the table; ``PERSONALISED`` also means each client's model differs from
    the broadcast one, so evaluate per client (``Method.personalised``).
    """

    EXACT = "yes"
    """The broadcast model is the previous one plus the weighted mean of the clients' updates."""
    INEXACT = "no"
    APPROXIMATE = "approximate"
    """As close to exact as the method's constraint allows (e.g. a rank-r_k truncation)."""
    PERSONALISED = "personalised"


@dataclass(frozen=True)
class LayerSpec:
    """A targeted layer: W0 is ``out_features × in_features`` (d×n), as in ``nn.Linear``."""

    out_features: int
    in_features: int


@dataclass(frozen=True)
class ClientUpdate:
    """What one client uploads at the end of a round.

    ``tensors`` holds only what the method uploads (see :meth:`Method.uploads`); ``num_samples``
    is n_k, the client's number of local training samples (must be > 0).
    """

    client: int | str
    num_samples: float
    tensors: ModelTensors
    dense: Mapping[str, Tensor] = field(default_factory=dict)
    """The client's trained copies of ``GlobalState.dense`` (same names and shapes)."""
    members: tuple = ()
    """The clients this update stands for when it is already their mean (SecAgg+ hands the server one
    update for the round); empty: just ``client``. Client-level DP divides its noise by their number."""


@dataclass(frozen=True)
class GlobalState:
    """The server's state after ``round`` completed rounds.

    ``layers`` holds what the server broadcasts (for most methods the global A and B; see each
    method's docstring). ``ranks`` maps each client to its rank (a single int key ``None`` holds the
    rank of clients not listed). ``alpha`` gives the per-client scale s_k = alpha / r_k. ``seed``
    seeds every random tensor the method draws (round-0 factors, fresh factors of later rounds).
    ``dense`` holds plain tensors that every client trains in full and the server averages with the
    round's weights p_k, whatever the method (e.g. a classification head; see
    :mod:`rolora.federated.dense`). ``extras`` is method-specific metadata (JSON-able values only).
    ``server`` holds server-only tensors (see :mod:`rolora.federated.composed`).
    """

    round: int
    alpha: float
    layers: ModelTensors
    ranks: Mapping[int | str | None, int]
    specs: Mapping[str, LayerSpec]
    extras: Mapping[str, object] = field(default_factory=dict)
    seed: int = 0
    dense: Mapping[str, Tensor] = field(default_factory=dict)
    server: ModelTensors = field(default_factory=dict)
    """Tensors only the server holds and never broadcasts (a server optimiser's moments); saved with
    the state, left out of what clients download."""


@dataclass(frozen=True)
class CommCost:
    """Communication of one round, per participating client, in parameters and bytes.

    ``upload_params`` / ``download_params`` are what one participating client sends / receives.
    When participants differ (mixed ranks), they are the mean over participants rounded to the
    nearest parameter; ``per_client`` then holds every participant's exact (upload, download) and
    ``total_upload_params`` / ``total_download_params`` the exact sums.
    """

    upload_params: int
    download_params: int
    bytes_per_param: int = 4
    per_client: Mapping[int | str | None, tuple[int, int]] = field(default_factory=dict)

    @property
    def upload_bytes(self) -> int:
        return self.upload_params * self.bytes_per_param

    @property
    def download_bytes(self) -> int:
        return self.download_params * self.bytes_per_param

    @property
    def total_upload_params(self) -> int:
        """Sum over the round's participants (one client when ``per_client`` is empty)."""
        return sum(u for u, _ in self.per_client.values()) if self.per_client else self.upload_params

    @property
    def total_download_params(self) -> int:
        """Sum over the round's participants (one client when ``per_client`` is empty)."""
        if not self.per_client:
            return self.download_params
        return sum(d for _, d in self.per_client.values())


class Method(ABC):
    """A federated LoRA method: what clients train and send, how the server aggregates.

    Subclasses set the class attributes and implement the abstract methods. Methods never mutate
    their arguments and never read a global random state (seeds are explicit).
    """

    name: ClassVar[str]
    """Stable name used on the command line and in results (e.g. ``"rolora"``)."""
    exact: ClassVar[Exactness]
    """How the aggregate relates to the ideal one (see :class:`Exactness`)."""
    mixes_ranks: ClassVar[bool]
    """Whether clients may use different ranks."""
    summary: ClassVar[str] = ""
    """One line for the README table: what clients train and what they send."""

    @property
    def keeps_state(self) -> bool:
        """Whether clients keep tensors between rounds (``client_keep``): personalised methods, and
        SCAFFOLD's control variates. Engines that checkpoint save them (Flower asks the nodes)."""
        return self.personalised

    @property
    def personalised(self) -> bool:
        """Whether each client's model differs from the broadcast one (evaluate per client)."""
        return self.exact is Exactness.PERSONALISED

    @abstractmethod
    def init(
        self,
        specs: Mapping[str, LayerSpec],
        ranks: int | Mapping[int | str | None, int],
        alpha: float,
        seed: int,
        dtype=None,
        device=None,
        dense: Mapping[str, Tensor] | None = None,
    ) -> GlobalState:
        """Round-0 state: A Kaiming-uniform (PEFT default) from ``seed``, B = 0, identical everywhere.

        ``dense``: initial values of plainly averaged tensors (copied; see ``GlobalState.dense``).
        """

    @abstractmethod
    def trains(self, t: int) -> frozenset[str]:
        """Names of the tensors every client optimises in round t (1-based)."""

    @abstractmethod
    def uploads(self, t: int) -> frozenset[str]:
        """Names of the tensors a client uploads in round t."""

    @abstractmethod
    def client_start(
        self, state: GlobalState, client: int | str, kept: ModelTensors | None, t: int
    ) -> ModelTensors:
        """The complete tensors client ``client`` trains from in round t (fresh copies)."""

    def averaged(self, t: int) -> frozenset[str]:
        """The uploaded tensors the server sets to the plain weighted mean of the uploads in round t.

        For these, new − old is an exact pseudo-gradient (a server optimiser may step on it, client-level
        DP may clip and noise it). Empty (the default) where the aggregate is not an average
        (an SVD, a merge into the base, a correction): such methods refuse server optimisers and DP.
        """
        return frozenset()

    def local_rules(self, state: GlobalState, client: int | str, kept: ModelTensors | None, t: int):
        """What client ``client``'s local training must do beyond plain steps in round t
        (:class:`rolora.federated.local_rules.LocalRules`), or ``None`` (the default: nothing)."""
        return None

    def client_finish(self, start, result) -> tuple[ModelTensors | None, ModelTensors, dict[str, Tensor]]:
        """(kept, uploaded tensors, uploaded dense tensors) of a client after local training, from its
        ``ClientStart`` and ``ClientResult`` (:mod:`rolora.federated.round`).

        Default: :meth:`client_keep` and :meth:`client_upload` of the trained tensors and the trained
        dense tensors. Wrappers that need the start (clipping an update, SCAFFOLD's control variates)
        override this; every engine calls it (:func:`rolora.federated.round.finish_client`)."""
        dense = {n: x.detach() for n, x in result.dense.items()}
        return self.client_keep(result.tensors, start.t), self.client_upload(result.tensors, start.t), dense

    def client_keep(self, local: ModelTensors, t: int) -> ModelTensors | None:
        """What a client keeps between rounds (``None``: stateless, the default)."""
        return None

    def client_upload(self, local: ModelTensors, t: int) -> ModelTensors:
        """The subset of the client's tensors it sends (detached copies)."""
        names = self.uploads(t)
        return {
            layer: {k: v.detach().clone() for k, v in tensors.items() if k in names}
            for layer, tensors in local.items()
        }

    @abstractmethod
    def aggregate(
        self,
        state: GlobalState,
        updates: Sequence[ClientUpdate],
        t: int,
        weighting: Weighting = "samples",
    ) -> GlobalState:
        """The server's new state after round t. Validates everything before computing."""

    @abstractmethod
    def communication(
        self, specs: Mapping[str, LayerSpec], ranks: Mapping[int | str | None, int] | int, t: int,
        clients: Sequence[int | str] | int = 1, bytes_per_param: int = 4, dense_params: int = 0,
    ) -> CommCost:
        """Parameters sent per participating client in round t (upload) and received (download).

        ``clients`` is either the number of participants (all of the default rank) or their ids
        (ranks looked up in ``ranks``); some downloads depend on the participants (FLoRA's stack).
        ``dense_params`` (the size of ``GlobalState.dense``) travels both ways for every client.
        """

    def delta(self, layer: LayerTensors, alpha: float) -> Tensor:
        """The layer's total change to the model's frozen W0, differentiable in the tensors.

        Default: ``base`` (if present) + s·B·A with s = alpha / r, or ``W`` for full-rank methods.
        Training code builds its forward from this (toy) or from the factors directly (kernels).
        """
        if "W" in layer:
            return layer["W"]
        out = (alpha / layer["A"].shape[0]) * (layer["B"] @ layer["A"])
        if "base" in layer:
            out = out + layer["base"]
        return out
