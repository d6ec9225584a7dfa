"""A threading setup for CPU inference whose speed does not depend on what else runs on the machine.

Why. PyTorch's CPU kernels run their parallel regions on an OpenMP team (libgomp). Every region
ends in a barrier, and by default an idle team member *spins* there for a while before sleeping
(``OMP_WAIT_POLICY`` unset: active waiting). With as many threads as cores and another busy process
on one of them, a spinning thread and the other process share that core, and each of the many
small regions of an inference (the per-pixel fit, GroupNorm, element-wise steps) waits for a
descheduled team member: measured on 2 cores with one busy, PINQI inference at 192², 8 coils took
5.9 s on one thread, 86 s on two (the fit alone 0.34 s -> 53 s), and 13.5 s on two with
``OMP_WAIT_POLICY=PASSIVE``. No wait policy makes a shared core free, so the safe choice is to use
only the cores that are idle.

What. :func:`inference_threads` is a context manager that, for the duration of a call, sets
PyTorch's intra-op thread count (and, through ``threadpoolctl``, every OpenMP/BLAS pool in the
process) to ``min(requested, cores this process may use, idle cores)``, idle cores being measured
from ``/proc/stat`` over a short window (:func:`idle_cores`), and restores the previous settings on
exit. Two threads are then never slower than one: on a loaded machine the request falls back to
the one free core. :func:`prefer_passive_wait` sets ``OMP_WAIT_POLICY=PASSIVE`` unless the user set
it; libgomp reads it once, when it is loaded (``import torch``), so it must run before that.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path

__all__ = ["available_cores", "choose_threads", "idle_cores", "inference_threads", "prefer_passive_wait"]

_PROC_STAT = Path("/proc/stat")


def prefer_passive_wait() -> bool:
    """Set ``OMP_WAIT_POLICY=PASSIVE`` unless already set; call before ``torch`` is first imported.

    Returns whether the setting can still take effect (``torch`` not imported yet). Idle OpenMP
    threads then sleep at once instead of spinning on a core that another process needs.
    """
    import sys

    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    return "torch" not in sys.modules


def available_cores() -> int:
    """Number of CPUs this process may run on (its affinity mask), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def _cpu_times(cpus: set[int] | None) -> tuple[float, float] | None:
    """(idle, total) jiffies summed over ``cpus`` (all CPUs for ``None``) from ``/proc/stat``."""
    try:
        lines = _PROC_STAT.read_text().splitlines()
    except OSError:
        return None
    idle = total = 0.0
    for line in lines:
        name, *fields = line.split()
        if not name.startswith("cpu") or name == "cpu" or len(fields) < 5:
            continue
        if cpus is not None and int(name[3:]) not in cpus:
            continue
        values = [float(v) for v in fields[:8]]
        idle += values[3] + values[4]  # idle + iowait
        total += sum(values)
    return (idle, total) if total > 0 else None


def idle_cores(window: float = 0.1) -> float | None:
    """Idle CPU capacity, in cores, of this process's CPUs over the next ``window`` seconds.

    Parameters
    ----------
    window
        Sampling time in seconds (``/proc/stat`` counts in 10 ms ticks; 0.1 s gives ~±0.1 core).

    Returns
    -------
    Idle cores in ``[0, available_cores()]``, or ``None`` where ``/proc/stat`` is unavailable.
    """
    if window <= 0:
        raise ValueError(f"window must be positive seconds; got {window}")
    try:
        cpus: set[int] | None = set(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = None
    first = _cpu_times(cpus)
    time.sleep(window)
    second = _cpu_times(cpus)
    if first is None or second is None or second[1] <= first[1]:
        return None
    fraction = (second[0] - first[0]) / (second[1] - first[1])
    n = len(cpus) if cpus is not None else available_cores()
    return min(float(n), max(0.0, fraction * n))


def choose_threads(requested: int | None = None, window: float = 0.1) -> int:
    """Thread count for a CPU inference: ``min(requested, available_cores(), idle cores)``, >= 1.

    Parameters
    ----------
    requested
        Upper bound; ``None``: ``torch.get_num_threads()`` (i.e. ``OMP_NUM_THREADS`` or the
        number of cores).
    window
        Seconds spent measuring idle cores (:func:`idle_cores`).

    A core counts as idle when at least 70 % of it was idle over the window (``idle + 0.3``
    rounded down), so a core shared with a busy process is not used.
    """
    if requested is None:
        import torch

        requested = torch.get_num_threads()
    if isinstance(requested, bool) or not isinstance(requested, int) or requested < 1:
        raise ValueError(f"requested must be a positive int or None; got {requested!r}")
    limit = min(requested, available_cores())
    if limit == 1:
        return 1
    idle = idle_cores(window)
    if idle is None:
        return limit
    return max(1, min(limit, math.floor(idle + 0.3)))


@contextmanager
def inference_threads(threads: int | None = None, window: float = 0.1) -> Iterator[int]:
    """Run the enclosed CPU inference on a safe number of threads; yields that number.

    Parameters
    ----------
    threads
        Maximum number of threads (``None``: the current ``torch.get_num_threads()``). The
        number used is :func:`choose_threads` ``(threads, window)``: never more than the cores
        that are idle when the block starts.
    window
        Seconds spent measuring idle cores.

    PyTorch's intra-op threads and, when ``threadpoolctl`` is installed, every thread pool it
    finds (OpenMP, BLAS) are limited inside the block and restored afterwards. Intended around a whole inference (one
    reconstruction call), not around every operation: choosing costs ``window`` seconds.
    """
    import torch

    n = choose_threads(threads, window)
    saved = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        with _pool_limits(n):
            yield n
    finally:
        torch.set_num_threads(saved)


def _pool_limits(n: int) -> AbstractContextManager[object]:
    """``threadpoolctl.threadpool_limits(n)`` where installed (an optional dependency), else a no-op."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return nullcontext()
    return threadpool_limits(limits=n)
