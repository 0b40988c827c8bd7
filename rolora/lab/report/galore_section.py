"""Issue 17: GaLore-FedAvg and full-rank FedAvg with Adam beside the LoRA methods, on MiniLM.

The critique (arXiv 2410.23111) says averaging full-rank updates, trained with GaLore to keep client
memory low, beats averaging LoRA factors; RoLoRA's paper says RoLoRA is the robust choice. Each
result here says which of the two it supports, by the paired rule: a full-rank method *ahead* of a
LoRA method (interval above 0) supports the critique, *behind* supports RoLoRA's side, *underpowered*
(interval spans 0) neither.
Accuracy per round, accuracy at equal bytes (RoLoRA's whole-run upload), and client memory.
"""

from __future__ import annotations

from rolora.lab.report import verdicts as v
from rolora.lab.report.claims import ClaimRow
from rolora.lab.report.csv_files import number
from rolora.lab.report.lm_curves import accuracy_within, seed_curves
from rolora.lab.report.lm_results import SweepResults
from rolora.lab.report.lm_tables import cell_text
from rolora.lab.report.markdown import mib, table
from rolora.lab.report.paper import FULL_RANK, LORA_BASELINES
from rolora.lab.report.seeds import over_seeds

SUPPORTS = {v.AHEAD: "supports the critique", v.BEHIND: "supports RoLoRA's claim",
            v.UNDERPOWERED: "supports neither (underpowered: the interval spans 0)",
            v.NO_INTERVAL: "not judged (1 paired seed)", v.MISSING: "not run",
            v.AT_FLOOR: "supports neither (both at the majority class: nothing learned)"}
SHORT_SUPPORT = {v.AHEAD: "critique", v.BEHIND: "RoLoRA", v.UNDERPOWERED: "neither (underpowered)",
                 v.NO_INTERVAL: "not judged", v.MISSING: "not run", v.AT_FLOOR: "neither"}
FIGURE = "galore-accuracy-vs-upload.png"
CLAIM = "Issue 17 (LM)"


def support(pair: v.Pair) -> str:
    """'galore-fedavg vs rolora: supports the critique (+2.1 pts, 95 % CI [+0.4, +3.8], 3 seeds)'."""
    return f"{pair.x} vs {pair.y}: {SUPPORTS[pair.outcome]}{pair.detail()}"


def galore_settings(sweep: SweepResults) -> list[str]:
    return [s for s in sweep.settings() if any(m in sweep.groups[s] for m in FULL_RANK)]


def _budget_row(curves, setting: str, method: str, budget: float | None) -> str:
    if budget is None or (setting, method) not in curves:
        return "–"
    accs, rounds = accuracy_within(curves[(setting, method)], budget)
    if not accs:
        return "–"
    span = f"{min(rounds)}" if min(rounds) == max(rounds) else f"{min(rounds)}–{max(rounds)}"
    return f"{over_seeds(accs).text()}, round {span}"


def _per_round_upload(curves, setting: str, method: str) -> float | None:
    seeds = curves.get((setting, method), {})
    per = [c[-1][2] / c[-1][0] for c in seeds.values() if c and c[-1][0] > 0]
    return sum(per) / len(per) if per else None


def _whole_run_upload(curves, setting: str, method: str) -> float | None:
    seeds = curves.get((setting, method), {})
    ups = [c[-1][2] for c in seeds.values() if c]
    return min(ups) if ups else None


def memory_table(memory_rows: list[dict[str, str]]) -> str:
    rows = [[r["setting"], r["method"], r["optimizer"], f"{int(r['trained_params']):,}", mib(number(r["state_bytes"])),
             mib(number(r["training_bytes"])), mib(number(r["upload_round1"])) if r["upload_round1"] == r["upload_round2"]
             else f"{mib(number(r['upload_round1']))} / {mib(number(r['upload_round2']))}"]
            for r in memory_rows]
    return table(["setting", "method", "local optimiser", "trained numbers", "optimiser state MiB",
                  "tensors + grads + state MiB", "upload / client / round MiB"], rows, "lllrrrr")


def setting_part(sweep: SweepResults, s: str, curves, summary: list[ClaimRow]) -> list[str]:
    """One client count: accuracy, bytes, accuracy at RoLoRA's bytes, and what each pair supports."""
    budget = _whole_run_upload(curves, s, "rolora")
    rows = [[m, cell_text(sweep.groups[s][m]), mib(_per_round_upload(curves, s, m)), _budget_row(curves, s, m, budget)]
            for m in sweep.methods() if m in sweep.groups[s]]
    out = [f"**{s}**" + ("" if budget is None else f" (RoLoRA's whole run uploads {mib(budget)} MiB per client)"), "",
           table(["method", "final test accuracy %", "upload MiB / client / round",
                  "accuracy % once ≤ RoLoRA's whole-run upload (round)"], rows, "llrl"), ""]
    results = sweep.accuracies(s)
    pairs = [v.compare(f, results.get(f), b, results.get(b), sweep.floor(s))
             for f in FULL_RANK if f in results for b in ("rolora", *LORA_BASELINES) if b in results]
    for p in pairs:
        if p.y == "rolora":
            done = p.outcome != v.MISSING
            summary.append(ClaimRow(f"{CLAIM}, {s}: {p.x} vs rolora", "critique: full-rank beats LoRA methods",
                                    f"{p.outcome}{p.detail()}" if done else "nothing finished yet",
                                    SUPPORTS[p.outcome] if done else v.NOT_RUN))
    return out + [f"- {support(p)}" for p in pairs] + [""]


def galore_section(sweep: SweepResults | None, curve_rows: list[dict[str, str]], memory_rows: list[dict[str, str]],
                   figure_link: str | None, summary: list[ClaimRow]) -> str:
    out = ["### GaLore-FedAvg and full-rank FedAvg beside the LoRA methods (issue 17)", "",
           "**The two claims.** The critique (arXiv 2410.23111): averaging full-rank client updates, trained "
           "with GaLore (Adam moments in a rank-r projection of the gradient) to keep client memory low, beats "
           "averaging LoRA factors. RoLoRA's paper: RoLoRA is the robust federated choice at a fraction of the "
           "bytes. Methods: `galore-fedavg` (= `fedavg-full` with `train.optimizer=galore`), `fedavg-full-adam` "
           "(full-rank FedAvg, AdamW), RoLoRA, FedAvg-LoRA, FFA-LoRA, FlexLoRA, at 3 and 20 clients in the "
           "`clients` sweep.", ""]
    settings = galore_settings(sweep) if sweep is not None else []
    if not settings:
        summary.append(ClaimRow(CLAIM, "critique: GaLore-FedAvg beats LoRA methods", "–", v.NOT_RUN))
        out += ["**Not run yet.** No finished or started `galore-fedavg` / `fedavg-full-adam` cell in the "
                "`clients` sweep. Run `rolora sweep clients`, then `rolora report`.", ""]
    else:
        curves = seed_curves(curve_rows, sweep.name)
        for s in settings:
            out += setting_part(sweep, s, curves, summary)
        if figure_link:
            out += [f"![accuracy vs upload per client, issue 17]({figure_link})", ""]
    out += ["**Client memory and bytes** (counted by `rolora bench memory`'s functions: fp32, frozen base, "
            "activations and the head excluded; MiniLM at the sweep's LoRA rank 4, GaLore rank 4; the toy's "
            "layer for the toy's runs above):", "",
            memory_table(memory_rows), "",
            "A full-rank client, GaLore or not, holds the dense W and its gradient; GaLore shrinks only the "
            "optimiser state. Its upload is the dense matrix every round whatever the optimiser.", ""]
    return "\n".join(out)
