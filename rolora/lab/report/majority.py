"""The majority-class floor of a sweep cell: the test accuracy of always answering the most common label.

A column where every method sits at this floor has learned nothing, so its paired differences say
nothing about the methods; the report marks such columns instead of judging them (see
:mod:`rolora.lab.report.verdicts`). Computed from the cell's own config (the fixed split every seed
shares), once per distinct data setting.
"""

from __future__ import annotations

import json
from typing import Any

from rolora.llm.config import ConfigError, from_dict
from rolora.llm.prepare import test_majority

_BY_DATA: dict[str, float | None] = {}


def majority_accuracy(config: dict[str, Any]) -> float | None:
    """The cell's test-split majority share, or None where it cannot be known here (instruction data, or a
    local dataset file this machine does not have). Cached by what the split depends on (the data section
    and the task), so a sweep's cells load their dataset once."""
    data = config.get("data", {})
    split_seed = config.get("run", {}).get("seed") if data.get("split_seed", -1) < 0 else None  # a per-seed split
    key = json.dumps({"data": data, "task": config.get("model", {}).get("task"), "seed": split_seed}, sort_keys=True)
    if key not in _BY_DATA:
        try:
            _BY_DATA[key] = test_majority(from_dict(config))
        except (ConfigError, OSError, ValueError):
            _BY_DATA[key] = None
    return _BY_DATA[key]
