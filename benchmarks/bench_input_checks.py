"""Cost of the runner's per-file checks before a run, and what the event-order and
same-events checks (``RawFile.event_numbers``, ``na64reco.io.distinct``) add to them.

    python benchmarks/bench_input_checks.py --file RAW.root [--small SMALL.root] [--rounds 7]

In one process, alternating round by round (CPU time, minimum over the rounds):

* ``check before``: what ``check_files`` did per file before (open with the ``events``
  structure, the spills tree, the cluster edges, the checksum blocks);
* ``event numbers``: ``RawFile.event_numbers()`` (``events.run`` and ``events.event``
  read, verified against their checksums, order checked) on the opened file;
* ``distinct``: ``DistinctFiles.add`` of the file (the numbers given);
* ``plain read``: a plain uproot read of every branch of ``events`` (the baseline of
  ``bench_checksum.py``).
"""

from __future__ import annotations

import argparse
import time

import uproot

from na64reco.file_check import TREE, cluster_edges
from na64reco.io.distinct import DistinctFiles
from na64reco.io.raw import event_branches, open_raw


def _cpu(fn):
    t0 = time.process_time()
    fn()
    return time.process_time() - t0


def measure(path, rounds: int) -> dict[str, float]:
    best = {k: float("inf") for k in ("check before", "event numbers", "distinct", "plain read")}
    held = {}

    def check_before():
        raw = held["raw"] = open_raw(path, setup=None, structure=(TREE,))
        raw.spills()
        cluster_edges(raw)
        raw.blocks(TREE)

    def numbers():
        held["numbers"] = held["raw"].event_numbers()

    def distinct():
        DistinctFiles("bench").add(path, held["raw"], held["numbers"])

    def plain():
        with uproot.open(path) as f:
            f["events"].arrays(event_branches())

    for _ in range(rounds):
        for name, fn in (("plain read", plain), ("check before", check_before), ("event numbers", numbers),
                         ("distinct", distinct)):
            best[name] = min(best[name], _cpu(fn))
        held.pop("raw").close()
    return best


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--file", required=True)
    ap.add_argument("--small", help="a small file too (per-file overhead)")
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args(argv)
    for path in [args.file, *([args.small] if args.small else [])]:
        with open_raw(path) as raw:
            n = raw.n_events
        measure(path, 1)  # warm-up (imports, page cache)
        best = measure(path, args.rounds)
        plain = best["plain read"]
        print(f"{path} ({n} events), CPU ms, min of {args.rounds} alternated rounds:")
        for name, t in best.items():
            print(f"  {name:<14}{1e3 * t:9.2f} ms  ({t / plain:.4f} x plain read)")
        added = best["event numbers"] + best["distinct"]
        print(f"  added per file: {1e3 * added:.2f} ms = {added / best['check before']:.2f} x the check before, "
              f"{added / plain:.4f} x the plain read")


if __name__ == "__main__":
    main()
