"""The grid of the toy experiment: every (split, method) pair with one shared configuration."""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Sequence

from tqdm import tqdm

from rolora.toy.data import Mnist
from rolora.toy.train import History, ToyConfig, run_federated


def run_grid(splits: Sequence[str], methods: Sequence[str], base: ToyConfig, data: Mnist,
             progress: bool = True) -> list[History]:
    """Run ``base`` for every split × method (in that order), with one progress bar over all rounds."""
    total = len(splits) * len(methods) * base.rounds
    histories = []
    with tqdm(total=total, file=sys.stderr, disable=not progress, unit="round", dynamic_ncols=True) as bar:
        for split in splits:
            for method in methods:
                bar.set_description(f"{split} {method}")
                cfg = dataclasses.replace(base, split=split, method=method)
                histories.append(run_federated(cfg, data, on_round=lambda _t: bar.update(1)))
    return histories


def summary_table(histories: Sequence[History]) -> str:
    """Final test accuracy (%) per method (rows) and split (columns), as an aligned text table."""
    splits = list(dict.fromkeys(h.config.split for h in histories))
    methods = list(dict.fromkeys(h.config.method for h in histories))
    final = {(h.config.split, h.config.method): h.test_acc[-1] for h in histories}
    width = max(len("method"), *(len(m) for m in methods))
    head = f"{'method':<{width}}  " + "  ".join(f"{s:>8}" for s in splits)
    lines = [head, "-" * len(head)]
    for m in methods:
        cells = [f"{100 * final[(s, m)]:8.2f}" if (s, m) in final else f"{'-':>8}" for s in splits]
        lines.append(f"{m:<{width}}  " + "  ".join(cells))
    return "\n".join(lines)
