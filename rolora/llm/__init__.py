"""Federated fine-tuning of Hugging Face models (BERT/RoBERTa classifiers, Llama decoders).

.. code-block:: python

    from rolora.llm import load_config, run

    config = load_config("minilm-rotten-tomatoes", ["federated.method=rolora", "federated.clients=20"])
    history = run(config, "runs/rt-rolora")          # the run folder: metrics, curves, checkpoints, log
    print(history.rows[-1])                          # test loss/accuracy, bytes, wall time, tokens/s

One process holds ONE frozen base model; every simulated client is only its adapter tensors. Rounds
go through the core's round protocol (:mod:`rolora.federated.round`) and every aggregation is the
method's own (:mod:`rolora.federated`). Layout: ``config`` (TOML + overrides), ``prepare`` (data,
partition, tokens, model, adapters), ``local_training`` (clients' steps; client-batched in
``batched_training`` over ``client_streams``/``model_dropouts``), ``evaluation``, ``engine``
(the loop, checkpoints, resume), ``run_folder``, ``checkpoint``, ``export``/``export_run`` (PEFT),
``data``/``partition``/``tasks`` (datasets and losses), ``models``/``adapters``/``adapter_layer``
(the one layer: a frozen base plus one client's tensors, or many clients' stacked).
Heavy imports (transformers) happen on first use of ``run``.
"""

from rolora.llm.cpu_threads import passive_waits
from rolora.llm.host_memory import one_malloc_arena

OPENMP_WAITS = passive_waits()  # before anything imports torch (llm/cpu_threads.py)
ONE_MALLOC_ARENA = one_malloc_arena()  # before torch's and the client workers' threads (llm/host_memory.py)

from rolora.llm.config import ConfigError, RunConfig, load_config  # noqa: E402

__all__ = ["ConfigError", "RunConfig", "export_run", "load_config", "run"]


def __getattr__(name: str):
    if name == "run":
        from rolora.llm.engine import run

        return run
    if name == "export_run":
        from rolora.llm.export_run import export_run

        return export_run
    raise AttributeError(f"module 'rolora.llm' has no attribute {name!r}")
