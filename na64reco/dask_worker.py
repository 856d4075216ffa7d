"""Preload of the dask workers that run na64reco processors.

``na64reco run --executor dask`` starts its ``LocalCluster`` with this module as the
workers' preload (see :func:`na64reco.runner.local_cluster`); for a cluster of your own
give it to the workers yourself::

    dask worker tcp://scheduler:8786 --nthreads 1 --preload na64reco.dask_worker

At start-up (:func:`dask_setup`) a worker imports the analysis modules (coffea, awkward,
uproot, numba, the reconstruction and the processors: ~2 s) and initialises numba's CPU
target (~0.5 s), work that the first task would otherwise do.  On one machine
:func:`na64reco.runner.local_cluster` also starts the workers from a fork server that
has imported these modules once, instead of importing them in every worker.
At shut-down (:func:`dask_teardown`) the worker freezes the garbage collector: the
interpreter then exits in a fraction of a second instead of walking every object it
holds (1-4 s after a chunk of reconstruction, which the nanny waits for and, past 4 s,
answers by killing the process with a warning).

A worker whose nanny gave it distributed's default ``MALLOC_TRIM_THRESHOLD_`` (65536, dask's
``distributed.nanny.pre-spawn-environ``, to hand freed memory back at once) has glibc's dynamic
mmap threshold turned off by it: every chunk's large arrays are mapped afresh and faulted in page
by page (~200k page faults and ~25 % more CPU per 188k events, docs/performance.md, "dask workers
without distributed's malloc trim").  Such a worker keeps freed memory in its heap instead
(:func:`keep_freed_memory_if_trimmed`, glibc's ``mallopt``); a worker started without that
variable (:func:`na64reco.runner.local_cluster`), or with another value, keeps its allocator as it
is.  The peak memory is that of the largest chunk either way; it is not handed back between chunks.

The numba kernels are compiled once into the on-disk cache (``NUMBA_CACHE_DIR``, else
``__pycache__`` next to the sources, see :mod:`na64reco.reco.tracking._jit`) and loaded
from it by every worker; :func:`na64reco.runner.local_cluster` gives the workers the
client's cache directory.
"""

from __future__ import annotations

import gc
import os
import time

import numba

#: Modules a worker needs for every chunk, in import order.
MODULES = ("numpy", "awkward", "uproot", "numba", "coffea.processor", "coffea.nanoevents",
           "na64reco.reco.event", "processors.na64mu_invisible", "processors.na64e_invisible")


def import_modules() -> float:
    """Import :data:`MODULES`; returns the seconds it took."""
    import importlib

    t0 = time.perf_counter()
    for name in MODULES:
        importlib.import_module(name)
    return time.perf_counter() - t0


def start_numba() -> float:
    """Initialise numba's CPU target (its typing and lowering registries, ~0.5-1 s on the
    first call of any kernel in a process) by loading a one-line kernel from the cache."""
    import numpy as np

    t0 = time.perf_counter()
    _one(np.zeros(1))
    return time.perf_counter() - t0


@numba.njit(cache=True)
def _one(x):
    return x[0] + 1.0


#: ``MALLOC_TRIM_THRESHOLD_`` as distributed's nanny sets it by default (its ``distributed.yaml``)
DISTRIBUTED_TRIM_DEFAULT = "65536"


def keep_freed_memory_if_trimmed() -> bool:
    """Keep freed memory in the heap if this process was started with distributed's default
    ``MALLOC_TRIM_THRESHOLD_``: glibc's mmap threshold at its maximum and the trim threshold at twice
    it, the state glibc's dynamic adjustment reaches by itself in a process that frees such blocks
    (:func:`na64reco.sim.heap.retain_freed_memory`).  True if it was changed.  (A worker's peak
    memory is then ~50 MB above the trimming worker's: the heap serves every block below 32 MiB
    from the start; ``benchmarks/bench_worker_heap.py``.)"""
    if os.environ.get("MALLOC_TRIM_THRESHOLD_") != DISTRIBUTED_TRIM_DEFAULT:
        return False
    from na64reco.sim import heap

    return heap.retain_freed_memory(heap.DYNAMIC_TRIM_THRESHOLD_BYTES)


def dask_setup(worker=None) -> None:
    """Run by each worker at start-up (distributed preload hook)."""
    keep_freed_memory_if_trimmed()
    seconds = import_modules() + start_numba()
    if worker is not None:
        worker.na64reco_setup_seconds = seconds


def dask_teardown(worker=None) -> None:
    gc.freeze()  # exit without a full collection of the worker's heap (see the module doc)

