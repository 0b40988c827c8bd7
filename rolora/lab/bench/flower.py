"""``rolora bench flower``: the Flower simulation engine against the embedded engine, and the
bytes every method sends over Flower. Prints Markdown tables.

1. **Engines**: one round of the llm bench setting (MiniLM on Rotten Tomatoes, ``fedavg-lora``, r = 8,
   the bench's 20 clients × 20 steps × batch 32 unless ``--set`` says otherwise), first on the
   embedded engine, then on Flower's simulation engine (Ray), each in a fresh subprocess. The parent
   samples the RSS of the subprocess and all its descendants (Ray's GCS, raylet and workers) every
   0.1 s; "peak RSS" is the largest sum. Round wall time is the metrics row's ``wall_s`` (the
   round's training and aggregation); run wall time is the whole subprocess (imports, data, model
   builds, Ray's start, evaluation of rounds 0 and 1).
2. **Bytes**: every method (and, for the summable ones, under SecAgg+) for two rounds on tiny
   RoBERTa, 3 clients, in ONE Flower simulation (its ServerApp plays the methods one after the
   other): the ArrayRecord bytes Flower carried (``flower_*_bytes``) next to ``method.communication``.

.. code-block:: bash

    OMP_NUM_THREADS=1 taskset -c 1 rolora bench flower --set train.local_steps=2
    rolora bench flower --part bytes
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = ["federated.method=fedavg-lora", "federated.rounds=1", "federated.clients=20", "train.local_steps=20",
         "train.batch_size=32"]
"""One round of the llm bench's setting (:data:`rolora.lab.bench.llm.FULL`) at 20 local steps, the
setting before issue 34 (the Flower table was measured at it), and its method."""
TINY = ["model.name=tiny-roberta", "model.max_length=24", "data.dataset=rotten_tomatoes", "data.test_size=24",
        "data.max_train_samples=48", "run.eval_batch_size=24", "train.local_steps=1", "train.batch_size=4",
        "lora.rank=2", "lora.alpha=4.0", "federated.rounds=2", "federated.clients=3"]


# ----------------------------------------------------------------------------- children
def _engine_child(engine: str, overrides: list[str], out: Path) -> dict:
    import torch

    from rolora.llm.config import load_config

    torch.set_num_threads(1)
    config = load_config("minilm-rotten-tomatoes", BENCH + overrides)
    if engine == "flower":
        from rolora.flower.simulation import run
    else:
        from rolora.llm.engine import run
    history = run(config, out, quiet=True)
    row = history.rows[-1]
    return {"round_wall_s": row["wall_s"], "tokens": row["tokens"], "test_loss": row["test_loss"],
            "test_accuracy": row["test_accuracy"]}


def _bytes_child(out: Path) -> list[dict]:
    from flwr.app import Context
    from flwr.serverapp import Grid, ServerApp
    from flwr.simulation import run_simulation

    from rolora.federated import available_methods
    from rolora.flower.client_app import app as client_app
    from rolora.flower.secagg import SUMMABLE, SecAggSettings
    from rolora.flower.server_loop import serve
    from rolora.flower.simulation import flower_environment
    from rolora.llm.config import load_config

    runs = [(m, None) for m in available_methods()] + [(m, SecAggSettings()) for m in sorted(SUMMABLE)]
    rows: list[dict] = []
    server = ServerApp()

    @server.main()
    def _main(grid: Grid, context: Context) -> None:
        for method, secagg in runs:
            name = method + (" + SecAgg+" if secagg else "")
            config = load_config(None, TINY + [f"federated.method={method}"])
            history = serve(grid, config, out / name.replace(" ", "").replace("+", "_"), quiet=True, secagg=secagg)
            for r in history.rows[1:]:
                rows.append({"method": name, **{k: r.get(k) for k in (
                    "round", "upload_bytes", "download_bytes", "flower_upload_bytes", "flower_download_bytes",
                    "flower_eval_download_bytes")}})

    backend = {"client_resources": {"num_cpus": 1.0, "num_gpus": 0.0},
               "init_args": {"num_cpus": max(1, os.cpu_count() or 1), "include_dashboard": False}}
    with flower_environment(out):
        run_simulation(server_app=server, client_app=client_app, num_supernodes=3, backend_config=backend,
                       verbose_logging=False)
    if len(rows) != 2 * len(runs):
        raise RuntimeError(f"the bytes run ended early ({len(rows)} of {2 * len(runs)} rows); see {out}")
    return rows


# ----------------------------------------------------------------------------- parent
def _tree_rss(pid: int) -> int:
    import psutil

    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    total = 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


def measure(args: list[str]) -> dict:
    """Run ``python -m rolora.lab.bench.flower --child ...args`` sampling its process tree's RSS."""
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "rolora.lab.bench.flower", "--child", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = 0
    while proc.poll() is None:
        peak = max(peak, _tree_rss(proc.pid))
        time.sleep(0.1)
    out, err = proc.communicate()
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"bench child {args} failed ({proc.returncode}):\n{err[-4000:]}")
    return {"result": json.loads(out.strip().splitlines()[-1]), "run_wall_s": wall, "peak_rss_gib": peak / 2**30}


def engines_table(overrides: list[str], work: Path) -> str:
    lines = ["| engine | round wall time | run wall time | peak RSS (process tree) | tokens/s (round) | "
             "test loss | accuracy |", "|---|---|---|---|---|---|---|"]
    for engine in ("embedded", "flower"):
        m = measure(["engine", engine, str(work / engine), *overrides])
        r = m["result"]
        lines.append(f"| {engine} | {r['round_wall_s']:.1f} s | {m['run_wall_s']:.1f} s | {m['peak_rss_gib']:.2f} GiB | "
                     f"{r['tokens'] / r['round_wall_s']:.0f} | {r['test_loss']:.5f} | {r['test_accuracy']:.3f} |")
        print(lines[-1], file=sys.stderr, flush=True)
    return "\n".join(lines)


def bytes_table(work: Path) -> str:
    rows = measure(["bytes", str(work / "bytes")])["result"]
    lines = ["| method | round | Flower upload bytes | method's upload count | Flower download bytes "
             "(+ evaluation) | method's download count |", "|---|---|---|---|---|---|"]
    for r in rows:
        evaluation = f" (+{r['flower_eval_download_bytes']:,})" if r.get("flower_eval_download_bytes") else ""
        lines.append(f"| {r['method']} | {r['round']} | {r['flower_upload_bytes']:,} | {r['upload_bytes']:,} | "
                     f"{r['flower_download_bytes']:,}{evaluation} | {r['download_bytes']:,} |")
    return "\n".join(lines)


def versions() -> str:
    import flwr
    import ray
    import torch

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    cores = sorted(os.sched_getaffinity(0))
    return (f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {cpu}, {os.cpu_count()} vCPU, this process on "
            f"core(s) {cores}, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}; python {platform.python_version()}, "
            f"torch {torch.__version__}, flwr {flwr.__version__}, ray {ray.__version__}")


def _usage_problem(args) -> str | None:
    """What is wrong with the command line (checked before any subprocess starts), or None."""
    import importlib.util

    from rolora.llm.config import ConfigError, load_config
    from rolora.federated.atomic import folder_problem

    missing = [name for name in ("flwr", "ray") if importlib.util.find_spec(name) is None]
    if missing:
        return f"this benchmark needs Flower's simulation ({', '.join(missing)} not installed): pip install 'rolora[flower]'"
    try:
        load_config(None, BENCH + list(args.set))
    except ConfigError as err:
        return f"--set: {err}"
    problem = args.work and folder_problem(args.work)
    if problem:
        return f"--work {args.work}: cannot write the runs there: {problem}"
    held = [name for name in ("embedded", "flower", "bytes") if args.work and (args.work / name).exists()]
    return f"--work {args.work} already holds runs ({', '.join(held)}): name a new or empty folder" if held else None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        kind, *rest = argv[1:]
        if kind == "engine":
            result = _engine_child(rest[0], rest[2:], Path(rest[1]))
        else:
            result = _bytes_child(Path(rest[0]))
        print(json.dumps(result))
        return 0
    parser = argparse.ArgumentParser(prog="rolora bench flower", description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", choices=("all", "engines", "bytes"), default="all")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="overrides of the engines' config (e.g. train.local_steps=2)")
    parser.add_argument("--work", type=Path, default=None, help="folder for the runs (default: a temporary one)")
    args = parser.parse_args(argv)
    problem = _usage_problem(args)
    if problem:
        parser.error(problem)
    work = args.work or Path(tempfile.mkdtemp(prefix="rolora-flower-bench-"))
    print(versions())
    print(f"command: {' '.join(['rolora bench flower', *argv])}\n")
    if args.part in ("all", "engines"):
        print(f"One round, MiniLM on Rotten Tomatoes, {' '.join(BENCH + args.set)}:\n")
        print(engines_table(args.set, work) + "\n", flush=True)
    if args.part in ("all", "bytes"):
        print(f"Bytes per round, tiny RoBERTa, {' '.join(TINY)}:\n")
        print(bytes_table(work))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
