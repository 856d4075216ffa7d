"""The heap policy of dask workers: the same chain on one worker of three clusters, alternated.

    python benchmarks/bench_worker_heap.py FILE.root [FILE.root ...] [--rounds 2] [--runs 3]
        [--chunksize 20000] [--processor na64mu_invisible]

Three one-worker clusters on this machine, each started ``--rounds`` times in turn (A, B, C, A, B,
C, ...), warmed up (imports, kernels, one chunk), then ``--runs`` timed ``run_files`` over the files
(``executor="dask"`` on that client):

* ``defaults``: a ``LocalCluster`` with distributed's defaults and no preload: its nanny puts
  ``MALLOC_TRIM_THRESHOLD_=65536`` in the worker's environment, which turns glibc's dynamic mmap
  threshold off (every chunk's large arrays mapped afresh and faulted in page by page);
* ``defaults + preload``: the same with ``--preload na64reco.dask_worker``, as docs/running.md asks of a
  cluster of one's own: the preload keeps freed memory in the heap when it finds that variable;
* ``local_cluster``: :func:`na64reco.runner.local_cluster`, what ``na64reco run --executor dask``
  starts: the variable left out, glibc's own policy.

Each cluster is measured in a process of its own (a nanny started with distributed's defaults puts
the variable in its own process's environment too, which later clusters and their fork server would
inherit).  Printed per cluster (medians over all its timed runs): the wall time of a run, the worker's user and
system CPU time and minor page faults per run, and its peak RSS (``VmHWM`` after the runs).  Separate
processes of the machine's other work move wall times by 20-40 %; the fault counts do not move.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_chain import _peak_rss_mb, _reset_peak_rss, _usage, _warm, run  # noqa: E402

KINDS = ("defaults", "defaults + preload", "local_cluster")


def _cluster(kind: str):
    from dask.distributed import LocalCluster

    from na64reco.runner import local_cluster

    if kind == "local_cluster":
        return local_cluster(1)
    return LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None,
                        scheduler_kwargs={"dashboard": False, "dashboard_address": "127.0.0.1:0"},
                        silence_logs=logging.WARNING,
                        preload=["na64reco.dask_worker"] if kind.endswith("preload") else [])


def _trim_variable():
    import os

    return os.environ.get("MALLOC_TRIM_THRESHOLD_")


def measure(kind, files, processor, chunksize, runs):
    """(trim variable in the worker, [(wall s, user s, system s, faults)] per run, peak RSS MB)."""
    from dask.distributed import Client

    with _cluster(kind) as cluster, Client(cluster) as client:
        client.run(_warm, str(Path(files[0]).resolve()), processor)
        run(files, processor, "dask", 1, chunksize, client)  # the first run's chunk sizes: not timed
        client.run(_reset_peak_rss)
        (trim,) = client.run(_trim_variable).values()
        out = []
        for _ in range(runs):
            (before,) = client.run(_usage).values()
            t = time.perf_counter()
            run(files, processor, "dask", 1, chunksize, client)
            wall = time.perf_counter() - t
            (after,) = client.run(_usage).values()
            out.append((wall, *(b - a for a, b in zip(before, after, strict=True))))
        (peak,) = client.run(_peak_rss_mb).values()
    return trim, out, peak


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("files", nargs="+")
    ap.add_argument("--processor", default="na64mu_invisible")
    ap.add_argument("--chunksize", type=int, default=20000)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--one", choices=KINDS, help=argparse.SUPPRESS)  # (a child process: one cluster)
    args = ap.parse_args(argv)
    if args.one:
        print(json.dumps(measure(args.one, args.files, args.processor, args.chunksize, args.runs)))
        return 0
    results = {k: [] for k in KINDS}
    trims, peaks = {}, {k: [] for k in KINDS}
    for _ in range(args.rounds):
        for kind in KINDS:
            res = subprocess.run([sys.executable, __file__, *args.files, "--processor", args.processor, "--chunksize",
                                  str(args.chunksize), "--runs", str(args.runs), "--one", kind],
                                 capture_output=True, text=True, check=True)
            trims[kind], out, peak = json.loads(res.stdout.strip().splitlines()[-1])
            results[kind] += out
            peaks[kind].append(peak)
    print(f"{', '.join(args.files)}: one worker, chunks of {args.chunksize}, {args.rounds} rounds of "
          f"{args.runs} runs per cluster (medians per run)")
    print(f"{'cluster':20s} {'MALLOC_TRIM_THRESHOLD_':>22s} {'wall':>7s} {'user':>7s} {'system':>7s} "
          f"{'faults':>9s} {'peak RSS':>9s}")
    for kind in KINDS:
        med = [statistics.median(r[i] for r in results[kind]) for i in range(4)]
        print(f"{kind:20s} {str(trims[kind]):>22s} {med[0]:6.2f}s {med[1]:6.2f}s {med[2]:6.2f}s "
              f"{med[3]:9,.0f} {max(peaks[kind]):6.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
