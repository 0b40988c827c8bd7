"""Labelled text and instruction sets from a user's local file: CSV / TSV / JSON / JSONL / parquet.

Records are read with the standard library (parquet with pyarrow), so every format yields the same
Python values; a wrong file gets an error that names the file and the column, line or row at fault.

Label values: with ``label_names`` given, a value matches a name first (``"positive"``, or ``"1"``
against a name "1"), else an integer value is read as a class index (``0``/``"0"`` = first name)
unless the names are themselves integers; anything else is an error naming the value and the row.
Without ``label_names`` the classes are the distinct values, sorted (numerically when all are
integers, as in ``0, 1`` or ``-1, 1``; as strings otherwise), and renumbered 0..C-1.
"""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

import numpy as np

from rolora.llm.text_dataset import InstructionDataset, TextDataset

FORMATS = (".csv", ".tsv", ".json", ".jsonl", ".parquet")

_INTEGER = re.compile(r"^[+-]?\d+$")


def read_records(path) -> list[dict]:
    """Rows of a data file as dicts (column → value), chosen by the file's extension."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path} is a folder, not a data file ({', '.join(FORMATS)})")
    if not path.is_file():
        raise FileNotFoundError(f"data file {path} does not exist")
    suffix = path.suffix.lower()
    if suffix in (".csv", ".tsv"):
        text = io.StringIO(read_utf8(path), newline="")  # newline="": the csv module reads line ends itself
        return list(csv.DictReader(text, delimiter="\t" if suffix == ".tsv" else ","))
    if suffix == ".jsonl":
        return _read_jsonl(path)
    if suffix == ".json":
        try:
            data = json.loads(read_utf8(path))
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: not valid JSON ({err.msg} at line {err.lineno}, column {err.colno})") from None
        return _json_records(path, data)
    if suffix == ".parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError as err:
            raise ImportError(f"reading {path} needs pyarrow: `pip install pyarrow`") from err
        try:
            return pq.read_table(path).to_pylist()
        except (OSError, ValueError) as err:  # pyarrow's ArrowInvalid is a ValueError
            raise ValueError(f"{path}: not a readable parquet file ({err})") from None
    raise ValueError(f"{path}: unsupported file type {suffix!r}; use one of {', '.join(FORMATS)}")


def read_utf8(path) -> str:
    """The text of a UTF-8 file; other bytes are a ValueError naming the file, the byte and its line."""
    raw = Path(path).read_bytes()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw.count(b"\n", 0, err.start) + 1
        column = err.start - (raw.rfind(b"\n", 0, err.start) + 1) + 1
        raise ValueError(f"{path}: not UTF-8 text (byte 0x{raw[err.start]:02x} at line {line}, column {column}); "
                         "save it as UTF-8") from None


def _read_jsonl(path: Path) -> list[dict]:
    records = []
    for number, line in enumerate(read_utf8(path).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: line {number} is not valid JSON ({err.msg})") from err
        if not isinstance(record, dict):
            raise ValueError(f"{path}: line {number} is a JSON {type(record).__name__}, expected an object")
        records.append(record)
    return records


def _json_records(path: Path, data) -> list[dict]:
    """A JSON file may hold a list of row objects, an object of equal-length column lists, or an
    object with a single key (e.g. ``"data"``) holding a list of row objects."""
    if isinstance(data, dict) and len(data) == 1 and isinstance(next(iter(data.values())), list):
        data = next(iter(data.values()))
    if isinstance(data, list) and all(isinstance(r, dict) for r in data):
        return data
    if isinstance(data, dict) and all(isinstance(v, list) for v in data.values()):
        lengths = {len(v) for v in data.values()}
        if len(lengths) > 1:
            raise ValueError(f"{path}: the column lists have different lengths {sorted(lengths)}")
        columns = list(data)
        return [dict(zip(columns, values)) for values in zip(*data.values())]
    raise ValueError(f"{path}: expected a list of row objects or an object of column lists")


def _column(path, records: list[dict], column: str, *, required: bool = True) -> list:
    """The values of ``column``; a missing column (or a row without it) is an error naming both."""
    if not records:
        raise ValueError(f"{path} has no rows")
    present = list(records[0])
    if column not in present:
        raise ValueError(f"{path} has no column {column!r}; its columns are {present}")
    values = []
    for row, record in enumerate(records):
        value = record.get(column)
        if value is None and required:
            raise ValueError(f"{path}: row {row} (0-based, after the header) has no value in column {column!r}")
        values.append(value)
    return values


def _label_key(value):
    """Integers (also bools, integral floats and integer strings) compare as ints, the rest as text."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and _INTEGER.match(value.strip()):
        return int(value)
    return value.strip() if isinstance(value, str) else value


def encode_labels(path, values: list, label_names: list[str] | None) -> tuple[np.ndarray, list[str]]:
    """Class indices and names for raw label values (rules in the module docstring)."""
    for row, value in enumerate(values):
        if str(value).strip() == "":
            raise ValueError(f"{path}: row {row} (0-based) has an empty label")
    if label_names is None:
        keys = [_label_key(v) for v in values]
        if not all(isinstance(k, int) for k in keys):
            keys = [str(k) for k in keys]
        classes = sorted(set(keys))
        index = {k: i for i, k in enumerate(classes)}
        return np.asarray([index[k] for k in keys], dtype=np.int64), [str(c) for c in classes]
    names = [str(n) for n in label_names]
    by_name = {n: i for i, n in enumerate(names)}
    indices_allowed = not any(_INTEGER.match(n.strip()) for n in names)
    labels = np.empty(len(values), dtype=np.int64)
    for row, value in enumerate(values):
        text = str(value).strip()
        key = _label_key(value)
        if text in by_name:
            labels[row] = by_name[text]
        elif indices_allowed and isinstance(key, int) and 0 <= key < len(names):
            labels[row] = key
        else:
            raise ValueError(f"{path}: row {row} (0-based) has label {value!r}, which is not one of {names}"
                             + (f" nor a class index 0..{len(names) - 1}" if indices_allowed else ""))
    return labels, names


def load_file(path, text_column: str, label_column: str, pair_column: str | None = None,
              group_column: str | None = None, label_names: list[str] | None = None) -> TextDataset:
    """A labelled text set from a CSV / TSV / JSON / JSONL / parquet file.

    ``pair_column`` names the second sentence of sentence-pair tasks; ``group_column`` a
    natural-partition column (e.g. a user or domain id, read as text). Label rules: module docstring.
    """
    records = read_records(path)
    texts = [str(v) for v in _column(path, records, text_column)]
    pairs = None if pair_column is None else [str(v) for v in _column(path, records, pair_column)]
    groups = None if group_column is None else [str(v) for v in _column(path, records, group_column)]
    labels, names = encode_labels(path, _column(path, records, label_column), label_names)
    return TextDataset(texts, pairs, labels, names, groups, Path(path).stem)


def load_instructions(path, instruction_column: str = "instruction", input_column: str = "input",
                      output_column: str = "output") -> InstructionDataset:
    """Alpaca-style instruction data from JSON / JSONL (or any format :func:`read_records` reads).

    The input column is optional (a file without it, or a row with null, means no input: ""); the
    instruction and output columns are required in every row.
    """
    records = read_records(path)
    instructions = [str(v) for v in _column(path, records, instruction_column)]
    outputs = [str(v) for v in _column(path, records, output_column)]
    has_input = input_column in records[0]
    inputs = [str(r.get(input_column) or "") for r in records] if has_input else [""] * len(records)
    return InstructionDataset(instructions, inputs, outputs, Path(path).stem)
