"""Any rolora method on Flower's simulation and deployment engines (Message API).

.. code-block:: bash

    rolora llm run --config quickstart --engine flower      # a Flower simulation of the same TOML config
    flwr run rolora/flower/app                               # the same app through Flower's own CLI

Thin files around the federated core: ``strategy`` (a Flower ``Strategy`` that plays the core's
round protocol: participants, ``method.aggregate``, the round's bytes as Flower sent them),
``server_app``/``client_app`` (the ServerApp and ClientApp), ``server_loop`` (rounds, metrics,
checkpoints, resume, the minimum of replies, reusing :mod:`rolora.llm`'s run folder), ``codec``
(states and client results as ArrayRecords plus JSON metadata, never pickles; per-node download of
only what changed), ``setups`` (one model per process), ``simulation`` (``rolora llm run --engine
flower``), ``secagg`` (uploads through Flower's SecAgg+ for the methods whose rule is a weighted
mean), ``app/pyproject.toml`` (``flwr run``). Its benchmark is in the lab (``rolora bench flower``). The README's Flower section lists the deployment
commands (SuperLink, SuperNodes, TLS, node authentication).
"""

