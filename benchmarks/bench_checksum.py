"""Cost of the raw format's content checksums, as a ratio to the plain read.

    python benchmarks/bench_checksum.py [--file RAW.root | --events 100000] [--repeat 5]

Baseline: a plain uproot read of every branch of the ``events`` tree, whole checksum
blocks at a time.  Measured in the same process: the same read followed by the
verification of every block (``na64reco.io.checksum``), and the checksum computation
alone.  CPU time, minimum of the repeats.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import uproot

from na64reco.io.raw import event_branches, open_raw


def _best(fn, repeat):
    best = float("inf")
    for _ in range(repeat):
        t0 = time.process_time()
        fn()
        best = min(best, time.process_time() - t0)
    return best


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--file", help="raw file (default: simulate --events NA64mu beam particles)")
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(args.file) if args.file else Path(tmp) / "bench.root"
        if not args.file:
            from na64reco.sim.generate import simulate

            simulate("na64mu", args.events, 1, 1001, path)
        raw = open_raw(path)
        blocks = raw.blocks("events")
        bounds = list(zip(blocks.starts.tolist(), blocks.stops.tolist(), strict=True))
        branches = event_branches()
        with uproot.open(path) as f:
            tree = f["events"]
            held = {}

            def read():
                held["arrays"] = [tree.arrays(branches, entry_start=a, entry_stop=b) for a, b in bounds]

            def checksums():
                for (a, b), arrays in zip(bounds, held["arrays"], strict=True):
                    blocks.verify(arrays, a, b, path)

            def read_and_verify():
                read()
                checksums()

            t_read = _best(read, args.repeat)
            t_sum = _best(checksums, args.repeat)
            t_both = _best(read_and_verify, args.repeat)
        n = raw.n_events
        print(f"file {path.name}: {n} events in {len(bounds)} checksum blocks, "
              f"{path.stat().st_size / n:.0f} B/event on disk")
        print(f"plain read              {n / t_read:12,.0f} events/s   1.00")
        print(f"read + verify           {n / t_both:12,.0f} events/s   {t_both / t_read:.2f}x the read")
        print(f"checksums alone         {n / t_sum:12,.0f} events/s   {t_sum / t_read:.3f}x the read")


if __name__ == "__main__":
    main()
