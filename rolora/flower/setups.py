"""One built model per process: a module-level cache of :class:`~rolora.llm.prepare.RunSetup` by config.

A Ray actor or a SuperNode's ClientApp process answers many messages; building the model, the data
and the tokens for each would dominate a round. A different config replaces the cached one, so a
process never holds two models.
"""

from __future__ import annotations

import json

from rolora.llm.config import RunConfig, from_dict
from rolora.llm.prepare import RunSetup, build

_SETUPS: dict[str, RunSetup] = {}


def config_json(config: RunConfig) -> str:
    """The config as the canonical JSON string that keys the cache and travels in messages."""
    return json.dumps(config.to_dict(), sort_keys=True)


def setup_for(text: str) -> RunSetup:
    """The RunSetup of the config ``text`` (JSON), built on first use in this process."""
    if text not in _SETUPS:
        _SETUPS.clear()
        _SETUPS[text] = build(from_dict(json.loads(text), "the server's config"))
    return _SETUPS[text]


def builds() -> int:
    """How many setups this process holds (0 or 1): for tests."""
    return len(_SETUPS)
