"""Full event reconstruction throughput (calorimeters + tracking), as a ratio to reading.

    python benchmarks/bench_reco.py [--file RAW.root | --events 100000] [--repeat 3] [--chunk 50000] [--stages] [--heap]

Prints, on one core and in one process: the plain uproot read of the ``events`` branches
(the baseline), the read + ``assemble_events`` + ``reconstruct`` chain, events/s per
core (CPU time, minimum of the repeats, the measurements alternated round by round) and the
ratio to the baseline (also the median of the rounds' own ratios), plus the peak
memory of the process (bounded by the chunk size, not the file size).  Then the same with
the read of the README's Python API, ``open_raw(path).events(start, stop)`` per chunk (the
basket maps and the content checksums verified, :mod:`na64reco.io.raw`), alone and with
``reconstruct``, as ratios to the same baseline.

``--stages``: also the CPU time of each stage over the whole file (chunks of ``--chunk``
events already in memory; each the minimum of the repeats), in seconds and as a multiple
of the plain read measured in the same run: assembling the nested events, the calorimeter
stage and within it the MSADC waveform kernel (with its wrapper), the tracking stage and
within it the tracker hits (digits -> clusters: the whole table of ``event_hits``, and the
search's hits that ``reconstruct_tracks`` makes, ``search_hits``) and the track search and fits, and the
whole ``reconstruct`` (both stages and the record building).
"""

from __future__ import annotations

import argparse
import resource
import statistics
import tempfile
import time
from pathlib import Path

import uproot

from na64reco.conditions import load_conditions
from na64reco.geometry import load_setup
from na64reco.io.raw import assemble_events, event_branches, open_raw
from na64reco.reco.event import reconstruct


def _read(path, chunk):
    n = 0
    with uproot.open(path) as f:
        for arrays in f["events"].iterate(event_branches(), step_size=chunk):
            n += len(arrays)
    return n


def _reco(path, chunk, setup, conds):
    n = 0
    with uproot.open(path) as f:
        for arrays in f["events"].iterate(event_branches(), step_size=chunk):
            reco = reconstruct(assemble_events(arrays, str(path)), setup, conds, source=str(path))
            n += len(reco)
    return n


def _api(path, chunk, setup=None, conds=None):
    """The README's read, ``open_raw(path).events(start, stop)`` per chunk, and with ``setup`` its
    ``reconstruct``; returns the events."""
    n = 0
    with open_raw(path) as raw:
        for start in range(0, raw.n_events, chunk):
            events = raw.events(start, min(start + chunk, raw.n_events))
            n += len(events if setup is None else reconstruct(events, setup, conds, source=str(path)))
    return n


def _chunk_steps(arrays, path, setup, conds, cfg, pt, vt, windows):
    """{stage: callable} for one chunk of flat branches (inputs of each stage made first)."""
    from na64reco.reco.calo import flat_digits, reconstruct_calo
    from na64reco.reco.tracking.clusters import event_hits, search_hits
    from na64reco.reco.tracking.stage import _search_hits, reconstruct_tracks
    from na64reco.reco.tracking.tracks import find_tracks, in_time, mm_singles
    from na64reco.reco.waveform import reconstruct_digits

    nested = assemble_events(arrays, path)
    _, det, chan, adc = flat_digits(nested)
    all_hits = event_hits(nested, pt, threshold_sigma=cfg.apv_threshold_sigma, drift_t0=cfg.drift_t0)
    keep = in_time(all_hits, *windows)  # the hits the search gets, as reconstruct_tracks selects them
    if not cfg.use_mm_singles:
        keep &= ~mm_singles(all_hits, pt.type == 0)
    hits = _search_hits(all_hits, keep)
    return {
        "assemble_events": lambda: assemble_events(arrays, path),
        "calo: whole stage": lambda: reconstruct_calo(nested, setup, conds),
        "calo: waveform kernel": lambda: reconstruct_digits(det, chan, adc, setup, conds),
        "tracking: whole stage": lambda: reconstruct_tracks(nested, setup, conds),
        "tracking: hits": lambda: event_hits(nested, pt, threshold_sigma=cfg.apv_threshold_sigma,
                                             drift_t0=cfg.drift_t0),
        "tracking: search's hits": lambda: search_hits(nested, pt, threshold_sigma=cfg.apv_threshold_sigma,
                                                       drift_t0=cfg.drift_t0, lo=windows[0], hi=windows[1],
                                                       drop=(pt.type == 0) & (not cfg.use_mm_singles)),
        "tracking: search + fits": lambda: find_tracks(hits, len(nested), pt.n_planes, vt),
        "reconstruct (all)": lambda: reconstruct(nested, setup, conds),
    }


def _stages(path, chunk, setup, conds, repeat):
    """{stage: minimum CPU s over ``repeat``} summed over the chunks of ``path`` (see doc)."""
    from na64reco.reco.tracking.stage import _tables

    with uproot.open(path, array_cache=None) as f:
        chunks = list(f["events"].iterate(event_branches(), step_size=chunk))
    cfg, pt, vt, windows = _tables(setup, conds)
    total: dict[str, float] = {}
    for arrays in chunks:
        t = {}
        steps = _chunk_steps(arrays, str(path), setup, conds, cfg, pt, vt, windows)
        for name, fn in steps.items():
            t[name] = _best(fn, repeat)[1]
        for name, v in t.items():
            total[name] = total.get(name, 0.0) + v
    return total


def _best(fn, repeat):
    cpu = wall = float("inf")
    for _ in range(repeat):
        c0, w0 = time.process_time(), time.perf_counter()
        n = fn()
        cpu, wall = min(cpu, time.process_time() - c0), min(wall, time.perf_counter() - w0)
    return n, cpu, wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--file")
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--chunk", type=int, default=50_000)
    ap.add_argument("--stages", action="store_true", help="also the CPU time of each stage")
    ap.add_argument("--heap", action="store_true",
                    help="keep freed memory in the heap first (na64reco.sim.heap.retain_freed_memory), as a "
                         "na64reco command's process does and a user's process may; the read and the "
                         "reconstruction alike")
    args = ap.parse_args()
    if args.heap:
        from na64reco.sim.heap import retain_freed_memory

        retain_freed_memory()
    path = args.file
    if path is None:
        from na64reco.sim import simulate

        path = Path(tempfile.mkdtemp()) / "bench_reco.root"
        simulate("na64mu", args.events, 1, 1001, path)
    with open_raw(path) as raw:
        setup = load_setup(raw.setup, run=raw.run)
        conds = load_conditions(setup, raw.run)
    _reco(path, 1000, setup, conds)  # compile the kernels outside the timing
    # the four measurements alternate round by round (the host's load drifts: separate blocks of
    # repeats bias the ratios); each figure is the minimum over the rounds
    rounds = {"read": [], "reco": [], "api": [], "api_reco": []}
    steps = {"read": lambda: _read(path, args.chunk), "reco": lambda: _reco(path, args.chunk, setup, conds),
             "api": lambda: _api(path, args.chunk), "api_reco": lambda: _api(path, args.chunk, setup, conds)}
    for _ in range(args.repeat):
        for key, fn in steps.items():
            n, cpu, wall = _best(fn, 1)
            rounds[key].append((cpu, wall))
    (cpu_read, wall_read), (cpu_reco, wall_reco), (cpu_api, _), (cpu_api_reco, _) = (
        (min(c for c, _ in rounds[k]), min(w for _, w in rounds[k])) for k in steps)
    paired = [r[0] / q[0] for r, q in zip(rounds["reco"], rounds["read"], strict=True)]
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"file {path}: {n} events, chunk {args.chunk}")
    print(f"plain uproot read      : {n / cpu_read:10.0f} events/s/core (CPU {cpu_read:.2f} s, wall {wall_read:.2f} s)")
    print(f"read + reconstruct     : {n / cpu_reco:10.0f} events/s/core (CPU {cpu_reco:.2f} s, wall {wall_reco:.2f} s)")
    print(f"reconstruction alone   : {n / (cpu_reco - cpu_read):10.0f} events/s/core")
    print(f"ratio (read+reco)/read : {cpu_reco / cpu_read:10.2f} x (CPU)   {wall_reco / wall_read:.2f} x (wall)")
    print(f"  paired (each round's read+reco / its read, CPU): median {statistics.median(paired):.2f} x, "
          f"range {min(paired):.2f}-{max(paired):.2f}")
    print(f"README API read        : {n / cpu_api:10.0f} events/s/core (CPU {cpu_api:.2f} s: "
          f"open_raw(...).events(start, stop), checksums verified; {cpu_api / cpu_read:.2f} x the plain read)")
    print(f"README API read + reco : {n / cpu_api_reco:10.0f} events/s/core (CPU {cpu_api_reco:.2f} s; "
          f"{cpu_api_reco / cpu_read:.2f} x the plain read)")
    print(f"peak RSS               : {peak:10.0f} MB")
    if args.stages:
        print(f"stages (CPU s over the {n} events; x = multiple of the plain read's {cpu_read:.2f} s):")
        for name, t in _stages(path, args.chunk, setup, conds, args.repeat).items():
            label = f"  {name}" if name.startswith(("calo:", "tracking:")) and "whole" not in name else name
            print(f"  {label:32s} {t:6.3f} s  {t / cpu_read:5.2f} x")


if __name__ == "__main__":
    main()
