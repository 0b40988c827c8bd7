"""``rolora theory``: regenerate every figure and table of the linear-model analysis.

    rolora theory [--out DIR] [--quick] [--seed S] [--no-progress] [--only NAME ...]

Writes, per experiment, ``figN_<name>.png`` and ``figN_<name>.csv`` (the plotted numbers), plus
``summary.json``, then prints a results table, where the files went and the total time.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from tqdm import tqdm

from rolora.theory import analyses as ex
from rolora.theory import plots
from rolora.theory.outputs import file_problem, make_output_folder, write_csv, write_json

FIGURES = {  # experiment -> (file stem, plot function)
    "theorem": ("fig1_theorem_contraction", plots.plot_theorem),
    "ffa_floor": ("fig2_ffa_floor", plots.plot_ffa_floor),
    "comparison": ("fig3_method_comparison", plots.plot_comparison),
    "finite_samples": ("fig4_finite_samples", None),  # needs the grid's d and N, see _plot
    "nonconvex_rate": ("fig5_nonconvex_rate", plots.plot_rate),
}
SUMMARY = "summary.json"


def _seed(text: str) -> int:
    """argparse type: a seed, an integer ≥ 0 (NumPy's seeds are)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer ≥ 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be ≥ 0, got {value}")
    return value


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="rolora theory",
        description="Reproduce RoLoRA's linear-model analysis (NumPy): the theorem's contraction, the FFA-LoRA "
        "floor, a method comparison, the sample-size effect and the non-convex O(1/√T) rate.",
    )
    p.add_argument("--out", type=Path, default=Path("out/theory"), help="output folder (default: ./out/theory)")
    p.add_argument("--quick", action="store_true", help="small grids (a few seconds; for tests and smoke runs)")
    p.add_argument("--seed", type=_seed, default=0, help="base seed; same seed, same numbers (default: 0)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (it also hides itself off a TTY)")
    p.add_argument("--only", nargs="+", choices=list(ex.EXPERIMENTS), metavar="NAME",
                   help=f"run only these experiments ({', '.join(ex.EXPERIMENTS)})")
    return p


def output_paths(out: Path, names: list[str]) -> list[Path]:
    """Every file a run of the experiments ``names`` writes to ``out``."""
    return [out / f"{FIGURES[n][0]}.{ext}" for n in names for ext in ("csv", "png")] + [out / SUMMARY]


def _plot(name: str, result: ex.AnalysisResult, path: Path, quick: bool) -> Path:
    if name == "finite_samples":
        cfg = ex.samples_grid(quick)["config"]
        return plots.plot_finite_samples(result, path, cfg.d, cfg.n_clients)
    return FIGURES[name][1](result, path)


def results_table(summaries: dict[str, dict[str, Any]], quick: bool) -> str:
    """The human-readable summary printed at the end of a run."""
    out: list[str] = []
    if "theorem" in summaries:
        g = ex.theorem_grid(quick)
        out.append(f"1. Theorem: per-round contraction of sin θ under RoLoRA (d={g['config'].d}, N={g['config'].n_clients}, "
                   f"m={g['config'].m:.0e}/client, η‖b*‖²={ex.ETA_SCALE})")
        out.append("   worst = largest measured sin θ^{t+1}/sin θ^t over rounds and seeds; worst/ρ <= 1 means the bound held")
        out.append(f"   {'δ0':>15} {'bound ρ':>9} {'worst':>9} {'worst/ρ':>8} {'mean rate':>9} {'rounds to 1e-6: measured':>25} {'by bound':>9}")
        for label, v in summaries["theorem"].items():
            name = f"{v['delta0']:.4f}" + (" (random)" if label == "random" else "")
            out.append(f"   {name:>15} {v['bound_rate']:>9.5f} {v['worst_measured_ratio']:>9.5f} {v['worst_ratio_over_bound']:>8.4f} "
                       f"{v['mean_measured_rate']:>9.3f} {v['rounds_to_1e6_measured']:>25.0f} {v['rounds_to_1e6_bound']:>9.0f}")
    if "ffa_floor" in summaries:
        out.append("2. FFA-LoRA floor / (‖b*‖²δ0²) = 1 + c̃ (proposition: c̃ >= 0, small at large N·m)")
        for regime, v in summaries["ffa_floor"].items():
            out.append(f"   {regime:>16}: min {v['min_ratio']:.6f}  median {v['median_ratio']:.6f}  max {v['max_ratio']:.6f}")
    if "comparison" in summaries:
        out.append(f"3. Final population error after {ex.comparison_grid(quick)['rounds']} rounds (median over seeds)")
        out.append(f"   {'setting':>24} {'RoLoRA':>10} {'FFA-LoRA':>10} {'FedAvg-LoRA':>12} {'centralised':>12}")
        for setting, v in summaries["comparison"].items():
            out.append(f"   {setting:>24} {v['rolora']:>10.3g} {v['ffa']:>10.3g} {v['fedavg']:>12.3g} {v['centralised']:>12.3g}")
    if "finite_samples" in summaries:
        g = ex.samples_grid(quick)
        out.append(f"4. Finite samples (d={g['config'].d}, N={g['config'].n_clients}, δ0={g['delta0']}, {g['rounds']} rounds): "
                   "median final sin θ per samples-per-client m")
        out.append("   " + " " * 11 + "".join(f"{'m=' + str(m):>9}" for m in g["ms"]))
        for noise, v in summaries["finite_samples"].items():
            out.append(f"   {noise:>10} " + "".join(f"{x:>9.1e}" for x in v["median_final_sin_theta"].values()))
            m_ok = v["smallest_m_all_seeds_below_1e6"]
            out.append(" " * 14 + (f"every seed below 1e-6 from m = {m_ok} (N·m = {m_ok * g['config'].n_clients})"
                                    if m_ok else "never below 1e-6 for every seed (statistical error floor)"))
    if "nonconvex_rate" in summaries:
        v = summaries["nonconvex_rate"]
        out.append(f"5. Non-convex rate: log-log slope of min_t ‖∇F‖² vs T = {v['slope_min_grad_sq']:.2f} "
                   f"(average over rounds: {v['slope_mean_grad_sq']:.2f}); O(1/√T) means <= -0.50")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    """Run the experiments, write figures, CSVs and summary.json, print the results table."""
    parser = _parser()
    args = parser.parse_args(argv)
    names = args.only or list(ex.EXPERIMENTS)
    problems = [make_output_folder(args.out), *map(file_problem, output_paths(args.out, names))]
    problem = next((p for p in problems if p), None)
    if problem:  # before the experiments run: a doomed run fails now
        parser.error(f"argument --out: cannot write the figures to {args.out}: {problem}")
    start = time.perf_counter()
    total = sum(ex.n_units(n, args.quick) for n in names)
    summaries: dict[str, dict[str, Any]] = {}
    written: list[Path] = []
    with tqdm(total=total, desc="rolora theory", unit="run", file=sys.stderr,
              disable=True if args.no_progress else None) as bar:
        for name in names:
            bar.set_postfix_str(name)
            result = ex.EXPERIMENTS[name](args.seed, quick=args.quick, tick=lambda: bar.update(1))
            stem = FIGURES[name][0]
            written.append(write_csv(args.out / f"{stem}.csv", result.rows))
            written.append(_plot(name, result, args.out / f"{stem}.png", args.quick))
            summaries[name] = result.summary
    meta = dict(seed=args.seed, quick=args.quick, experiments=names)
    written.append(write_json(args.out / SUMMARY, dict(meta=meta, results=summaries)))
    print(results_table(summaries, args.quick))
    print(f"\nwrote {len(written)} files to {args.out.resolve()}:")
    for path in written:
        print(f"   {path.name}")
    print(f"total time {time.perf_counter() - start:.1f} s (seed {args.seed}{', quick' if args.quick else ''})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
