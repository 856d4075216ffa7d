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

The numba kernels are compiled once into the on-disk cache (``NUMBA_CACHE_DIR``, else
``__pycache__`` next to the sources, see :mod:`na64reco.reco.tracking._jit`) and loaded
from it by every worker; :func:`na64reco.runner.local_cluster` gives the workers the
client's cache directory.
"""

from __future__ import annotations

import gc
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


def dask_setup(worker=None) -> None:
    """Run by each worker at start-up (distributed preload hook)."""
    seconds = import_modules() + start_numba()
    if worker is not None:
        worker.na64reco_setup_seconds = seconds


def dask_teardown(worker=None) -> None:
    gc.freeze()  # exit without a full collection of the worker's heap (see the module doc)

