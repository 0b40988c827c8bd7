"""Keep a CPU run's resident memory near what it holds: two process-wide settings.

1. oneDNN (PyTorch's CPU matmul library) caches up to 1,024 compiled matmuls, keyed by shape, each
   with its own re-packed copy of the weight for bf16; client-batched passes have a new shape almost
   every pass, so a bf16 MiniLM round grew by ~700 MiB of cached weight copies
   (ONEDNN_PRIMITIVE_CACHE_CAPACITY=8: peak 2,087 → 1,574 MiB over 6 local steps, and no slower).
   :func:`limit_matmul_cache` sets that capacity unless the user set it; oneDNN reads it when it
   first builds its cache, so before the first matmul of the process.
2. Freed heap pages, returned to the OS between local steps (:func:`release_freed_memory`):
glibc's malloc keeps the memory of freed tensors in its heap (a pass frees hundreds of MB of
activations; the next pass's allocations do not fit the holes exactly), so a process's resident
size creeps up to well above what it holds. ``malloc_trim(0)`` returns the free pages; once per
local step it costs at most a few milliseconds (steps take about a second) and lowered the peak RSS of the
client-batched MiniLM round by ~130 MiB (BENCHMARKS.md, "llm/ speed"). A no-op where the C library
is not glibc.
3. One malloc heap for every thread (:func:`one_malloc_arena`, on ``import rolora.llm``): glibc
gives each thread that allocates its own heap ("arena"), so two client workers
(:mod:`rolora.llm.client_workers`) each keep their own free activation memory; with one arena the
2-worker MiniLM round peaked at 1,441 instead of 1,797 MiB, at the same speed (torch allocates a few
large blocks per op, so the shared lock is not contended; tokenising was no slower). glibc fixes
which arena a thread uses when it first allocates, so this must run before torch's threads start.
Unless the user set ``MALLOC_ARENA_MAX``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os

MATMUL_CACHE = "8"
"""Compiled matmuls oneDNN keeps (its default: 1,024)."""


def limit_matmul_cache() -> None:
    """Bound oneDNN's cache of compiled matmuls (and their weight copies), unless the user chose."""
    os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", MATMUL_CACHE)


M_ARENA_MAX = -8
"""glibc's ``mallopt`` parameter number for the most arenas (malloc.h)."""


@functools.cache
def _libc(name: str):
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return getattr(libc, name)
    except (OSError, AttributeError):
        return None


def release_freed_memory() -> bool:
    """Return the heap's free pages to the OS; True when glibc did so."""
    trim = _libc("malloc_trim")
    return bool(trim(0)) if trim is not None else False


def one_malloc_arena() -> bool:
    """Threads started from now on allocate from the one heap glibc already has, unless the user set
    ``MALLOC_ARENA_MAX``; True when glibc took the setting."""
    mallopt = _libc("mallopt")
    if mallopt is None or "MALLOC_ARENA_MAX" in os.environ:
        return False
    return bool(mallopt(M_ARENA_MAX, 1))
