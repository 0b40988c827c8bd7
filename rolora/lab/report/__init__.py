"""``rolora report``: the paper's claims beside our results, generated from result files.

The report is built in two steps so that it can be rebuilt without the run folders:

1. *extract* (``extract``): the sources (``rolora sweep`` folders, ``rolora theory``'s
   ``out/theory``, ``rolora bench memory``'s counts) become small CSVs under ``docs/reproduction/``,
   which are committed;
2. *render* (``document``): those CSVs (and the committed toy CSV ``docs/toy-mnist-galore.csv``)
   become ``docs/reproduction.md`` and its figures. ``rolora report --from-csv`` runs this step alone.

Modules, one job each. Data: ``csv_files`` (atomic CSV in and out), ``sweep_reader`` (a sweep folder
→ rows), ``theory_data`` and ``memory_data`` (their sources → rows), ``extract`` (all sources → the
CSVs). Numbers: ``seeds`` (mean ± std over seeds), ``verdicts`` (the stated rule that turns numbers
into a verdict), ``slopes`` (rate statistics and log-log slopes), ``lm_results`` and ``lm_curves``
(LM rows grouped per setting and method, curves averaged over seeds), ``paper`` (the paper's numbers
and claims, the only typed numbers). Text: ``markdown``, ``claims`` (the opening table),
``theory_section``, ``toy_section``, ``lm_sections``, ``galore_section`` (one part each), ``plots``,
``document`` (the whole file), ``cli``.
Part of the lab: builds on the library (``theory``, ``llm``, ``federated``) and on ``lab.sweep``; nothing imports it.
"""

