"""Freed memory kept in the process heap of a simulation or a processing run (issue 11, sixth pass).

A simulated spill allocates and frees ~100 arrays of 0.1-12 MB (gathers, kernel outputs,
the APV rows and digits, the MSADC samples, the writer's concatenations).  glibc's
``malloc`` serves blocks above its *mmap threshold* with a fresh ``mmap`` and returns them
to the system on ``free``; its heap returns free memory above the *trim threshold* at its
top.  Every such block is then faulted in again, page by page, when the next spill fills
it: ~58,000 minor page faults per 100k MOT, 0.3-0.4 s of system CPU time on the shared
machine, and more user time through cold caches (``ru_minflt`` and ``ru_stime`` of
``getrusage``; a page fault costs microseconds on a virtual machine).

:func:`retain_freed_memory` sets, once per process, glibc's mmap threshold to its maximum
(32 MiB on 64-bit systems: blocks below it come from the heap and are reused) and its trim
threshold to :data:`TRIM_THRESHOLD_BYTES` (free memory at the heap's top is kept up to
that), with ``mallopt`` (``man 3 mallopt``).  The heap then keeps the memory of the
largest spill between spills: the peak RSS is what it was (the same blocks, reused), but
the memory is not given back to the system until the process ends.  It changes no number
the simulation computes.  On other C libraries (macOS, musl) it does nothing.

The reconstruction and the analysis chain do the same per chunk: ``run_files`` over a 94k-event
file in 50k-event chunks took 11-16k minor page faults a run with glibc's defaults, ~15 with
this setting, and 3 % less CPU time, the peak RSS unchanged (docs/performance.md, stop 37).

Because it changes the whole process, the library never calls it behind the user's back:
``simulate()`` and ``run_files()`` leave the caller's allocator alone (a notebook keeps
glibc's defaults).  The processes that are the library's own call it: every ``na64reco``
command (:func:`na64reco.cli.main`), the futures executor's pool processes (their
initializer, :mod:`na64reco.runner`) and ``benchmarks/bench_simulate.py``; a script
simulating or processing many chunks in a process of its own may call it first.  The dask
workers' preload calls it in one case: a worker started with distributed's default
``MALLOC_TRIM_THRESHOLD_``, whose glibc defaults that variable has already replaced
(:mod:`na64reco.dask_worker`).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import platform

#: ``mallopt`` parameters of glibc's ``<malloc.h>``
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
#: glibc's largest mmap threshold on 64-bit systems (``DEFAULT_MMAP_THRESHOLD_MAX``,
#: 4 MiB x sizeof(long)); the arrays of a spill (<= ~12 MB at 10k MOT per spill) are below it
MMAP_THRESHOLD_BYTES = 32 * 1024 * 1024
#: free memory kept at the top of the heap (a few spills' arrays; the peak RSS of a
#: simulation is ~400 MB, most of it imports)
TRIM_THRESHOLD_BYTES = 512 * 1024 * 1024
#: the trim threshold glibc's dynamic adjustment sets along with an mmap threshold at its
#: maximum (twice it): what a process that frees blocks of >= 32 MiB converges to by itself
DYNAMIC_TRIM_THRESHOLD_BYTES = 2 * MMAP_THRESHOLD_BYTES


@functools.lru_cache(maxsize=4)
def retain_freed_memory(trim_bytes: int = TRIM_THRESHOLD_BYTES) -> bool:
    """Keep freed memory in the heap for the rest of the process (see the module
    docstring), up to ``trim_bytes`` free at the heap's top.  Returns True if glibc accepted
    both settings, False where there is no glibc ``mallopt`` (nothing changed).  Idempotent."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    ok = mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) == 1
    return bool(mallopt(M_TRIM_THRESHOLD, int(trim_bytes)) == 1 and ok)
