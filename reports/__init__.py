"""``rolora report``: the paper's claims beside our results, generated from result files.

The report is built in two steps so that it can be rebuilt without the run folders:

1. *extract* (``extract``): the sources (``rolora llm sweep`` folders, ``rolora theory``'s
   ``out/theory``, ``rolora bench memory``'s counts) become small CSVs under ``docs/reproduction/``,
   which are committed;
2. *render* (``document``): those CSVs (and the committed toy CSV ``docs/toy-mnist-galore.csv``)
   become ``docs/reproduction.md`` and its figures. ``rolora report --from-csv`` runs this step alone.

Modules, one job each: ``csv_files`` (atomic CSV in and out), ``seeds`` (mean ± std over seeds),
``verdicts`` (the stated rule that turns numbers into a verdict), ``slopes`` (rate statistics and
log-log slopes), ``paper`` (the paper's numbers and claims), ``sweep_reader`` (sweep folder → rows),
``theory_data`` and ``memory_data`` (their sources → rows), ``extract`` (all sources → CSVs),
``markdown`` (table formatting), ``plots`` (figures), ``lm_sections``, ``theory_section``,
``toy_section`` (one part of the report each), ``document`` (the whole file), ``cli``.
Builds on ``theory``, ``llm`` (and through it ``federated``, ``optim``); nothing imports ``reports``.
"""

if __name__ != "rolora.reports":  # e.g. `import reports` from the repository root: no second copy
    from rolora._misnamed import refuse_misnamed

    refuse_misnamed(__name__, "rolora.reports", __spec__)
