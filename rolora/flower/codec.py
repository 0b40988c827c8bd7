"""Flower records <-> the core's data: states, client starts and uploads as ArrayRecords + JSON metadata.

Tensors travel as Flower ``Array``s (numpy bytes), names and structure as JSON strings in a
``ConfigRecord`` (the layout of :mod:`rolora.federated.serial`); nothing is pickled.

Downloads are per node and incremental (:class:`Downloads`): the server remembers what it last sent
each node and sends only the flat tensors that changed since, with the round they apply to
(``base``). A node keeps the global tensors it holds in its ``context.state`` (:func:`merge`); a
node whose copy is not at ``base`` (a restarted SuperNode) refuses the message, and the server then
sends it everything. So RoLoRA's clients receive only the factor aggregated last round, the
method's own download count (``method.communication``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import replace

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, RecordDict
from torch import Tensor

from rolora.federated import GlobalState, ModelTensors
from rolora.federated.serial import StateFormatError, kept_from_flat, kept_to_flat, state_from_flat, state_to_flat

NEVER = -1
"""``base`` of a message that carries every tensor (the node holds nothing yet)."""


BF16_TAG = "bf16:"
"""Key prefix of a bfloat16 tensor in a record: numpy has no bfloat16, so its 16-bit patterns travel as
int16 (bit-exact, the same bytes) and become bfloat16 again on arrival (a bf16 base's head, say)."""


def to_record(tensors: Mapping[str, Tensor]) -> ArrayRecord:
    """Flat named tensors as an ArrayRecord (numpy arrays; bfloat16 as its int16 bit patterns)."""
    record = ArrayRecord()
    for key, x in tensors.items():
        x = x.detach().cpu().contiguous()
        if x.dtype == torch.bfloat16:
            key, x = BF16_TAG + key, x.view(torch.int16)
        record[key] = Array(x.numpy())
    return record


def from_record(record: ArrayRecord) -> dict[str, Tensor]:
    # A torch-allocated copy: numpy views of Flower's read-only buffers must not reach the optimiser,
    # and BLAS kernels may round differently for numpy's (less aligned) memory than for torch's.
    out = {}
    for key, arr in record.items():
        x = torch.from_numpy(np.asarray(arr.numpy())).clone()
        if key.startswith(BF16_TAG):
            key, x = key[len(BF16_TAG):], x.view(torch.bfloat16)
        out[key] = x
    return out


def nbytes(record: ArrayRecord) -> int:
    """The bytes Flower serialises for the record's arrays (data + keys, as ``count_bytes``)."""
    return int(record.count_bytes())


# ----------------------------------------------------------------------------- server -> node
class Downloads:
    """Which round's state each node holds, so the next message carries only what changed.

    The flat tensors of each round some node still holds are kept once (not per node): memory is a
    few states, whatever the number of nodes.
    """

    def __init__(self) -> None:
        self._held: dict[int, int] = {}
        self._flats: dict[int, tuple[dict[str, Tensor], dict]] = {}

    def message(self, node: int, state: GlobalState) -> tuple[int, dict[str, Tensor], dict]:
        """(base round, changed tensors, metadata) for ``node``; remembers it now holds ``state``."""
        if state.round not in self._flats:  # a round's state never changes within a run: flatten once
            self._flats[state.round] = state_to_flat(replace(state, server={}))  # server-only: not sent
        flat, meta = self._flats[state.round]
        base = self._held.get(node, NEVER)
        had = self._flats[base][0] if base in self._flats else {}
        changed = {k: x for k, x in flat.items() if k not in had or not _same(had[k], x)}
        self._held[node] = state.round
        self._prune(state.round)
        return base, changed, meta

    def forget(self, node: int) -> None:
        """The node did not answer: its copy is unknown, send it everything next time."""
        self._held.pop(node, None)

    def _prune(self, current: int) -> None:
        keep = set(self._held.values()) | {current}
        for r in [r for r in self._flats if r not in keep]:
            del self._flats[r]


def _same(a: Tensor, b: Tensor) -> bool:
    return a is b or (a.shape == b.shape and a.dtype == b.dtype and torch.equal(a, b))


def state_content(base: int, changed: Mapping[str, Tensor], meta: dict, **config) -> RecordDict:
    """A message's content: the changed tensors, the state's metadata and the action's settings."""
    return RecordDict({"arrays": to_record(changed),
                       "config": ConfigRecord({"base": base, "meta": json.dumps(meta), **config})})


# ----------------------------------------------------------------------------- node side
STATE_ARRAYS, STATE_INFO = "rolora.global", "rolora.global_info"


def merge(node_state: RecordDict, content: RecordDict) -> GlobalState:
    """The global state a message describes, from the node's copy plus the changed tensors.

    The node's copy in ``node_state`` (its ``context.state``) is updated. Raises StateFormatError
    when the copy is not at the round the message builds on.
    """
    config = content["config"]
    base = int(config["base"])
    held = int(node_state[STATE_INFO]["round"]) if STATE_INFO in node_state else NEVER
    if base != NEVER and held != base:
        raise StateFormatError(f"stale node copy: the message builds on round {base}, this node holds "
                               f"{'nothing' if held == NEVER else f'round {held}'}")
    meta = json.loads(str(config["meta"]))
    tensors = {} if base == NEVER else from_record(node_state[STATE_ARRAYS])
    tensors.update(from_record(content["arrays"]))
    state = state_from_flat(tensors, meta)
    wanted, _ = state_to_flat(state)  # drop tensors the state no longer holds
    node_state[STATE_ARRAYS] = to_record({k: tensors[k] for k in wanted})
    node_state[STATE_INFO] = ConfigRecord({"round": state.round})
    return state


# ----------------------------------------------------------------------------- a client's own state
KEPT_ARRAYS, KEPT_INFO = "rolora.kept", "rolora.kept_info"


def forget_run(node_state: RecordDict, keys: tuple[str, ...] = ()) -> None:
    """Drop what the node holds of a run (global copy, kept state, and ``keys``): another run starts."""
    for key in (STATE_ARRAYS, STATE_INFO, KEPT_ARRAYS, KEPT_INFO, *keys):
        if key in node_state:
            del node_state[key]


def save_kept(node_state: RecordDict, client: int | str, kept: ModelTensors | None) -> None:
    tensors, meta = kept_to_flat({client: kept})
    node_state[KEPT_ARRAYS] = to_record(tensors)
    node_state[KEPT_INFO] = ConfigRecord({"meta": json.dumps(meta)})


def load_kept(node_state: RecordDict) -> dict:
    """{client: kept} of this node ({} before its first round)."""
    if KEPT_INFO not in node_state:
        return {}
    return kept_from_flat(from_record(node_state[KEPT_ARRAYS]), json.loads(str(node_state[KEPT_INFO]["meta"])))


def models_record(models: Mapping[int | str, ModelTensors | None], dense: Mapping[str, Tensor]) -> tuple[ArrayRecord, str]:
    """Per-client model tensors plus dense tensors as (ArrayRecord, metadata JSON)."""
    tensors, meta = kept_to_flat(models)
    names = list(dense)
    tensors.update({f"dense/{i}": dense[n] for i, n in enumerate(names)})
    return to_record(tensors), json.dumps({"models": meta, "dense": names})


def models_from_record(record: ArrayRecord, meta_json: str) -> tuple[dict, dict[str, Tensor]]:
    """The inverse of :func:`models_record`."""
    tensors = from_record(record)
    meta = json.loads(meta_json)
    dense = {n: tensors[f"dense/{i}"] for i, n in enumerate(meta["dense"])}
    return kept_from_flat(tensors, meta["models"]), dense
