"""Give freed host memory back to the operating system between local steps.

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
