"""Server and client state as flat named tensors plus JSON metadata: files and messages, no pickle.

``state_to_flat(state) -> (tensors, meta)`` and ``state_from_flat(tensors, meta)`` round-trip a
:class:`~rolora.federated.api.GlobalState` exactly (bit-identical tensors, equal metadata); the
same for a client's kept state (``kept_to_flat`` / ``kept_from_flat``, ``None`` included). Tensors
are keyed by position (``layers/3/B``), never by a name that could hold the separator; the names
live in ``meta``. Files are safetensors with ``meta`` as JSON in the header, written atomically
(a temporary file, then ``os.replace``). Checkpoints (``rolora.llm``) and Flower messages use this.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor

from rolora.federated.api import AggregationError, GlobalState, LayerSpec, ModelTensors
from rolora.federated.atomic import atomic_file

FORMAT = "rolora.state/1"
HEADER_KEY = "rolora"


class StateFormatError(AggregationError):
    """A serialised state that cannot be read back: names the file or key and what is wrong."""


def _client_key(client: object) -> int | str | None:
    if client is None or isinstance(client, str) or (isinstance(client, int) and not isinstance(client, bool)):
        return client
    raise StateFormatError(f"client id {client!r}: must be int, str (or None for the default rank)")


def _check_name(kind: str, name: object) -> str:
    if not isinstance(name, str) or not name:
        raise StateFormatError(f"{kind} name {name!r}: must be a non-empty string")
    return name


def _json_able(where: str, value: object) -> object:
    try:
        text = json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as err:
        raise StateFormatError(f"{where}: not JSON-serialisable ({err})") from None
    if json.loads(text) != value:  # tuples, int keys...: would not come back equal
        raise StateFormatError(f"{where}: {value!r} does not survive JSON unchanged (use lists and str keys)")
    return value


def _flat_model(prefix: str, tensors: ModelTensors, out: dict[str, Tensor]) -> list[list]:
    """``prefix/i/name`` keys for layer i; returns [[layer, [names...]], ...] for the metadata."""
    layout = []
    for i, (layer, named) in enumerate(tensors.items()):
        names = [_check_name("tensor", n) for n in named]
        layout.append([_check_name("layer", layer), names])
        for n in names:
            out[f"{prefix}/{i}/{n}"] = named[n].detach().contiguous().clone()
    return layout


def _unflat_model(prefix: str, layout: list, tensors: Mapping[str, Tensor]) -> ModelTensors:
    out: ModelTensors = {}
    for i, (layer, names) in enumerate(layout):
        out[layer] = {n: _take(tensors, f"{prefix}/{i}/{n}") for n in names}
    return out


def _take(tensors: Mapping[str, Tensor], key: str) -> Tensor:
    if key not in tensors:
        raise StateFormatError(f"tensor {key!r} is missing")
    return tensors[key]


def state_to_flat(state: GlobalState) -> tuple[dict[str, Tensor], dict]:
    """A state as (flat tensors, JSON-able metadata)."""
    tensors: dict[str, Tensor] = {}
    dense_names = [_check_name("dense tensor", n) for n in state.dense]
    for i, n in enumerate(dense_names):
        tensors[f"dense/{i}"] = state.dense[n].detach().contiguous().clone()
    meta = {
        "format": FORMAT,
        "kind": "global",
        "round": int(state.round),
        "alpha": float(state.alpha),
        "seed": int(state.seed),
        "ranks": [[_client_key(c), int(r)] for c, r in state.ranks.items()],
        "specs": [[_check_name("layer", n), [s.out_features, s.in_features]] for n, s in state.specs.items()],
        "layers": _flat_model("layers", state.layers, tensors),
        "dense": dense_names,
        "extras": _json_able("extras", dict(state.extras)),
    }
    if state.server:  # server-only tensors (a server optimiser's moments); absent in older files
        meta["server"] = _flat_model("server", state.server, tensors)
    if not math.isfinite(meta["alpha"]):
        raise StateFormatError(f"alpha {state.alpha!r} is not finite")
    return tensors, meta


def _check_meta(meta: Mapping, kind: str) -> None:
    if not isinstance(meta, Mapping) or meta.get("format") != FORMAT:
        got = meta.get("format") if isinstance(meta, Mapping) else type(meta).__name__
        raise StateFormatError(f"metadata format {got!r}, expected {FORMAT!r}")
    if meta.get("kind") != kind:
        raise StateFormatError(f"metadata holds a {meta.get('kind')!r} state, expected {kind!r}")


def state_from_flat(tensors: Mapping[str, Tensor], meta: Mapping) -> GlobalState:
    """The state :func:`state_to_flat` flattened (tensors are used as given, not copied)."""
    _check_meta(meta, "global")
    try:
        specs = {n: LayerSpec(int(d), int(k)) for n, (d, k) in meta["specs"]}
        return GlobalState(
            round=int(meta["round"]),
            alpha=float(meta["alpha"]),
            layers=_unflat_model("layers", meta["layers"], tensors),
            ranks={_client_key(c): int(r) for c, r in meta["ranks"]},
            specs=specs,
            extras=dict(meta["extras"]),
            seed=int(meta["seed"]),
            dense={n: _take(tensors, f"dense/{i}") for i, n in enumerate(meta["dense"])},
            server=_unflat_model("server", meta.get("server", []), tensors),
        )
    except (KeyError, TypeError, ValueError) as err:
        if isinstance(err, StateFormatError):
            raise
        raise StateFormatError(f"malformed state metadata: {err!r}") from None


def kept_to_flat(kept: Mapping[int | str, ModelTensors | None]) -> tuple[dict[str, Tensor], dict]:
    """Every client's kept state (``None`` for stateless clients) as (flat tensors, metadata)."""
    tensors: dict[str, Tensor] = {}
    clients = []
    for i, (client, model) in enumerate(kept.items()):
        layout = None if model is None else _flat_model(f"kept/{i}", model, tensors)
        clients.append([_client_key(client), layout])
    return tensors, {"format": FORMAT, "kind": "kept", "clients": clients}


def kept_from_flat(tensors: Mapping[str, Tensor], meta: Mapping) -> dict[int | str, ModelTensors | None]:
    """The kept states :func:`kept_to_flat` flattened."""
    _check_meta(meta, "kept")
    try:
        return {
            _client_key(c): None if layout is None else _unflat_model(f"kept/{i}", layout, tensors)
            for i, (c, layout) in enumerate(meta["clients"])
        }
    except (KeyError, TypeError, ValueError) as err:
        if isinstance(err, StateFormatError):
            raise
        raise StateFormatError(f"malformed kept-state metadata: {err!r}") from None


def save_flat(path: str | Path, tensors: Mapping[str, Tensor], meta: Mapping) -> Path:
    """Write (tensors, meta) to a safetensors file atomically: a reader sees the old file or the new one."""
    from safetensors.torch import save_file

    with atomic_file(path) as tmp:
        save_file(dict(tensors), str(tmp), metadata={HEADER_KEY: json.dumps(meta, allow_nan=False)})
    return Path(path)


def load_flat(path: str | Path, device: str | torch.device = "cpu") -> tuple[dict[str, Tensor], dict]:
    """Read a file :func:`save_flat` wrote; a truncated or foreign file raises StateFormatError naming it."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise StateFormatError(f"{path}: no such file")
    try:
        with safe_open(str(path), framework="pt", device=str(device)) as f:
            header = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise StateFormatError(f"{path}: not a readable safetensors file (truncated or corrupt?): {err}") from None
    if HEADER_KEY not in header:
        raise StateFormatError(f"{path}: safetensors file without rolora metadata")
    try:
        meta = json.loads(header[HEADER_KEY])
    except json.JSONDecodeError as err:
        raise StateFormatError(f"{path}: corrupt rolora metadata: {err}") from None
    return tensors, meta


def save_state(path: str | Path, state: GlobalState) -> Path:
    """Write a global state to ``path`` (safetensors, atomic)."""
    return save_flat(path, *state_to_flat(state))


def load_state(path: str | Path, device: str | torch.device = "cpu") -> GlobalState:
    """Read a global state written by :func:`save_state`."""
    tensors, meta = load_flat(path, device)
    try:
        return state_from_flat(tensors, meta)
    except StateFormatError as err:
        raise StateFormatError(f"{path}: {err}") from None


def save_kept(path: str | Path, kept: Mapping[int | str, ModelTensors | None]) -> Path:
    """Write every client's kept state to ``path`` (safetensors, atomic)."""
    return save_flat(path, *kept_to_flat(kept))


def load_kept(path: str | Path, device: str | torch.device = "cpu") -> dict[int | str, ModelTensors | None]:
    """Read kept states written by :func:`save_kept`."""
    tensors, meta = load_flat(path, device)
    try:
        return kept_from_flat(tensors, meta)
    except StateFormatError as err:
        raise StateFormatError(f"{path}: {err}") from None
