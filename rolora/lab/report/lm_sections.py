"""The language-model part of the report: one section per sweep, claim by claim.

Each section: the paper's claim and numbers, our table (mean ± std over finished seeds, the test
set's standard error beside it, what is unfinished), the sweep's twins (cells that are another
sweep's runs), the paired outcomes of the claim's winner against its baselines, and the verdict by
:func:`rolora.lab.report.verdicts.rule_text`. The client-count sweeps are judged in two halves (a tie
at the fewest clients, held to the paper's tie band; RoLoRA ahead at the most). A pair of runs that an
earlier claim already judges is shown but counted there only (:class:`rolora.lab.report.ledger.Ledger`).
"""

from __future__ import annotations

from rolora.lab.report import verdicts as v
from rolora.lab.report.claims import ClaimRow
from rolora.lab.report.ledger import Ledger
from rolora.lab.report.lm_results import SweepResults, method_order
from rolora.lab.report.lm_tables import paper_value, results_table
from rolora.lab.report.paper import STANDARD, TIE_AT_3, TIE_BAND, SweepClaim

SWEEP_COMMAND = "rolora sweep {name}"
CLIENT_SWEEPS = ("clients", "clients-lr3", "clients-trec", "clients-trec-lr3")
"""Sweeps judged in two halves: ties at the fewest clients, RoLoRA ahead at the most (a one-column sweep: the
tie only)."""
TIE, WIN = "tie", "win"


def not_run(name: str) -> str:
    return (f"**Not run yet.** No `{name}` sweep was found. Run `{SWEEP_COMMAND.format(name=name)}`, then "
            "`rolora report` (see [Commands](#commands)).")


def winner_of(sweep: SweepResults, claim: SweepClaim) -> str | None:
    """The claim's winner if the sweep ran it, else the sweep's first non-standard label (a variant), else
    the claim's winner anyway (its pairs then say it was not run)."""
    if claim.winner in sweep.methods():
        return claim.winner
    others = [m for m in sweep.methods() if m not in STANDARD]
    return others[0] if others else claim.winner


def _extreme(sweep: SweepResults, pick) -> list[str]:
    """Settings with RoLoRA at the fewest (pick=min) or most (pick=max) clients, one per other axis value
    (a reference column without RoLoRA, e.g. the one-client centralised run, is not one of them)."""
    with_clients = [s for s in sweep.settings() if "clients" in sweep.axes[s] and "rolora" in sweep.groups[s]]
    if not with_clients:
        return []
    n = pick(sweep.axes[s]["clients"] for s in with_clients)
    return [s for s in with_clients if sweep.axes[s]["clients"] == n]


def judged_settings(sweep: SweepResults, claim: SweepClaim) -> dict[str, str]:
    """{setting: TIE or WIN} the claim is judged at (the others are context, reported but not judged)."""
    if claim.sweep in CLIENT_SWEEPS:
        few = _extreme(sweep, min)
        return {**{s: TIE for s in few}, **{s: WIN for s in _extreme(sweep, max) if s not in few}}
    settings = _extreme(sweep, max) if claim.most_clients_only else sweep.settings()
    return {s: WIN for s in settings}


def pairs_at(sweep: SweepResults, setting: str, winner: str, against: tuple[str, ...], kind: str = WIN,
             ledger: Ledger | None = None) -> list[v.Pair]:
    """The winner against each baseline at ``setting``; with a ledger, counted there (twins marked)."""
    results = sweep.accuracies(setting)
    baselines = list(against) or [m for m in sweep.methods() if m != winner]
    pairs = v.beats_all(winner, results, baselines, sweep.floor(setting), TIE_BAND if kind == TIE else None)
    if ledger is None:
        return pairs
    groups = sweep.groups[setting]
    return [ledger.count(p, groups[winner], groups[p.y], f"`{sweep.name}` ({setting})") for p in pairs]


def pair_short(p: v.Pair) -> str:
    """'fedavg-lora −4.6 [−20.0, +10.8]' (points), with what keeps it out of the verdict."""
    ci = p.interval()
    text = f"{p.y} {100 * p.gap:+.1f}" if p.gap is not None else f"{p.y} –"
    if ci is not None:
        text += f" [{100 * ci[0]:+.1f}, {100 * ci[1]:+.1f}]"
    if p.outcome in (v.AT_FLOOR, v.NO_INTERVAL, v.MISSING):
        text += f" ({p.outcome})"
    return text + (" (twin, counted elsewhere)" if p.counted_in else "")


def tie_direction(pairs: list[v.Pair], winner: str) -> str:
    """Which way a broken tie goes, and by how much ('' when no pair breaks it)."""
    counted = [p for p in pairs if not p.counted_in]
    parts = []
    for outcome, words in ((v.BROKEN_AHEAD, f"in {winner}'s favour"), (v.BROKEN_BEHIND, f"against {winner}")):
        broken = [p for p in counted if p.outcome == outcome]
        if broken:
            parts.append(f"broken {words}: " + ", ".join(f"{p.y} {100 * p.gap:+.1f} pts" for p in broken))
    return "; ".join(parts)


def _pairs_text(pairs: list[v.Pair]) -> str:
    return "; ".join(p.text() for p in pairs) or "no finished pair"


def _ours(setting: str, winner: str, pairs: list[v.Pair]) -> str:
    """The opening table's 'ours': the paired differences (points, 95 % CI), or their counts where many."""
    if not pairs:
        return f"{setting}: nothing finished yet"
    return f"{setting}, {winner} − each: " + "; ".join(pair_short(p) for p in pairs)


def _counts(winner: str, pairs: list[v.Pair]) -> str:
    counted = [p for p in pairs if not p.counted_in and p.outcome != v.MISSING]
    n = {o: sum(p.outcome == o for p in counted) for o in (v.AHEAD, v.BEHIND, v.UNDERPOWERED)}
    twins = sum(bool(p.counted_in) for p in pairs)
    return (f"{winner} ahead in {n[v.AHEAD]}, behind in {n[v.BEHIND]}, underpowered in {n[v.UNDERPOWERED]} of "
            f"{len(counted)} counted pairs" + (f" ({twins} twin pairs counted elsewhere)" if twins else ""))


def twins_lines(sweep: SweepResults, ledger: Ledger) -> list[str]:
    """Per setting, the methods whose cells are another sweep's runs (copied, or the same config run again)."""
    lines = []
    for s in sweep.settings():
        by_source: dict[str, list[str]] = {}
        for m, g in sorted(sweep.groups[s].items(), key=lambda mg: method_order(mg[0])):
            for source in sorted(ledger.twins_of(g.cells)):
                by_source.setdefault(source, []).append(m)
        for source, methods in by_source.items():
            lines.append(f"- {s}: {', '.join(methods)} — `{source}`'s runs (the same config and seeds)")
    if not lines:
        return []
    return ["**Twins** (cells that are another sweep's runs; a pair of them is counted in the claim that "
            "judges it first, as the rule says):", "", *lines, ""]


def degradation_lines(sweep: SweepResults) -> list[str]:
    """Each method's change from the fewest to the most clients, at each other-axis value (points)."""
    few, most = _extreme(sweep, min), _extreme(sweep, max)
    lines = []
    for a in few:
        for b in most:
            others_a = {k: x for k, x in sweep.axes[a].items() if k != "clients"}
            others_b = {k: x for k, x in sweep.axes[b].items() if k != "clients"}
            if a == b or others_a != others_b:
                continue
            acc_a, acc_b = sweep.accuracies(a), sweep.accuracies(b)
            changes = [f"{m} {100 * (acc_b[m].mean - acc_a[m].mean):+.1f}" for m in sweep.methods()
                       if acc_a.get(m) and acc_b.get(m) and acc_a[m].n and acc_b[m].n]
            if changes:
                lines.append(f"- {a} → {b} (mean accuracy, points): " + ", ".join(changes))
    return lines


def _paper_text(sweep: SweepResults, setting: str, claim: SweepClaim, tie: bool) -> str:
    """Table 1's averages for the client-count sweep on Rotten Tomatoes; elsewhere the claim's words (for
    its tie half, the tie's, not the 50-client win's)."""
    if claim.sweep == "clients":
        values = [(m, paper_value(sweep, setting, m)) for m in sweep.methods()]
        return " / ".join(f"{m} {p:.2f}" for m, p in values if p is not None) or "–"
    return TIE_AT_3 if tie else claim.short


def clients_verdicts(sweep: SweepResults, claim: SweepClaim, judged: dict[str, list[v.Pair]],
                     summary: list[ClaimRow]) -> list[str]:
    """The two halves of the client-count claim, each by the rule (a tie's direction said when broken)."""
    lines = []
    kinds = judged_settings(sweep, claim)
    for s, pairs in judged.items():
        tie = kinds[s] == TIE
        verdict = v.tie_verdict(pairs) if tie else v.win_verdict(pairs)
        half = f"ties at the fewest clients ({s})" if tie else f"RoLoRA ahead at the most clients ({s})"
        direction = tie_direction(pairs, "rolora") if tie else ""
        summary.append(ClaimRow(f"{claim.title}: {half}", _paper_text(sweep, s, claim, tie),
                                _ours(s, "rolora", pairs) + (f" — {direction}" if direction else ""), verdict,
                                claim.sweep))
        lines.append(f"- **{half[0].upper() + half[1:]}**: **{verdict}**" + (f" ({direction})" if direction else "")
                     + f" — {_pairs_text(pairs)}.")
    return lines


def sweep_section(claim: SweepClaim, sweep: SweepResults | None, summary: list[ClaimRow], ledger: Ledger,
                  figure: str | None = None) -> str:
    out = [f"### {claim.title} (`{claim.sweep}` sweep)", "",
           f"**Paper's claim.** {claim.claim}", "", f"**Paper's numbers.** {claim.paper_numbers}", ""]
    if sweep is None or not sweep.groups:
        summary.append(ClaimRow(claim.title, claim.short, "–", v.NOT_RUN, claim.sweep))
        return "\n".join(out + [not_run(claim.sweep), ""])
    out += ["**Ours** (final test accuracy %, mean ± sample std over finished seeds; test SE: the test set's own "
            "standard error at that accuracy):", "", results_table(sweep, with_paper=claim.sweep == "clients"), ""]
    if figure:
        out += [f"![{claim.sweep} sweep: test accuracy vs round]({figure})", ""]
    out += twins_lines(sweep, ledger)
    winner = winner_of(sweep, claim)
    if winner is None:
        summary.append(ClaimRow(claim.title, claim.short, "the variant was not run", v.NOT_RUN))
        return "\n".join(out + ["No method other than the standard ones was run: the claim's variant is missing.", ""])
    kinds = judged_settings(sweep, claim)
    judged = {s: pairs_at(sweep, s, winner, claim.against, kind, ledger) for s, kind in kinds.items()}
    out += [f"Paired outcomes of {winner} (per-seed {winner} − baseline, points, 95 % CI; "
            "[verdict rule](#how-verdicts-are-computed)):", ""]
    lines = []
    for s in sweep.settings():
        pairs = judged.get(s) or pairs_at(sweep, s, winner, claim.against)
        if pairs:
            how = {TIE: " (tie claim: band ±{:.1f})".format(100 * TIE_BAND), WIN: ""}.get(kinds.get(s), " (context, not judged)")
            lines.append(f"- {s}{how}: {winner} against " + "; ".join(p.text() for p in pairs))
    out += (lines or ["- no setting has a finished pair yet"]) + [""]
    if claim.sweep in CLIENT_SWEEPS:
        drops = degradation_lines(sweep)
        if drops:
            out += ["Change as clients grow (the paper: the baselines fall, RoLoRA holds):", ""] + drops + [""]
        out += ["**Verdicts.**", ""] + clients_verdicts(sweep, claim, judged, summary)
    else:
        pairs = [p for ps in judged.values() for p in ps]
        verdict = v.win_verdict(pairs)
        ours = _ours(next(iter(judged)), winner, pairs) if len(judged) == 1 and len(pairs) <= 3 else _counts(winner, pairs)
        summary.append(ClaimRow(claim.title, claim.short, ours, verdict, claim.sweep))
        where = f"at the most clients ({', '.join(judged)})" if claim.most_clients_only else "over every setting of the sweep"
        out.append(f"**Verdict: {verdict}** ({where}; {_counts(winner, pairs)}).")
    out += ["", f"Why at best *in kind*: {claim.stand_in}, so at best the paper's pattern, not its numbers, can be "
            "reproduced.", ""]
    return "\n".join(out)


def lm_sections(sweeps: dict[str, SweepResults], claims: list[SweepClaim], summary: list[ClaimRow],
                figures: dict[str, str], ledger: Ledger | None = None) -> str:
    """Every sweep the claims need, in the claims' order (a missing one says how to run it)."""
    ledger = ledger or Ledger()
    summary.append(ClaimRow("Table 1's own numbers (RoBERTa-Large, GLUE)", "RoLoRA 85.81 avg at 50 clients, r4",
                            "no RoBERTa-Large weights or GLUE data here; MiniLM-L6 on Rotten Tomatoes / TREC stands in",
                            v.NOT_TESTABLE))
    summary.append(ClaimRow("Llama-2-7B numbers (commonsense, 50 clients)", "RoLoRA ≈42.9 vs LoRA ≈33.1 / FFA ≈17.9",
                            "no 7B model or those benchmarks on a 2-core CPU; SmolLM2-135M on TREC stands in",
                            v.NOT_TESTABLE))
    return "\n".join(sweep_section(c, sweeps.get(c.sweep), summary, ledger, figures.get(c.sweep)) for c in claims)
