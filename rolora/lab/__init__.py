"""The lab: how this project runs its experiments, on top of the library. Nothing in the library imports it.

- ``sweep``: many runs from one spec (``rolora sweep SPEC``): cells, lr selection on validation, resume.
- ``specs``: the sweep specs (TOML), the paper's experiments at CPU scale (``rolora sweep --list``).
- ``report``: ``rolora report``, docs/reproduction.md regenerated from result files.
- ``bench``: measurements that print a table (``rolora bench NAME``).
- ``gpu``: shell helpers for a lent GPU machine (a sweep across leases; the kernels' check).
"""
