"""Minor page faults and system CPU time per round of the read, of ``reconstruct`` and of the chain.

    python benchmarks/bench_page_faults.py RAW.root [--rounds 5] [--chunk 50000] [--retain]

Each round, in one process (the first round of each, before the rounds, warms up):
* ``read``: uproot's ``arrays()`` of the whole ``events`` tree (the plain read of the other benchmarks);
* ``reconstruct``: ``reconstruct`` over the file's chunks of ``--chunk`` events (read into memory first);
* ``chain``: ``run_files`` with the iterative executor (``na64reco run``'s path, na64mu_invisible).

Printed per step: the median over the rounds of the minor page faults (``ru_minflt``: memory the process
touches for the first time, or again after giving it back to the system), of the user and the system CPU
seconds (``getrusage``).  Fault counts do not depend on the host's load, unlike times.  ``--retain``:
first keep freed memory in the heap (:func:`na64reco.sim.heap.retain_freed_memory`, what ``na64reco
simulate`` does).  A figure, not a test (docs/performance.md, "Where the time goes, by compiled kernel").
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("file")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--chunk", type=int, default=50_000)
    ap.add_argument("--retain", action="store_true")
    args = ap.parse_args()
    if args.retain:
        from na64reco.sim.heap import retain_freed_memory

        print(f"freed memory kept in the heap: {retain_freed_memory()}")
    os.environ.setdefault("NUMBA_CACHE_DIR", str(Path(__file__).resolve().parents[1] / ".numba_cache"))
    import uproot

    from na64reco.conditions import load_conditions
    from na64reco.geometry import load_setup
    from na64reco.io.raw import assemble_events, event_branches, open_raw
    from na64reco.reco.event import reconstruct
    from na64reco.runner import RunOptions, run_files

    path = args.file
    with open_raw(path) as raw:
        setup = load_setup(raw.setup, run=raw.run)
        conds = load_conditions(setup, raw.run)
    with uproot.open(path) as f:
        chunks = [assemble_events(a, path) for a in f["events"].iterate(event_branches(), step_size=args.chunk)]
    opts = RunOptions("na64mu_invisible", executor="iterative", chunksize=args.chunk)

    def read():
        with uproot.open(path) as f:
            f["events"].arrays(library="ak")

    def reco():
        for events in chunks:
            reconstruct(events, setup, conds)

    steps = {"read": read, "reconstruct": reco, "chain": lambda: run_files({"faults": [path]}, opts)}
    for fn in steps.values():
        fn()
    seen = {k: [] for k in steps}
    for _ in range(args.rounds):
        for name, fn in steps.items():
            r0 = resource.getrusage(resource.RUSAGE_SELF)
            fn()
            r1 = resource.getrusage(resource.RUSAGE_SELF)
            seen[name].append((r1.ru_minflt - r0.ru_minflt, r1.ru_utime - r0.ru_utime, r1.ru_stime - r0.ru_stime))
    n = sum(len(c) for c in chunks)
    print(f"{path}: {n} events, chunks of {args.chunk}; medians over {args.rounds} rounds")
    for name, rows in seen.items():
        faults, user, system = (statistics.median(r[i] for r in rows) for i in range(3))
        print(f"  {name:12s} {faults:9.0f} minor faults  user {user:6.3f} s  system {system:6.3f} s")


if __name__ == "__main__":
    main()
