"""Many small files on a dask cluster: wall time, the workers' and the client's CPU, the check's share.

    python benchmarks/bench_dask_files.py [--workdir DIR] [--files 100] [--workers 2] [--repeat 3]
        [--chunksize 20000]

The files of ``bench_many_files.py --data`` (made there if missing: ``--files`` data-like files of
1k MOT and one file of the same number of MOT).  A ``na64reco.runner.local_cluster`` of
``--workers`` workers is started and warmed up (a run over 4 small files), then ``run_files``
(``executor="dask"`` on that client) runs alternately over the small files and over the big
file, ``--repeat`` times each, as a first run (``check_cache=False``: every file checked) and as
a run again over the same files (their checks from the check cache, :mod:`na64reco.file_check_cache`,
in a temporary directory filled by one run first).  Printed per run kind (minimum over the rounds): the wall time,
the CPU time of all workers (``os.times`` in each worker process) and of this process (the
client: the file check, coffea's bookkeeping, the final merge), the wall time of the up-front
file check (a timer around ``runner.check_files``); then the per-file excess
``(t(N files) - t(big file)) / (N - 1)`` of each, and the wall-time ratio of the N files to the
big file measured in the same rounds.  Run on an otherwise idle machine: the workers and the
client share its cores.

``--outputs`` (no cluster): what a worker pays per chunk output besides the processing, on one
chunk of one small file as the processor returns it: pickling (cloudpickle + lz4, as coffea's
executors send it), unpickling with the histogram templates this process unpickled before
(``na64reco.hists``), and unpickling with each template booked again (the cache emptied before
every call: what every unpickling cost before), minimum CPU of 50 calls each.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


KINDS = ("small", "big", "small, again", "big, again")


def _cpu() -> float:
    t = os.times()
    return t.user + t.system


def _code_location() -> str:
    import na64reco

    return str(Path(na64reco.__file__).parent)


def output_costs(path: str) -> None:
    import pickle

    import cloudpickle
    import lz4.frame

    import na64reco.hists as hists
    from na64reco.runner import RunOptions, make_processor, run_files

    opts = RunOptions("na64mu_invisible")
    proc = make_processor(opts)
    blobs = []
    process_chunk = type(proc).process_chunk

    def keep(self, events, meta):
        out = process_chunk(self, events, meta)
        blobs.append(lz4.frame.compress(cloudpickle.dumps(out), compression_level=1))
        return out

    type(proc).process_chunk = keep
    run_files({"one": [path]}, opts, processor_instance=proc)
    out = pickle.loads(lz4.frame.decompress(blobs[0]))

    def best(fn, before=lambda: None):
        t = float("inf")
        for _ in range(50):
            before()
            c = time.process_time()
            fn()
            t = min(t, time.process_time() - c)
        return t * 1e3

    dump = best(lambda: lz4.frame.compress(cloudpickle.dumps(out), compression_level=1))
    cached = best(lambda: pickle.loads(lz4.frame.decompress(blobs[0])))
    fresh = best(lambda: pickle.loads(lz4.frame.decompress(blobs[0])), hists._UNPICKLED.clear)
    print(f"one chunk's output of {path} ({len(blobs[0]) / 1e3:.1f} kB compressed), CPU ms, minimum of 50:")
    print(f"  pickle + lz4                               {dump:7.2f}")
    print(f"  lz4 + unpickle, templates unpickled before {cached:7.2f}")
    print(f"  lz4 + unpickle, every template booked      {fresh:7.2f}   ({fresh / cached:.1f}x)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", default=str(Path(tempfile.gettempdir()) / "na64reco-bench-many-files"))
    ap.add_argument("--files", type=int, default=100)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--chunksize", type=int, default=20000)
    ap.add_argument("--outputs", action="store_true", help="only the pickling cost of one chunk's output")
    args = ap.parse_args()
    if args.outputs:
        from bench_many_files import make_files

        output_costs(make_files(Path(args.workdir), args.files, 1000, truth=False)[0][0])
        return

    from bench_many_files import fill_cache, make_files
    from distributed import Client

    import na64reco.runner as runner
    from na64reco.runner import RunOptions, local_cluster, run_files

    small, big = make_files(Path(args.workdir), args.files, 1000, truth=False)
    check_wall = []
    check_files = runner.check_files

    def timed_check(*a, **kw):
        t = time.perf_counter()
        try:
            return check_files(*a, **kw)
        finally:
            check_wall.append(time.perf_counter() - t)

    runner.check_files = timed_check
    os.environ["NA64RECO_CACHE_DIR"] = tempfile.mkdtemp(prefix="bench-check-cache-")  # (not the user's cache)
    results: dict[str, list[tuple[float, float, float, float]]] = {k: [] for k in KINDS}
    with local_cluster(args.workers) as cluster, Client(cluster) as client:
        client.wait_for_workers(args.workers)
        where = set(client.run(_code_location).values())
        print(f"code: this process {_code_location()}, workers {', '.join(sorted(where))}")
        first = RunOptions("na64mu_invisible", executor="dask", workers=args.workers, client=client,
                           chunksize=args.chunksize, check_cache=False)
        again = dataclasses.replace(first, check_cache=True)
        run_files({"warm": small[:4]}, first)
        print(f"the check cache holds {fill_cache(small + [big], again)} of the {len(small) + 1} files")
        runs = {"small": (small, first), "big": ([big], first), "small, again": (small, again),
                "big, again": ([big], again)}
        for _ in range(args.repeat):
            for kind, (files, opts) in runs.items():
                w0, c0 = sum(client.run(_cpu).values()), _cpu()
                t0 = time.perf_counter()
                out = run_files({"bench": files}, opts)
                wall = time.perf_counter() - t0
                w1, c1 = sum(client.run(_cpu).values()), _cpu()
                assert out["bench"]["provenance"].events_processed > 0
                results[kind].append((wall, w1 - w0, c1 - c0, check_wall[-1]))
    best = {k: [min(r[i] for r in v) for i in range(4)] for k, v in results.items()}
    n = len(small)
    print(f"{n} data-like files of 1k MOT against one file of {n}k MOT, dask with {args.workers} workers, "
          f"chunks of {args.chunksize}, minimum of {args.repeat} alternated rounds; a first run (every file "
          f"checked) and a run again (the checks from the cache):")
    print(f"{'':28s} {'wall':>8s} {'workers CPU':>12s} {'client CPU':>11s} {'check wall':>11s}")
    for kind in KINDS:
        wall, wcpu, ccpu, chk = best[kind]
        label = kind.replace("small", f"{n} small files").replace("big", "the big file")
        print(f"{label:28s} {wall:7.2f}s {wcpu:11.2f}s {ccpu:10.2f}s {chk:10.2f}s")
    for tag in ("", ", again"):
        s, b = best["small" + tag], best["big" + tag]
        ex = [(s[i] - b[i]) / (n - 1) * 1e3 for i in range(4)]
        print(f"per file in excess of the big file{tag or ', first run'}: wall {ex[0]:.1f} ms, workers CPU "
              f"{ex[1]:.1f} ms, client CPU {ex[2]:.1f} ms, check wall {ex[3]:.1f} ms; "
              f"{n} small files / the big file {s[0] / b[0]:.2f}x (wall)")

if __name__ == "__main__":
    main()
