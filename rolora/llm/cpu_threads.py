"""OpenMP threads that sleep while they wait (``OMP_WAIT_POLICY=PASSIVE``), unless the user chose.

By default an OpenMP thread that finishes its share of a parallel region spins, waiting for the
next one. A client-batched round runs tens of thousands of parallel regions (every elementwise op
and small matmul is one); on a machine whose cores are shared (other jobs, a sweep's second cell),
the spinning threads compete with the thread that has the work, and one descheduled thread stalls
every region. Measured on a 2-core EPYC with other jobs running (BENCHMARKS.md "llm/ speed",
warm-up): 50 MiniLM clients × 2 steps, 2 threads, rounds of 105, 92 and 40 s with spinning against
15, 15 and 13 s with ``PASSIVE`` (1 thread: 14, 13, 14 s). libgomp reads the setting when it is
loaded (with torch), so :func:`passive_waits` must run before torch is imported: ``rolora.llm``
calls it on import.
"""

from __future__ import annotations

import os
import sys

WAIT_POLICY = "PASSIVE"
USER_WAIT_POLICY = os.environ.get("OMP_WAIT_POLICY")
"""The user's own ``OMP_WAIT_POLICY`` (None: not set) before :func:`passive_waits` sets rolora's.
``rolora bench llm`` reads it: a PEFT loop's row runs under what its users get unless they chose."""


def passive_waits() -> str:
    """Set ``OMP_WAIT_POLICY`` to PASSIVE unless the user set it; returns what is in effect
    ("default (OpenMP's: ...)" when torch was loaded first, too late for a policy to take)."""
    if "torch" in sys.modules and "OMP_WAIT_POLICY" not in os.environ:
        return "default (OpenMP's: spin a while, then sleep; torch was imported before rolora.llm)"
    os.environ.setdefault("OMP_WAIT_POLICY", WAIT_POLICY)
    return os.environ["OMP_WAIT_POLICY"]
