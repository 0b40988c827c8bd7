"""Which examples a run used, written into its folder so the run can be taken elsewhere.

``data_split.json``: for the test, validation and training splits and for every client, the content
hash of each example (sha256 of its text, a tab and its second sentence if any, first 16 hex digits),
so a user can check any copy of the data against the run without rolora's loader or its row order.
``test.jsonl``: the test examples themselves (text, pair, label index and name; for instruction data
instruction, input and output), what evaluating an exported adapter with plain transformers + peft
needs (README, "Evaluate an export without rolora").
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from rolora.federated.atomic import atomic_file
from rolora.llm.config import RunConfig
from rolora.llm.prepare import prepare_data, split_data
from rolora.llm.text_dataset import TextDataset

HASH_DIGITS = 16


def content_hash(text: str, pair: str | None = None) -> str:
    """The hash that names an example in ``data_split.json``."""
    payload = text if pair is None else f"{text}\t{pair}"
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:HASH_DIGITS]


def example_hashes(ds) -> list[str]:
    if isinstance(ds, TextDataset):
        pairs = ds.pairs if ds.pairs is not None else [None] * len(ds)
        return [content_hash(t, p) for t, p in zip(ds.texts, pairs)]
    return [content_hash(f"{i}\t{x}", o) for i, x, o in zip(ds.instructions, ds.inputs, ds.outputs)]


def example_rows(ds) -> list[dict]:
    """The examples as JSON-able dicts (the test split's lines of ``test.jsonl``)."""
    if isinstance(ds, TextDataset):
        pairs = ds.pairs if ds.pairs is not None else [None] * len(ds)
        return [{"text": t, **({"pair": p} if p is not None else {}), "label": int(y), "label_name": ds.label_names[y]}
                for t, p, y in zip(ds.texts, pairs, ds.labels.tolist())]
    return [{"instruction": i, "input": x, "output": o} for i, x, o in zip(ds.instructions, ds.inputs, ds.outputs)]


def data_split(config: RunConfig) -> tuple[dict, list[dict]]:
    """(the ``data_split.json`` content, the test examples) of ``config`` (deterministic)."""
    _, val_ds, test_ds = split_data(config)
    train_ds, _, parts, labels = prepare_data(config)
    train_hashes = example_hashes(train_ds)
    record = {
        "dataset": config.data.dataset,
        "hash": f"sha256(text, or text + TAB + pair), first {HASH_DIGITS} hex digits",
        "label_names": labels,
        "splits": {"test": example_hashes(test_ds), "val": example_hashes(val_ds), "train": train_hashes},
        "clients": {str(k): [train_hashes[i] for i in part] for k, part in enumerate(parts)},
    }
    return record, example_rows(test_ds)


def write_data_split(run_dir: Path, config: RunConfig) -> None:
    record, test_rows = data_split(config)
    with atomic_file(run_dir / "data_split.json") as tmp:
        tmp.write_text(json.dumps(record) + "\n")
    with atomic_file(run_dir / "test.jsonl") as tmp:
        tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in test_rows))
