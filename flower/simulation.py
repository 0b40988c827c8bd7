"""``rolora llm run --engine flower``: the config's run as a Flower simulation (Ray backend), in-process.

One simulated SuperNode per client (``partition-id`` = the rolora client id). Flower's home and
Ray's temporary folder live inside the run folder and runtime dependency installation is off, so a
run leaves nothing behind elsewhere and never reaches the network. Ray needs unix-socket paths under
~107 characters: a very deep run folder makes Ray fail to start (move the run folder up).
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path

from rolora.llm.config import ConfigError, RunConfig
from rolora.llm.engine import History

ENV = {"FLWR_HOME": "flower-home", "RAY_TMPDIR": "ray"}


@contextmanager
def flower_environment(run_dir: Path):
    """FLWR_HOME and RAY_TMPDIR inside ``run_dir``, runtime installs off; restored afterwards."""
    values = {name: str(run_dir / sub) for name, sub in ENV.items()}
    values["FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION"] = "1"
    old = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    for name in ENV:
        Path(values[name]).mkdir(parents=True, exist_ok=True)
    try:
        yield
    finally:
        for name, value in old.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def run(config: RunConfig, run_dir: str | Path, *, quiet: bool = False, cpus_per_client: float = 1.0,
        timeout: float = 3600.0) -> History:
    """Run ``config`` on Flower's simulation engine; the run folder is as ``rolora llm run``'s."""
    from flwr.simulation import run_simulation

    from rolora.flower.client_app import app as client_app
    from rolora.flower.server_app import server_app_for

    run_dir = Path(run_dir).resolve()
    if (run_dir / "config.json").exists():
        raise ConfigError(f"{run_dir} already holds a run: choose another --out (or --overwrite)")
    run_dir.mkdir(parents=True, exist_ok=True)
    results: list[History] = []
    cpus = max(1, os.cpu_count() or 1)
    backend = {"client_resources": {"num_cpus": cpus_per_client, "num_gpus": 0.0},
               "init_args": {"num_cpus": cpus, "include_dashboard": False}}
    with flower_environment(run_dir):
        run_simulation(server_app=server_app_for(config, run_dir, results, timeout=timeout, quiet=quiet),
                       client_app=client_app, num_supernodes=config.federated.clients, backend_config=backend,
                       verbose_logging=False)
    if not results:
        raise RuntimeError(f"the Flower simulation ended without finishing the run; see {run_dir / 'run.log'}")
    return results[0]
