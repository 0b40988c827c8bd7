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


@functools.cache
def _malloc_trim():
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc.malloc_trim
    except (OSError, AttributeError):
        return None


def release_freed_memory() -> bool:
    """Return the heap's free pages to the OS; True when glibc did so."""
    trim = _malloc_trim()
    return bool(trim(0)) if trim is not None else False
