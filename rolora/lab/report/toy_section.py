"""The MNIST toy part of the report (the paper's Figure 2, and issue 17 on the toy), from its CSV.

Source: ``docs/toy-mnist-galore.csv`` (committed by ``rolora toy``: one row per split, method,
seed and round). Final accuracy = the last round's, per seed; verdicts by the paired rule (seeds pair the runs).
"""

from __future__ import annotations

from collections import defaultdict

from rolora.federated import parse_method_spec
from rolora.lab.report import verdicts as v
from rolora.lab.report.claims import ClaimRow
from rolora.lab.report.csv_files import number, read_rows
from rolora.lab.report.galore_section import SHORT_SUPPORT, SUPPORTS
from rolora.lab.report.lm_curves import accuracy_within
from rolora.lab.report.markdown import mib, table
from rolora.lab.report.seeds import OverSeeds, over_seeds

PAPER_THREE = ("rolora", "fedavg-lora", "ffa-lora")
SPLIT_ORDER = ("5x2", "10x1")
WHY_IN_KIND = ("the model, rank 16, 5 local epochs and the label-disjoint splits are the paper's, but each client "
               "keeps 10 % of its images and the open choices (init, SGD at lr 0.05, batch 64, 40 rounds) are ours")


def final_accuracies(rows: list[dict[str, str]]) -> dict[str, dict[str, OverSeeds]]:
    """{split: {method: final test accuracy over seeds}}: each seed's last round."""
    last: dict[tuple[str, str, str], tuple[int, float]] = {}
    for r in rows:
        key, t = (r["split"], r["method"], r["seed"]), int(number(r["round"]))
        if key not in last or t > last[key][0]:
            last[key] = (t, number(r["test_acc"]))
    out: dict = defaultdict(lambda: defaultdict(list))
    for (split, method, seed), (_, acc) in sorted(last.items(), key=lambda kv: (kv[0][0], kv[0][1], int(kv[0][2]))):
        out[split][method].append((int(seed), acc))  # the seed pairs the methods' runs
    return {s: {m: over_seeds([a for _, a in sa], [seed for seed, _ in sa]) for m, sa in ms.items()}
            for s, ms in out.items()}


def toy_upload(memory_rows: list[dict[str, str]], method: str) -> float | None:
    """Upload bytes per client and round of a toy method (the larger of its two phases), from memory.csv."""
    base = parse_method_spec(method)[0]
    for r in memory_rows:
        if r["setting"].startswith("toy") and r["method"] == base:
            return max(number(r["upload_round1"]), number(r["upload_round2"]))
    return None


def at_rolora_bytes(rows: list[dict[str, str]], split: str, method: str, per_round: dict[str, float | None]) -> str:
    """Accuracy once the method has uploaded no more than RoLoRA's whole run (per client): 'acc (round t)'."""
    curves: dict[str, list[tuple]] = defaultdict(list)
    for r in rows:
        if r["split"] == split and r["method"] in (method, "rolora"):
            curves[(r["method"], r["seed"])].append((int(number(r["round"])), number(r["test_acc"])))
    rolora_rounds = [max(t for t, _ in c) for (m, _), c in curves.items() if m == "rolora"]
    if not rolora_rounds or per_round.get(method) is None or per_round.get("rolora") is None:
        return "–"
    budget = min(rolora_rounds) * per_round["rolora"]
    mine = {seed: [(t, a, t * per_round[method]) for t, a in sorted(c)] for (m, seed), c in curves.items() if m == method}
    accs, rounds = accuracy_within(mine, budget)
    return f"{over_seeds(accs).short()}, round {max(rounds)}" if accs else "–"


def toy_commands(rows: list[dict[str, str]]) -> list[str]:
    """The ``rolora toy`` commands that produce these rows: one per seed and set of splits (defaults
    otherwise; the CSV's other columns are the defaults of ``rolora toy``)."""
    splits_of: dict[tuple[str, str], set[str]] = defaultdict(set)
    for r in rows:
        splits_of[(r["seed"], r["method"])].add(r["split"])
    groups: dict[tuple[str, tuple[str, ...]], list[str]] = defaultdict(list)
    for (seed, method), splits in splits_of.items():
        key = tuple(sorted(splits, key=lambda s: (SPLIT_ORDER.index(s) if s in SPLIT_ORDER else len(SPLIT_ORDER), s)))
        groups[(seed, key)].append(method)
    return [f"rolora toy --split {','.join(splits)} --seed {seed} --methods {','.join(sorted(methods, key=_paper_first))}"
            for (seed, splits), methods in sorted(groups.items(), key=lambda kv: (int(kv[0][0]), -len(kv[0][1])))]


def _paper_first(method: str) -> tuple:
    return (PAPER_THREE.index(method) if method in PAPER_THREE else len(PAPER_THREE), method)


def toy_section(toy_csv, memory_rows: list[dict[str, str]], summary: list[ClaimRow]) -> str:
    out = ["## MNIST toy (the paper's Figure 2)", "",
           "**Paper.** f(x) = ReLU(x A B) W_out with W_out fixed and only A, B trained (rank 16, 5 local epochs), "
           "label-disjoint clients (5 × 2 labels and 10 × 1 label): RoLoRA best, FFA-LoRA plateaus lowest "
           "(a figure; our source has no numbers for it).", ""]
    rows = read_rows(toy_csv)
    if not rows:
        summary.append(ClaimRow("Fig. 2 (MNIST toy)", "RoLoRA best, FFA-LoRA lowest", "–", v.NOT_RUN))
        return "\n".join(out + [f"**Not run yet.** `{toy_csv}` is missing: run `rolora toy --split 5x2,10x1`.", ""])
    finals = final_accuracies(rows)
    splits = sorted(finals, key=lambda s: (SPLIT_ORDER.index(s) if s in SPLIT_ORDER else len(SPLIT_ORDER), s))
    methods = sorted({m for s in splits for m in finals[s]}, key=lambda m: (m not in PAPER_THREE, m))
    per_round = {m: toy_upload(memory_rows, m) for m in methods}
    body = [[m, mib(per_round[m])] + [finals[s][m].text() if m in finals[s] else "–" for s in splits]
            + [at_rolora_bytes(rows, s, m, per_round) for s in splits] for m in methods]
    out += [f"**Ours** (final test accuracy % after the last round, mean ± sample std (n − 1) over seeds; with two "
            f"seeds that is √2 × the population std the README quotes; source `{toy_csv}`):", "",
            table(["method", "upload MiB / client / round"] + [f"{s}" for s in splits]
                  + [f"{s}, once ≤ RoLoRA's whole-run upload" for s in splits], body, "lr" + "l" * 2 * len(splits)), "",
            "The last columns hold each method to RoLoRA's whole-run upload per client: a method that sends more "
            "per round is scored at the last round it can afford (round 0, the untrained model, when a single "
            "round costs more than RoLoRA's whole run).", ""]
    out += ["**Verdicts** (by the [rule](#how-verdicts-are-computed); in kind because " + WHY_IN_KIND + "):", ""]
    for s in splits:
        r = finals[s]
        best = v.beats_all("rolora", r, ["fedavg-lora", "ffa-lora"])
        lowest = [v.compare(m, r.get(m), "ffa-lora", r.get("ffa-lora")) for m in ("rolora", "fedavg-lora") if m in r]
        ours = " / ".join(f"{m} {r[m].short()}" for m in PAPER_THREE if m in r)
        summary.append(ClaimRow(f"Fig. 2, {s}: RoLoRA best", "ordering (figure)", ours, v.win_verdict(best)))
        summary.append(ClaimRow(f"Fig. 2, {s}: FFA-LoRA lowest", "ordering (figure)", ours, v.win_verdict(lowest)))
        out.append(f"- {s}, RoLoRA best of the three: **{v.win_verdict(best)}** — "
                   + "; ".join(p.text() for p in best) + ".")
        out.append(f"- {s}, FFA-LoRA lowest: **{v.win_verdict(lowest)}** — "
                   + "; ".join(f"{p.x} against {p.text()}" for p in lowest) + ".")
    full = [m for m in methods if m.startswith("fedavg-full")]
    if full:
        headers = ["full-rank method"] + [f"{s}: vs {b}" for s in splits for b in PAPER_THREE]
        body = [[f] + [SHORT_SUPPORT[v.compare(f, finals[s].get(f), b, finals[s].get(b)).outcome]
                       + v.compare(f, finals[s].get(f), b, finals[s].get(b)).detail() for s in splits for b in PAPER_THREE]
                for f in full]
        for f in full:  # the opening table: each full-rank run judged against RoLoRA on every split
            pairs = {sp: v.compare(f, finals[sp].get(f), "rolora", finals[sp].get("rolora")) for sp in splits}
            if all(p.outcome not in (v.NO_INTERVAL, v.MISSING) for p in pairs.values()):
                summary.append(ClaimRow(f"Issue 17 (toy): {f} vs rolora", "critique: full-rank beats LoRA methods",
                                        "; ".join(f"{sp} {p.outcome}{p.detail()}" for sp, p in pairs.items()),
                                        "; ".join(f"{sp}: {SUPPORTS[p.outcome]}" for sp, p in pairs.items())))
        out += ["", "**Issue 17 on the toy**: which claim each full-rank run supports against each LoRA method "
                "(*critique*: the full-rank method is ahead; *RoLoRA*: behind; *neither*: underpowered, the interval "
                "spans 0 — with 2 seeds the t-interval is wide):", "",
                table(headers, body), ""]
    return "\n".join(out + [""])
