"""The ServerApp: reads the run's TOML config and plays it over the connected nodes (:mod:`.server_loop`).

Under ``flwr run`` the app config (``[tool.flwr.app.config]`` of ``flower/app/pyproject.toml``, or
``--run-config``) names the rolora config and the run folder::

    config = "quickstart"            # a shipped config name or a TOML path (as rolora llm run --config)
    overrides = "federated.rounds=3 train.lr=1e-3"   # section.key=value, space-separated
    out = "runs/flower-quickstart"   # the run folder (metrics, checkpoints, log)
    round-timeout = 3600             # seconds to wait for a round's replies
    min-replies = 1                  # fewer updates in a round stop the run (resumable checkpoint)
    resume = false                   # continue the run in `out` from its latest checkpoint
    secagg = false                   # uploads through Flower's SecAgg+ (rolora.flower.secagg)
    secagg-clip = 8.0                # optional SecAgg+ settings: secagg-clip, secagg-quantization,
                                     # secagg-modulus, secagg-shares, secagg-threshold

``rolora llm run --engine flower`` builds its own ServerApp around the loaded config
(:func:`server_app_for`).
"""

from __future__ import annotations

import shlex
from pathlib import Path

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from rolora.flower.secagg import SecAggSettings
from rolora.flower.server_loop import serve
from rolora.llm.config import RunConfig, load_config

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    cfg = context.run_config
    resume = bool(cfg.get("resume", False))
    name, overrides = str(cfg.get("config", "")), shlex.split(str(cfg.get("overrides", "")))
    config = load_config(name or None, overrides) if (name or overrides or not resume) else None
    secagg = SecAggSettings.from_options({k: v for k, v in cfg.items() if k.startswith("secagg-")}) \
        if bool(cfg.get("secagg", False)) else None
    serve(grid, config, Path(str(cfg.get("out", "runs/flower"))), resume=resume,
          min_replies=int(cfg.get("min-replies", 1)), timeout=float(cfg.get("round-timeout", 3600)), secagg=secagg)


def server_app_for(config: RunConfig | None, run_dir: Path, results: list, **options) -> ServerApp:
    """A ServerApp that runs ``config`` in ``run_dir`` (``options``: those of :func:`serve`) and
    appends the History to ``results``."""
    server = ServerApp()

    @server.main()
    def _main(grid: Grid, context: Context) -> None:
        results.append(serve(grid, config, run_dir, **options))

    return server
