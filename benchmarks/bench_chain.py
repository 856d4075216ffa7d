"""Full-chain throughput (raw -> histograms) and scaling of the blinded processors.

    python benchmarks/bench_chain.py FILE.root [FILE.root ...] [--processor na64mu_invisible]
        [--chunksizes 5000 20000] [--repeat 3] [--skip-dask]

Prints (each timing the minimum of ``--repeat`` runs, wall and CPU time of this process; the
plain read and the iterative chain alternated round by round):
* plain uproot read of the ``events`` tree (all branches) in events/s;
* the full chain with the iterative executor in events/s/core and its time relative
  to the plain read measured in the same run (target <= 3x), in wall and in CPU time;
* dask with 1 and 2 workers (``na64reco.runner.local_cluster``, what ``na64reco run
  --executor dask`` starts: 1 thread each, forked from a fork server that imported the
  analysis modules; workers warmed up first): wall time and speed-up (target >= 1.8x on
  2 free cores);
* the dask workers' user and system CPU time and minor page faults per run (median);
* peak resident memory per dask worker for each chunk size (chunks are whole basket
  clusters of at most the chunk size when the clusters fit, see ``na64reco.runner``),
  and the worker's memory after the warm-up (imports, kernels).
Run on an otherwise idle machine; figures depend on the load (the CPU-time ratio less so).
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def best(fn, repeat):
    """(result, min wall s, min CPU s of this process) over ``repeat`` calls of ``fn``."""
    walls, cpus = [], []
    for _ in range(repeat):
        w, c = time.perf_counter(), time.process_time()
        res = fn()
        walls.append(time.perf_counter() - w)
        cpus.append(time.process_time() - c)
    return res, min(walls), min(cpus)


def read_uproot(files):
    import uproot

    n = 0
    for f in files:
        with uproot.open(f) as fh:
            n += len(fh["events"].arrays(library="ak"))
    return n


def run(files, processor, executor, workers=1, chunksize=20000, client=None):
    from na64reco.runner import RunOptions, run_files

    opts = RunOptions(processor, executor=executor, workers=workers, chunksize=chunksize, client=client)
    out = run_files({"bench": list(files)}, opts)
    return out["bench"]["provenance"].events_processed


def _reset_peak_rss():
    """Restart the worker's peak-RSS count (Linux ``clear_refs``): ``ru_maxrss`` is inherited
    from the process that started the worker, so it would report the benchmark's own peak."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _peak_rss_mb():
    """Peak RSS since :func:`_reset_peak_rss` (``VmHWM``), else ``ru_maxrss``."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _usage():
    """(user s, system s, minor page faults) of this process so far."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime, r.ru_stime, r.ru_minflt


def _warm(path, processor, n=500):
    """Process the first ``n`` events in this process (imports, numba compilation)."""
    from coffea.nanoevents import BaseSchema, NanoEventsFactory

    from processors import get_processor

    ev = NanoEventsFactory.from_root({path: "events"}, schemaclass=BaseSchema, mode="eager",
                                     entry_stop=n, metadata={"filename": path, "dataset": "w",
                                                             "entrystart": 0, "entrystop": n}).events()
    get_processor(processor)().process(ev)
    return True


def _rss_mb():
    """Resident memory now (``VmRSS``; pages shared with the fork server included)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def dask_run(files, processor, workers, chunksize, repeat=1):
    """(events, min wall s, peak RSS MB of the largest worker, warm-up s, RSS MB of the
    largest worker after the warm-up, the workers' (user s, system s, minor page faults) per run
    summed over them, the medians of the runs); start-up and warm-up not timed.  The cluster is
    :func:`na64reco.runner.local_cluster`, the one ``na64reco run --executor dask`` starts
    (workers forked from a fork server that imported the analysis modules)."""
    from dask.distributed import Client

    from na64reco.runner import local_cluster

    with local_cluster(workers) as cluster, Client(cluster) as client:
        t = time.perf_counter()
        client.run(_warm, str(Path(files[0]).resolve()), processor)  # not timed
        warm = time.perf_counter() - t
        idle = client.run(_rss_mb)
        client.run(_reset_peak_rss)
        usage = []

        def timed_run():
            before = client.run(_usage)
            res = run(files, processor, "dask", workers, chunksize, client)
            after = client.run(_usage)
            usage.append([sum(after[w][i] - before[w][i] for w in after) for i in range(3)])
            return res

        n, dt, _ = best(timed_run, repeat)
        peaks = client.run(_peak_rss_mb)
    per_run = [sorted(u[i] for u in usage)[len(usage) // 2] for i in range(3)]
    return n, dt, max(peaks.values()), warm, max(idle.values()), per_run


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("files", nargs="+")
    ap.add_argument("--processor", default="na64mu_invisible")
    ap.add_argument("--chunksizes", type=int, nargs="+", default=[5000, 20000])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--skip-dask", action="store_true")
    args = ap.parse_args(argv)
    os.environ.setdefault("NUMBA_CACHE_DIR", str(Path(__file__).resolve().parents[1] / ".numba_cache"))

    run(args.files[:1], args.processor, "iterative", chunksize=2000)   # warm-up: imports, numba
    cs = max(args.chunksizes)
    # the read and the chain alternated, round by round: on a shared machine the CPU time of
    # either moves by 20-40 % within a minute, and the ratio of two blocks of runs measured a
    # minute apart moved with it (docs/performance.md, "Ninth pass")
    reads, chains = [], []
    for _ in range(args.repeat):
        reads.append(best(lambda: read_uproot(args.files), 1))
        chains.append(best(lambda: run(args.files, args.processor, "iterative", chunksize=cs), 1))
    n, r_wall, r_cpu = reads[0][0], min(r[1] for r in reads), min(r[2] for r in reads)
    print(f"plain uproot read      : {n} events in {r_wall:.2f} s wall, {r_cpu:.2f} s CPU = "
          f"{n / r_wall:,.0f} events/s")
    n, c_wall, c_cpu = chains[0][0], min(c[1] for c in chains), min(c[2] for c in chains)
    print(f"full chain (iterative) : {n} events in {c_wall:.2f} s wall, {c_cpu:.2f} s CPU = "
          f"{n / c_cpu:,.0f} events/s/core; {c_wall / r_wall:.1f}x the plain read in wall time, "
          f"{c_cpu / r_cpu:.1f}x in CPU time (target <= 3x)")
    if args.skip_dask:
        return 0
    cs = min(args.chunksizes)
    n1, t1, m1, w1, _, u1 = dask_run(args.files, args.processor, 1, cs, args.repeat)
    n2, t2, m2, w2, _, u2 = dask_run(args.files, args.processor, 2, cs, args.repeat)
    print(f"dask 1 worker          : {t1:.2f} s;  2 workers: {t2:.2f} s;  speed-up {t1 / t2:.2f}x "
          f"(target >= 1.8x); {t1 / r_wall:.1f}x / {t2 / r_wall:.1f}x the plain read; "
          f"worker warm-up (kernels from the disk cache, first chunk) {w1:.1f} s / {w2:.1f} s")
    for k, u in ((1, u1), (2, u2)):  # (a heap policy that maps every large array afresh shows here)
        print(f"  workers of the {k}-worker runs, median per run: {u[0]:.2f} s user, {u[1]:.2f} s system, "
              f"{u[2]:,.0f} minor page faults")
    for c in args.chunksizes:
        _, dt, peak, _, idle, _ = dask_run(args.files, args.processor, 2, c)
        print(f"chunksize {c:>7}      : 2 workers {dt:.2f} s, peak RSS per worker {peak:.0f} MB "
              f"(after the warm-up, before the run: {idle:.0f} MB; target <= 300 MB at 20000)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
