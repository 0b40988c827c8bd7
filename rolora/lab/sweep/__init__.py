"""Sweeps: every cell of a spec (methods × grid columns × seeds), each a normal run folder.

``spec`` (read and check a spec), ``runner`` (cells, lr selection, jobs, resume, status), ``twins``
(the same cell run by a sibling sweep is copied), ``record`` (cells the report already holds), ``cli``.
"""
