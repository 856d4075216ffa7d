"""Full-chain throughput (raw -> histograms) and scaling of the blinded processors.

    python benchmarks/bench_chain.py FILE.root [FILE.root ...] [--processor na64mu_invisible]
        [--chunksizes 5000 20000] [--skip-dask]

Prints:
* plain uproot read of the ``events`` tree (all branches) in events/s;
* the full chain with the iterative executor in events/s/core and its time relative
  to the plain read (target <= 3x);
* dask with 1 and 2 workers (LocalCluster, 1 thread each): wall time and speed-up
  (target >= 1.6x on 2 free cores);
* peak resident memory per dask worker for each chunk size.
Run on an otherwise idle machine; figures depend on the load.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def read_uproot(files):
    import uproot

    n = 0
    t = time.perf_counter()
    for f in files:
        with uproot.open(f) as fh:
            n += len(fh["events"].arrays(library="ak"))
    return n, time.perf_counter() - t


def run(files, processor, executor, workers=1, chunksize=20000, client=None):
    from na64reco.runner import RunOptions, run_files

    opts = RunOptions(processor, executor=executor, workers=workers, chunksize=chunksize, client=client)
    t = time.perf_counter()
    out = run_files({"bench": list(files)}, opts)
    return out["bench"]["provenance"].events_processed, time.perf_counter() - t


def _peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _warm(path, processor, n=500):
    """Process the first ``n`` events in this process (imports, numba compilation)."""
    from coffea.nanoevents import BaseSchema, NanoEventsFactory

    from processors import get_processor

    ev = NanoEventsFactory.from_root({path: "events"}, schemaclass=BaseSchema, mode="eager",
                                     entry_stop=n, metadata={"filename": path, "dataset": "w",
                                                             "entrystart": 0, "entrystop": n}).events()
    get_processor(processor)().process(ev)
    return True


def dask_run(files, processor, workers, chunksize):
    from dask.distributed import Client, LocalCluster

    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        client.run(_warm, str(Path(files[0]).resolve()), processor)  # not timed
        n, dt = run(files, processor, "dask", workers, chunksize, client)
        peaks = client.run(_peak_rss_mb)
    return n, dt, max(peaks.values())


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("files", nargs="+")
    ap.add_argument("--processor", default="na64mu_invisible")
    ap.add_argument("--chunksizes", type=int, nargs="+", default=[5000, 20000])
    ap.add_argument("--skip-dask", action="store_true")
    args = ap.parse_args(argv)
    os.environ.setdefault("NUMBA_CACHE_DIR", str(Path(__file__).resolve().parents[1] / ".numba_cache"))

    run(args.files[:1], args.processor, "iterative", chunksize=2000)   # warm-up: imports, numba
    n, t_read = read_uproot(args.files)
    print(f"plain uproot read      : {n} events in {t_read:.2f} s = {n / t_read:,.0f} events/s")
    n, t_chain = run(args.files, args.processor, "iterative", chunksize=max(args.chunksizes))
    print(f"full chain (iterative) : {n} events in {t_chain:.2f} s = {n / t_chain:,.0f} events/s/core; "
          f"{t_chain / t_read:.1f}x the plain read (target <= 3x)")
    if args.skip_dask:
        return 0
    cs = min(args.chunksizes)
    n1, t1, m1 = dask_run(args.files, args.processor, 1, cs)
    n2, t2, m2 = dask_run(args.files, args.processor, 2, cs)
    print(f"dask 1 worker          : {t1:.2f} s;  2 workers: {t2:.2f} s;  speed-up {t1 / t2:.2f}x "
          f"(target >= 1.6x)")
    for c in args.chunksizes:
        _, dt, peak = dask_run(args.files, args.processor, 2, c)
        print(f"chunksize {c:>7}      : 2 workers {dt:.2f} s, peak RSS per worker {peak:.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
