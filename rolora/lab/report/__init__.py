"""``rolora report``: the paper's claims beside our results, generated from result files.

The report is built in two steps so that it can be rebuilt without the run folders:

1. *extract* (``extract``): the sources (``rolora sweep`` folders, ``rolora theory``'s
   ``out/theory``, ``rolora bench memory``'s counts) become small CSVs under ``docs/reproduction/``,
   which are committed;
2. *render* (``document``): those CSVs (and the committed toy CSV ``docs/toy-mnist-galore.csv``)
   become ``docs/reproduction.md`` and its figures. ``rolora report --from-csv`` runs this step alone.

Modules, one job each. Data: ``csv_files`` (atomic CSV in and out), ``sweep_reader`` (a sweep folder
→ rows, each cell's mean product-averaging gap and drift included), ``sweep_specs`` (each sweep's cells
as configs, rebuilt from its recorded spec or a spec not run yet: regimes, test-set sizes, twins),
``theory_data`` and ``memory_data`` (their sources → rows), ``extract`` (all sources → the CSVs).
Numbers: ``seeds`` (values over seeds, by seed), ``paired`` (paired per-seed differences, their 95 %
t-interval, the test set's standard error), ``verdicts`` (the stated interval rule that turns them into
a verdict), ``ledger`` (each pair of runs counted in one claim: twins), ``slopes`` (rate statistics and
log-log slopes), ``lm_results`` and ``lm_curves`` (LM rows grouped per setting and method, curves
averaged over seeds), ``regimes`` (a config's departures from the paper's recipe), ``paper`` (the
paper's numbers, recipe and claims, the only typed numbers), ``claim_list`` (the paper's claims plus a
headline claim for each new 50-client spec). Text: ``markdown``, ``claims`` (the claim-by-claim table),
``departures`` (the opening table and its evidence), ``theory_section``, ``toy_section``, ``lm_tables``
and ``lm_sections`` (a sweep's table, its outcomes and verdicts), ``gap_section``, ``galore_section``,
``lr_curves_section`` (one part each), ``plots``, ``document`` (the whole file), ``cli``.
Part of the lab: builds on the library (``theory``, ``llm``, ``federated``) and on ``lab.sweep``; nothing imports it.
"""

