"""Tracking throughput: events/s per core of reconstruct_tracks on an NA64mu raw file,
and the ratio to plain uproot reading of the apv/straw branches.

    python benchmarks/bench_tracking.py [--file F.root] [--events 100000] [--repeat 3]

Without --file, a beam file is simulated into a temporary directory with
``na64reco simulate`` (takes a minute for 100k events).  Rates are per CPU-second
(``time.process_time``).  Numba compilation is excluded (a warm-up call on 100 events
first).  Single-threaded: numba kernels run serially.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import uproot

from na64reco.conditions import load_conditions
from na64reco.geometry import load_setup
from na64reco.io.raw import open_raw
from na64reco.reco.tracking import reconstruct_tracks
from na64reco.reco.tracking.clusters import event_hits
from na64reco.reco.tracking.stage import _tables
from na64reco.reco.tracking.tracks import find_tracks

BRANCHES = ["apv_plane", "apv_chan", "apv_a0", "apv_a1", "apv_a2", "straw_plane", "straw_tube", "straw_tdc"]


def best_of(fn, repeat):
    """Smallest CPU time (process_time: per core, robust on a shared machine) of ``repeat`` calls."""
    times = []
    for _ in range(repeat):
        t = time.process_time()
        fn()
        times.append(time.process_time() - t)
    return min(times)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--file")
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)
    path = args.file
    if path is None:
        path = str(Path(tempfile.mkdtemp()) / "bench_na64mu.root")
        subprocess.run(
            [
                sys.executable,
                "-m",
                "na64reco.cli",
                "simulate",
                "--setup",
                "na64mu",
                "--events",
                str(args.events),
                "--seed",
                "5",
                "--process",
                "beam",
                "--output",
                path,
                "--quiet",
            ],
            check=True,
        )
    raw = open_raw(path)
    setup = load_setup(raw.setup, run=raw.run)
    cond = load_conditions(setup, raw.run)
    events = raw.events()
    n = len(events)
    reconstruct_tracks(events[:100], setup, cond)  # compile
    t_reco = best_of(lambda: reconstruct_tracks(events, setup, cond), args.repeat)
    cfg, pt, vt, _ = _tables(setup, cond)
    t_hits = best_of(lambda: event_hits(events, pt, threshold_sigma=cfg.apv_threshold_sigma), args.repeat)
    hits = event_hits(events, pt, threshold_sigma=cfg.apv_threshold_sigma)
    t_trk = best_of(lambda: find_tracks(hits, n, pt.n_planes, vt), args.repeat)
    t_read = best_of(lambda: uproot.open(path, array_cache=None)["events"].arrays(BRANCHES), args.repeat)
    print(f"file {path}: {n} events, {len(hits['pos']) / n:.1f} hits/event")
    print(f"reconstruct_tracks      {n / t_reco:10.0f} events/s  (one core)")
    print(f"  hits (digits->hits)   {n / t_hits:10.0f} events/s")
    print(f"  track search + fits   {n / t_trk:10.0f} events/s")
    print(f"uproot read apv+straw   {n / t_read:10.0f} events/s")
    print(f"ratio reco time / read time: {t_reco / t_read:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
