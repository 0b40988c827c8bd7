"""``rolora llm run --engine flower``: the config's run as a Flower simulation (Ray backend), in-process.

One simulated SuperNode per client (``partition-id`` = the rolora client id). Flower's home and
Ray's temporary folder live inside the run folder and runtime dependency installation is off, so a
run leaves nothing behind elsewhere and never reaches the network. Ray's unix sockets need paths
under 108 bytes: when the run folder is too deep for that (Ray's own part is ~70 bytes), Ray gets a
short temporary folder instead, deleted when the run ends.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Mapping
from contextlib import contextmanager
from pathlib import Path

from rolora.flower.secagg import SecAggSettings, check_run, from_environment
from rolora.llm.config import RunConfig
from rolora.llm.engine import History, RunStopped

ENV = {"FLWR_HOME": "flower-home", "RAY_TMPDIR": "ray"}


RAY_SOCKET_SUFFIX = len("/ray/session_2026-01-01_00-00-00_000000_4194304/sockets/plasma_store")
UNIX_SOCKET_MAX = 107
"""Ray puts unix sockets under RAY_TMPDIR, and a longer socket path makes ray.init fail in a thread
that Flower's simulation then waits on for ever; so a deep run folder gets a short temporary one."""


def ray_tmpdir(run_dir: Path) -> tuple[Path, bool]:
    """(Ray's temporary folder, whether it is a fresh short one to delete afterwards)."""
    inside = run_dir / ENV["RAY_TMPDIR"]
    if len(str(inside).encode()) + RAY_SOCKET_SUFFIX <= UNIX_SOCKET_MAX:
        return inside, False
    return Path(tempfile.mkdtemp(prefix="rolora-ray-")), True


@contextmanager
def flower_environment(run_dir: Path):
    """FLWR_HOME and RAY_TMPDIR inside ``run_dir`` (see :func:`ray_tmpdir`), runtime installs off;
    the variables are restored afterwards."""
    ray_dir, temporary = ray_tmpdir(run_dir)
    values = {"FLWR_HOME": str(run_dir / ENV["FLWR_HOME"]), "RAY_TMPDIR": str(ray_dir),
              "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1"}
    old = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    for name in ENV:
        Path(values[name]).mkdir(parents=True, exist_ok=True)
    try:
        yield ray_dir
    finally:
        for name, value in old.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        if temporary:
            shutil.rmtree(ray_dir, ignore_errors=True)


def check(config: RunConfig, environ: Mapping[str, str] = os.environ) -> None:
    """What ``rolora llm run --engine flower`` checks of every config of a call before its first run
    starts: the SecAgg+ settings of ``ROLORA_FLOWER_SECAGG`` and, where SecAgg+ is on, the method
    (:func:`rolora.flower.secagg.check_method`). ValueError naming the problem."""
    if from_environment(environ) is not None:
        check_run(config)


def run(config: RunConfig | None, run_dir: str | Path, *, resume: bool = False, quiet: bool = False,
        min_replies: int = 1, cpus_per_client: float = 1.0, timeout: float = 3600.0,
        secagg: SecAggSettings | None = None) -> History:
    """Run ``config`` on Flower's simulation engine (``resume``: continue the run in ``run_dir``);
    the run folder is as ``rolora llm run``'s. ``secagg``: SecAgg+ settings; by default they come
    from the environment variable ``ROLORA_FLOWER_SECAGG`` (:func:`rolora.flower.secagg.from_environment`),
    which is how ``rolora llm run --engine flower`` turns SecAgg+ on."""
    from flwr.simulation import run_simulation

    from rolora.flower.client_app import app as client_app
    from rolora.flower.server_app import server_app_for
    from rolora.llm.engine import config_of_run

    run_dir = Path(run_dir).resolve()
    if secagg is None:
        secagg = from_environment(os.environ)
    if secagg is not None and config is not None:
        check_run(config)  # before the run folder
    config = config_of_run(config, run_dir, resume)  # fail before Ray starts
    if secagg is not None:
        check_run(config)
    results: list[History] = []
    cpus = max(1, os.cpu_count() or 1)
    backend = {"client_resources": {"num_cpus": cpus_per_client, "num_gpus": 0.0},
               "init_args": {"num_cpus": cpus, "include_dashboard": False}}
    server = server_app_for(config, run_dir, results, resume=resume, min_replies=min_replies, timeout=timeout,
                            quiet=quiet, secagg=secagg)
    with flower_environment(run_dir):
        run_simulation(server_app=server, client_app=client_app, num_supernodes=config.federated.clients,
                       backend_config=backend, verbose_logging=False)
    if not results:  # the server loop stopped (RunStopped, logged) or failed: the run folder keeps its checkpoint
        raise RunStopped(f"the Flower simulation ended without finishing the run; see {run_dir / 'run.log'}")
    return results[0]
