"""Per-file overhead of ``run_files``: 100 files of 1k MOT against one file of the same events.

    python benchmarks/bench_many_files.py [--workdir DIR] [--files 100] [--mot 1000]
        [--repeat 3] [--profile OUT.prof] [--data] [--pieces] [--steps] [--merge N]

Simulates once (kept in ``DIR``, default a fixed directory under the temp dir) ``--files``
NA64mu files of ``--mot`` beam muons each (seeds 1.., run 1001, calibration trigger: ~94 %
of the muons are written, ~940 events a file) and one file of ``files * mot`` muons
(seed 1001), then, in one warm process (imports and JIT excluded by a first run), times
``run_files`` (iterative, processor ``na64mu_invisible``) on

* one small file,
* all the small files (one dataset),
* the one big file (about the same events),

each the minimum of ``--repeat`` runs (wall and CPU time), and prints the per-file overhead
``(t(N files) - t(big file)) / (N - 1)`` (the event cost is the same in both), and
``(t(N files) - t(1 file)) / (N - 1)`` (per-file cost events included, the issue's figure).
Both for a first run (``check_cache=False``: every file checked) and for a run again over
the same files, their checks taken from the check cache (:mod:`na64reco.file_check_cache`, in
a temporary directory filled by one run first).
``--data`` makes data-like files (no truth tree: what a muon campaign's files are).
``--profile`` writes a cProfile of one N-file run (``python -m pstats OUT.prof``).
``--pieces`` prints the CPU time per small file of the reads a run makes per file
(opening, metadata, checksum table, each tree's header, the runner's check, coffea's
chunk read, the runner's chunk read by uproot and from the check's basket map), each in a
loop over the files.
``--steps`` prints the CPU time per file of each step of a run (the runner's check, the
chunk read, the processor's steps, the reconstruction, the rest) over the N files and
over the big file, and the excess per file: where the per-file overhead goes (a first run,
then a run again with the checks from the cache).
``--merge N`` (no files needed) prints the CPU time per file of coffea's accumulation of
N one-chunk outputs (the processor's provenance, one file record each): the part of the
per-file cost that grows with the number of files (docs/performance.md, "Per-chunk fixed
cost").
Run on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def make_files(workdir: Path, n_files: int, mot: int, truth: bool) -> tuple[list[str], str]:
    from na64reco.sim import simulate

    workdir.mkdir(parents=True, exist_ok=True)
    kind = "" if truth else "data-"

    def make(path: Path, n: int, seed: int) -> str:
        if not path.exists():
            tmp = path.with_suffix(".part.root")
            simulate("na64mu", n, seed, 1001, tmp, trigger="calibration", truth=truth)
            tmp.rename(path)
        return str(path)

    small = [make(workdir / f"{kind}mot{mot}-seed{i + 1}.root", mot, i + 1) for i in range(n_files)]
    return small, make(workdir / f"{kind}mot{mot * n_files}-seed1001.root", mot * n_files, 1001)


def timed(files: list[str], opts, repeat: int) -> tuple[float, float, int]:
    """(min wall s, min CPU s of this process, events) over ``repeat`` runs."""
    from na64reco.runner import run_files

    wall, cpu, events = float("inf"), float("inf"), 0
    for _ in range(repeat):
        w, c = time.perf_counter(), time.process_time()
        out = run_files({"bench": files}, opts)
        wall, cpu = min(wall, time.perf_counter() - w), min(cpu, time.process_time() - c)
        events = out["bench"]["provenance"].events_processed
    return wall, cpu, events


def fill_cache(files: list[str], opts) -> int:
    """Run once over ``files`` with the check cache (after the racy window of files just made);
    the files the cache then holds."""
    from na64reco.file_check_cache import RACY_SECONDS, CheckCache
    from na64reco.runner import run_files

    newest = max(max(os.stat(f).st_mtime, os.stat(f).st_ctime) for f in files)
    time.sleep(max(0.0, newest + RACY_SECONDS - time.time() + 0.1))
    run_files({"bench": files[:-1]}, opts)
    run_files({"bench": files[-1:]}, opts)
    cache = CheckCache()
    try:
        return len(cache.lookup(files, "na64mu"))
    finally:
        cache.close()


def pieces(files: list[str]) -> None:
    """CPU ms per file of each read a run makes per file, each in a loop over ``files``."""
    import uproot
    from coffea.nanoevents import BaseSchema, NanoEventsFactory

    from na64reco.io import raw
    from na64reco.runner import check_files

    META_KEY, SUMS_KEY, open_raw = raw.META_KEY, getattr(raw, "SUMS_KEY", None), raw.open_raw  # (also before v3)

    def per_file(label, fn):
        fn(files[0])
        c = time.process_time()
        for f in files:
            fn(f)
        print(f"  {label:<44}{(time.process_time() - c) / len(files) * 1e3:7.2f} ms")

    def opened(f):
        return uproot.open(f, array_cache=None)

    def chunk(f):
        n = open_raw(f, structure=False).n_events
        return NanoEventsFactory.from_root({f: "events"}, schemaclass=BaseSchema, mode="eager",
                                           uproot_options={"array_cache": None}, preload=lambda b: True,
                                           metadata={"filename": f, "entrystart": 0, "entrystop": n}).events()

    print(f"CPU per file of the reads of a run ({len(files)} files, each in a loop):")
    per_file("open + keys", lambda f: opened(f).keys(cycle=False))
    per_file("open + metadata", lambda f: str(opened(f)[META_KEY]))
    keys = set(opened(files[0]).keys(cycle=False))
    if SUMS_KEY in keys:
        per_file("open + checksum table (string)", lambda f: str(opened(f)[SUMS_KEY]))
    for tree in sorted(k for k in keys if k not in (META_KEY, SUMS_KEY)):
        per_file(f"open + header of {tree!r}", lambda f, t=tree: opened(f)[t])
    per_file("open_raw, no tree checked", lambda f: open_raw(f, structure=False).close())
    per_file("the runner's check (check_files)", lambda f: check_files({"d": [f]}, "na64mu", skip_bad_files=False))
    per_file("coffea's chunk read (open, header, 20 branches)", chunk)
    try:
        from na64reco.runner import read_chunk
    except ImportError:  # (before the third pass)
        return
    from types import SimpleNamespace

    def own(f):
        n = open_raw(f, structure=False).n_events
        return read_chunk(SimpleNamespace(filename=f, treename="events", entrystart=0, entrystop=n, preload=None),
                          {"array_cache": None})

    per_file("the runner's chunk read by uproot (read_chunk)", own)
    try:
        from na64reco.io.baskets import TreeBaskets
    except ImportError:  # (before stop 29)
        return
    maps = {}
    for f in files:  # (what the check keeps: its own cost is in the check's line above)
        with open_raw(f, structure=("events",)) as r:
            maps[f] = (r.n_events, TreeBaskets.of_tree(r.tree("events")))

    def by_map(f):
        n, baskets = maps[f]
        return read_chunk(SimpleNamespace(filename=f, treename="events", entrystart=0, entrystop=n, preload=None),
                          {"array_cache": None}, baskets=baskets)

    per_file("the runner's chunk read from the check's basket map", by_map)


def steps(small: list[str], big: str, opts) -> None:
    """CPU ms per file of each step of ``run_files`` on the small files and on the big file
    (timers around the functions, in this process), and the excess per small file."""
    from step_timers import cpu_step_timers

    import na64reco.runner as runner
    import processors.base as base

    patches = [(runner, "check_files", "runner: check_files"), (runner, "read_chunk", "runner: read_chunk"),
               (base, "assemble_events", "reco: assemble_events (io)"),
               (base, "reconstruct_stage", "reco: reconstruct (reco/)"),
               (base, "attach_truth_stage", "reco: attach_truth (reco/)")]
    patches += [(base.InvisibleProcessor, m, f"processor: {m}") for m in (
        "process_chunk", "verify", "fill_histograms", "fill_nminusone", "count_regions", "provenance", "postprocess")]
    patches += [(base, f, f"selection: {f}") for f in ("cut_masks", "apply_blinding", "build_selection")]
    with cpu_step_timers(patches) as spent:
        run_files = runner.run_files
        res = {}
        for label, files in (("small", small), ("big", [big])):
            run_files({"bench": files}, opts)  # warm
            spent.clear()
            c = time.process_time()
            events = run_files({"bench": files}, opts)["bench"]["provenance"].events_processed
            spent["TOTAL (run_files)"] = time.process_time() - c
            res[label] = (dict(spent), events)
    (s, ns), (b, nb) = res["small"], res["big"]
    n = len(small)
    print(f"CPU ms per small file ({n} files, {ns} events) and per-file excess over the big file "
          f"({nb} events, scaled to {ns}); one run each:")
    for k in sorted(s, key=lambda k: -s[k]):
        print(f"  {k:<40}{s[k] / n * 1e3:8.2f}{(s[k] - b.get(k, 0.0) * ns / nb) / n * 1e3:8.2f}")


def merge_cost(n_files: int) -> None:
    """CPU per file of coffea's accumulation of ``n_files`` one-chunk provenance outputs."""
    from coffea.processor.accumulator import accumulate

    from processors.base import Provenance

    def outputs():
        for i in range(n_files):
            p = Provenance("na64mu_invisible", "sel", "sha", "sel.yaml", "tag", "v")
            p.events_processed, p.chunks = 940, 1
            p.files = {f"/data/run1001/file{i:06d}.root": {"events": 940, "chunks": 1, "data": True, "run": 1001,
                                                           "spill_events": {1: 470, 2: 470}}}
            yield {"bench": {"provenance": p}}

    c = time.process_time()
    out = accumulate(outputs())
    t = time.process_time() - c
    print(f"accumulation of {n_files} one-file outputs: {t:.2f} s CPU, {t / n_files * 1e3:.3f} ms per file "
          f"({len(out['bench']['provenance'].files)} file records)")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "na64reco-many-files")
    ap.add_argument("--files", type=int, default=100)
    ap.add_argument("--mot", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--profile", type=Path, default=None)
    ap.add_argument("--data", action="store_true", help="files without truth (data-like)")
    ap.add_argument("--pieces", action="store_true", help="only the CPU time of each read per file")
    ap.add_argument("--steps", action="store_true", help="only the CPU time per file of each step of a run")
    ap.add_argument("--merge", type=int, default=0, metavar="N",
                    help="only the CPU time per file of merging N one-file outputs")
    args = ap.parse_args(argv)
    if args.merge:
        merge_cost(args.merge)
        return 0

    from na64reco.runner import RunOptions, run_files

    small, big = make_files(args.workdir, args.files, args.mot, truth=not args.data)
    opts = RunOptions("na64mu_invisible", check_cache=False)
    cache_dir = tempfile.mkdtemp(prefix="bench-check-cache-")  # (not the user's cache)
    os.environ["NA64RECO_CACHE_DIR"] = cache_dir
    again = RunOptions("na64mu_invisible")
    if args.pieces:
        pieces(small)
        return 0
    if args.steps:
        print("first run (every file checked):")
        steps(small, big, opts)
        print(f"run again (the cache holds {fill_cache(small + [big], again)} of the {len(small) + 1} files):")
        steps(small, big, again)
        return 0
    run_files({"bench": small[:2]}, opts)  # warm-up: imports, numba JIT, setup and conditions caches

    n = len(small)
    print(f"run_files, iterative, na64mu_invisible, {'data' if args.data else 'simulation'} files "
          f"(min of {args.repeat}; wall and CPU time of this process)")
    for label, run_opts in (("first run (every file checked)", opts), ("run again (checks from the cache)", again)):
        if run_opts is again:
            held = fill_cache(small + [big], again)
            print(f"the check cache {cache_dir} holds {held} of the {n + 1} files")
        (t1, c1, n1), (tn, cn, nn), (tb, cb, nb) = (timed(f, run_opts, args.repeat) for f in (small[:1], small, [big]))
        print(f"{label}:")
        print(f"  1 file   : {n1:7d} events {t1:7.2f} s wall {c1:7.2f} s CPU")
        print(f"  {n} files: {nn:7d} events {tn:7.2f} s wall {cn:7.2f} s CPU ({nn / cn:.0f} events/s CPU)")
        print(f"  1 big    : {nb:7d} events {tb:7.2f} s wall {cb:7.2f} s CPU ({nb / cb:.0f} events/s CPU)")
        print(f"  per-file overhead (t({n} files) - t(big, scaled to the same events)) / {n - 1}: "
              f"{(tn - tb * nn / nb) / (n - 1) * 1e3:.1f} ms wall, {(cn - cb * nn / nb) / (n - 1) * 1e3:.1f} ms CPU")
        print(f"  per-file cost, events included (t({n} files) - t(1 file)) / {n - 1}: "
              f"{(tn - t1) / (n - 1) * 1e3:.1f} ms wall, {(cn - c1) / (n - 1) * 1e3:.1f} ms CPU")

    if args.profile:
        import cProfile

        prof = cProfile.Profile()
        prof.enable()
        run_files({"bench": small}, opts)
        prof.disable()
        prof.dump_stats(args.profile)
        print(f"profile of one {n}-file run: {args.profile}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
