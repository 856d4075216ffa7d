"""Defaults of the chunked jobs: chunk sizes (how much is held in memory at once) and executors.

One light module (no numpy, no numba, no coffea) so that the command-line options can show
these defaults without importing the simulation, the reconstruction or coffea: every
``na64reco`` command builds all the options before it runs one.
"""

#: Beam particles simulated between two writes of ``na64reco simulate`` (bounds its memory).
SIMULATE_CHUNK = 20_000

#: Events per chunk of ``na64reco reco``: bounds the memory and sets the steps of its
#: progress bar (a 100k-MOT na64mu file advances in 5 steps).
EXPORT_CHUNK = 20_000

#: Events per chunk of the coffea processors (``na64reco run``, signal efficiencies):
#: ~55 MB of raw arrays per chunk for NA64mu.
RUN_CHUNK = 50_000

#: The coffea executors ``na64reco run`` can use.
EXECUTORS = ("iterative", "futures", "dask")
