"""A steady allocator for the benchmarks' timings (glibc ``malloc`` that keeps freed memory).

With glibc's defaults every large temporary (above the dynamic ``mmap`` threshold, 128 KiB at
start) is a fresh ``mmap`` whose first touch costs a page fault per 4 KiB page, and freed heap
memory above the trim threshold goes back to the OS. Whether a timed call pays those faults then
depends on the allocation history of the process: the Cartesian gram measured 0.8-1.9x its own
FFTs from run to run that way, and 0.62-0.97x with freed memory kept. :func:`steady_allocator`
therefore asks glibc (``mallopt``, at run time, in the timing process itself) to serve blocks up to
32 MiB (its maximum ``mmap`` threshold) from the heap and to keep up to 1 GiB of freed memory;
blocks above 32 MiB are still mapped afresh. Every function a benchmark compares runs under the
same setting. (jemalloc/tcmalloc through ``LD_PRELOAD`` would do as well but are not installed
everywhere; this needs nothing.)
"""

from __future__ import annotations

import ctypes

__all__ = ["STEADY_ALLOCATOR_NOTE", "steady_allocator"]

_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3

STEADY_ALLOCATOR_NOTE = (
    "glibc malloc set to keep freed memory (benchmarks.steady: mallopt M_MMAP_THRESHOLD = 32 MiB, "
    "M_TRIM_THRESHOLD = 1 GiB, M_TOP_PAD = 64 MiB) so that timings measure computation rather than "
    "page faults of fresh allocations; temporaries above 32 MiB are still mmapped."
)


def steady_allocator() -> bool:
    """Ask glibc malloc to keep freed memory (Linux/glibc only); returns whether it was applied.

    Call it at the start of the process that times something (it changes that process only).
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        settings = ((_M_MMAP_THRESHOLD, 32 << 20), (_M_TRIM_THRESHOLD, 1 << 30), (_M_TOP_PAD, 64 << 20))
        return all(bool(libc.mallopt(option, value)) for option, value in settings)
    except (OSError, AttributeError):
        return False
