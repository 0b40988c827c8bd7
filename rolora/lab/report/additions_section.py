"""The additions of ``docs/additions.md`` as our runs measured them: accuracy against ε under DP-SGD
(the ``privacy`` sweep) and RoLoRA with FedAdam at 50 clients (``clients-50-fedadam``).

Neither is a claim of the paper, so there is no verdict: each method's test accuracy over its finished
seeds, the ε it reached, and paired per-seed differences with their 95 % t-interval
(:mod:`rolora.lab.report.paired`). The regime each part states is read from the configs (the groups';
the spec's where the sweep has not run), so it stays true when a spec changes.
"""

from __future__ import annotations

import math
import statistics
from typing import Any, Callable

from rolora.lab.report.ledger import Ledger
from rolora.lab.report.lm_results import Group, SweepResults
from rolora.lab.report.lm_sections import SWEEP_COMMAND, not_run
from rolora.lab.report.markdown import table
from rolora.lab.report.paired import LEVEL, paired
from rolora.lab.report.regimes import DATASETS
from rolora.lab.report.seeds import OverSeeds
from rolora.lab.report.sweep_specs import SweepSpec

PRIVACY, FEDADAM = "privacy", "clients-50-fedadam"
SWEEPS = (PRIVACY, FEDADAM)
"""In the order the section shows them (and the Commands section lists them)."""
PRIVACY_METHODS = ("fedavg-lora", "ffa-lora", "rolora")
PRIVACY_PAIRS = (("rolora", "fedavg-lora"), ("rolora", "ffa-lora"))
FEDADAM_PAIR = ("rolora-fedadam", "rolora")
NAMES = {"rolora": "RoLoRA", "fedavg-lora": "FedAvg-LoRA", "ffa-lora": "FFA-LoRA", "rolora-fedadam": "RoLoRA + FedAdam"}


def name(method: str) -> str:
    return NAMES.get(method, method)


def difference_text(x: OverSeeds, y: OverSeeds) -> str:
    """X − Y in points: '+1.2 [-0.4, +2.8] (n=3)'; with one paired seed the difference alone, and why."""
    d = paired(x, y)
    if d.n == 0:
        return "– (no seed finished on both)"
    ci = d.interval()
    if ci is None:
        return f"{100 * d.mean:+.1f} (1 paired seed; an interval needs 2)"
    return f"{100 * d.mean:+.1f} [{100 * ci[0]:+.1f}, {100 * ci[1]:+.1f}] (n={d.n})"


def epsilon_text(group: Group | None) -> str:
    """The final ε, mean over the finished seeds; '∞ (no DP)' for a run without differential privacy."""
    if group is None or not group.seeds:
        return "–"
    if group.config is not None and group.config.train.dp == "off":
        return "∞ (no DP)"
    spent = [e for e, _ in group.privacy if e is not None]
    if not spent:
        return "∞ (no DP)" if group.config is None else "not recorded"
    if any(math.isinf(e) for e in spent):
        return "∞"  # DP without noise: no guarantee, whatever the other seeds spent
    return f"{statistics.fmean(spent):.2f}"


def _values(configs: list[Any], read: Callable[[Any], Any]) -> str:
    """A config value over ``configs``: '5', or '5 / 10' where they differ (numbers in order)."""
    seen = list(dict.fromkeys(read(c) for c in configs))
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in seen):
        seen.sort()  # σ = 0.6 / 0.8 / 1.2, whatever order the cells came in
    return " / ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in seen)


def _work(c: Any) -> str:
    return f"{c.train.local_epochs} local epochs" if c.train.local_epochs else f"{c.train.local_steps} local steps"


def _common(configs: list[Any]) -> str:
    """'`minilm` on question types (TREC), 5 iid clients × 6 rounds × 8 local steps × batch 16'."""
    return (f"`{_values(configs, lambda c: c.model.name)}` on "
            f"{_values(configs, lambda c: DATASETS.get(c.data.dataset, c.data.dataset))}, "
            f"{_values(configs, lambda c: c.federated.clients)} {_values(configs, lambda c: c.data.partition)} "
            f"clients × {_values(configs, lambda c: c.total_rounds)} rounds × {_values(configs, _work)} × batch "
            f"{_values(configs, lambda c: c.train.batch_size)}")


def _head(configs: list[Any]) -> str:
    return _values(configs, lambda c: "head trained" if c.lora.train_head else "head frozen")


def _configs(sweep: SweepResults | None, spec: SweepSpec | None) -> list[Any]:
    """The configs the sweep ran (its groups'), else those its spec plans."""
    ran = [g.config for s in (sweep.groups.values() if sweep else []) for g in s.values() if g.config is not None]
    return ran or list(spec.configs.values() if spec else [])


def _unfinished(sweep: SweepResults, label: Callable[[str], str]) -> str:
    """'Unfinished: none 1 pending; ...' or that every cell finished."""
    missing = [f"{label(s)} {name(m)}: {g.missing_text()}".strip() for s in sweep.settings()
               for m, g in sweep.groups[s].items() if g.missing_text()]
    return f"Unfinished cells (not in the numbers above): {'; '.join(missing)}." if missing else "Every cell finished."


def _twins(sweep: SweepResults, ledger: Ledger | None) -> str:
    """Which groups are another sweep's runs (the same config), so a reader does not count them twice."""
    if ledger is None:
        return ""
    notes = [f"{name(m)}'s finished cells are runs of `{'`, `'.join(sorted(ledger.twins_of(g.cells)))}` (the same "
             "config)" for s in sweep.settings() for m, g in sweep.groups[s].items() if ledger.twins_of(g.cells)]
    return " ".join(f"{n}." for n in dict.fromkeys(notes))


def _floor(sweep: SweepResults) -> str:
    floor = next((sweep.floor(s) for s in sweep.settings() if sweep.floor(s) is not None), None)
    return "" if floor is None else f" Always answering the majority class scores {100 * floor:.1f} on this test split."


# ------------------------------------------------------------------------------------- privacy
def _noise(sweep: SweepResults, setting: str) -> tuple:
    """A level's place: no DP first, then by DP-SGD's noise multiplier (unknown config: after, by name)."""
    config = next((g.config for g in sweep.groups[setting].values() if g.config is not None), None)
    if config is None:
        return (2, 0.0)
    return (0, 0.0) if config.train.dp == "off" else (1, config.train.dp_noise)


def _level(sweep: SweepResults, setting: str) -> str:
    return str(sweep.axes[setting].get("privacy", setting))


def privacy_regime(configs: list[Any]) -> str:
    dp = [c for c in configs if c.train.dp != "off"] or configs
    return (f"{_common(configs)}, lr {_values(configs, lambda c: c.train.lr)} for every method, "
            f"{_head(configs)}; DP-SGD clips each sample's gradient to C = {_values(dp, lambda c: c.train.dp_clip)} "
            f"and adds Gaussian noise σ·C to each step's sum, σ = {_values(dp, lambda c: c.train.dp_noise)}; "
            f"ε at δ = {_values(dp, lambda c: c.train.dp_delta)}")


def privacy_part(sweep: SweepResults | None, spec: SweepSpec | None = None, ledger: Ledger | None = None) -> str:
    configs = _configs(sweep, spec)
    out = ["#### Accuracy against ε (DP-SGD, sample level)", ""]
    out += [f"Regime: {privacy_regime(configs)}. How the levels were chosen (and changed once, after the "
            "first seed, the same for every method) is in the spec's header, `rolora/lab/specs/privacy.toml`.",
            ""] if configs else []
    if sweep is None:
        return "\n".join(out + [not_run(PRIVACY), ""])
    levels = sorted(sweep.settings(), key=lambda s: _noise(sweep, s))  # stable: by name where the noise ties
    head = ["level"] + [h for m in PRIVACY_METHODS for h in (f"{name(m)} accuracy", f"{name(m)} ε")]
    rows = [[_level(sweep, s)] + [cell for m in PRIVACY_METHODS for cell in (
        sweep.accuracies(s).get(m, OverSeeds(())).text(), epsilon_text(sweep.groups[s].get(m)))] for s in levels]
    diffs = [[_level(sweep, s)] + [difference_text(sweep.accuracies(s).get(x, OverSeeds(())),
                                                   sweep.accuracies(s).get(y, OverSeeds(()))) for x, y in PRIVACY_PAIRS]
             for s in levels]
    return "\n".join(out + [
        "Test accuracy (%) after the last round, mean ± std over finished seeds (n), and the ε each method reached "
        "(Opacus's RDP accountant over every local step, the largest over the clients; mean over seeds)."
        + _floor(sweep), "",
        table(head, rows, "l" + "rr" * len(PRIVACY_METHODS)), "",
        f"Paired per-seed differences (points, {round(100 * LEVEL)} % t-interval over the seeds both finished):", "",
        table(["level"] + [f"{name(x)} − {name(y)}" for x, y in PRIVACY_PAIRS], diffs, "l" + "r" * len(PRIVACY_PAIRS)),
        "", " ".join(t for t in (_unfinished(sweep, lambda s: _level(sweep, s)), _twins(sweep, ledger)) if t), ""])


# ------------------------------------------------------------------------------------- FedAdam
def server_opt_text(spec: str) -> str:
    """'fedadam(lr=0.01, beta1=0.9, beta2=0.99, tau=0.001)': every setting, defaults included, as the run
    parsed it; the spec's words where this version cannot parse them."""
    from rolora.federated.server_opt import parse_server_optimizer  # torch: loaded already by the configs

    try:
        return parse_server_optimizer(spec).describe()
    except ValueError:
        return spec


def fedadam_regime(configs: list[Any]) -> str:
    return (f"{_common(configs)}, r {_values(configs, lambda c: c.lora.rank)}, "
            f"α = {_values(configs, lambda c: c.lora.alpha)}, {_head(configs)}, client lr "
            f"{_values(configs, lambda c: c.train.lr)}")


def fedadam_part(sweep: SweepResults | None, spec: SweepSpec | None = None, ledger: Ledger | None = None) -> str:
    configs = _configs(sweep, spec)
    server = [c.federated.server_opt for c in configs if c.federated.server_opt]
    out = ["#### RoLoRA with FedAdam at 50 clients", ""]
    out += [f"Regime: {fedadam_regime(configs)}.", ""] if configs else []
    out += [("The server optimiser steps each round's mean of the trained factor: "
             + " / ".join(f"`{server_opt_text(s)}`" for s in dict.fromkeys(server))
             + " (`federated.server_opt`); plain RoLoRA sets the factor to that mean."), ""] if server else []
    if sweep is None:
        return "\n".join(out + [not_run(FEDADAM), ""])
    x, y = FEDADAM_PAIR
    rows = [[name(m) + ("" if len(sweep.settings()) == 1 else f" ({s})"), sweep.accuracies(s).get(m, OverSeeds(())).text()]
            for s in sweep.settings() for m in (y, x)]
    diffs = [f"{'' if len(sweep.settings()) == 1 else f'{s}: '}"
             + difference_text(sweep.accuracies(s).get(x, OverSeeds(())), sweep.accuracies(s).get(y, OverSeeds(())))
             for s in sweep.settings()]
    return "\n".join(out + [
        "Test accuracy (%) after the last round, mean ± std over finished seeds (n)." + _floor(sweep), "",
        table(["method", "test accuracy"], rows, "lr"), "",
        f"{name(x)} − {name(y)}, paired per seed (points, {round(100 * LEVEL)} % t-interval): " + "; ".join(diffs) + ".",
        "", " ".join(t for t in (_unfinished(sweep, lambda s: "" if s == "default" else s), _twins(sweep, ledger)) if t),
        ""])


def additions_section(sweeps: dict[str, SweepResults], specs: dict[str, SweepSpec] | None = None,
                      ledger: Ledger | None = None) -> str:
    """Both parts; ``specs`` state a sweep's planned regime before it runs, ``ledger`` names twin runs."""
    specs = specs or {}
    return "\n".join([
        "### Federated optimisers and differential privacy", "",
        "Two sweeps of the additions described in `docs/additions.md` (not claims of the paper, so no verdict: "
        "what the runs measured, with intervals). Commands: "
        + ", ".join(f"`{SWEEP_COMMAND.format(name=n)}`" for n in SWEEPS) + ".", "",
        privacy_part(sweeps.get(PRIVACY), specs.get(PRIVACY), ledger),
        fedadam_part(sweeps.get(FEDADAM), specs.get(FEDADAM), ledger)])
