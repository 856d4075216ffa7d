"""Single-bit flips in a raw file: how many fail cleanly, change nothing, or change a
result silently (the last must be zero).

    python benchmarks/bench_bitflips.py [--flips 1000] [--events 40000] [--seed 1]

Simulates a small NA64mu file (with truth), runs the ``na64mu_invisible`` processor on
it, then on copies with one bit flipped each, drawn evenly over the regions of the
file (baskets and headers of every tree, the metadata, the rest), and compares each
run's cut-flow, histograms and exposure with the clean one.
"""

from __future__ import annotations

import argparse
import collections
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from bitflip import classify, draw_flips, flipped_copy, regions, result_of  # noqa: E402

from na64reco.runner import RunOptions, run_files  # noqa: E402
from na64reco.sim.generate import simulate  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--flips", type=int, default=1000)
    ap.add_argument("--events", type=int, default=40_000)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args(argv)

    def run(path):
        return run_files({"d": [str(path)]}, RunOptions("na64mu_invisible", status=False, chunksize=400))

    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "clean.root"
        simulate("na64mu", args.events, args.seed, 1001, src, chunk_size=10_000)
        size = src.stat().st_size
        kind, clean = result_of(src, run)
        assert kind == "result", clean
        n_regions = len(regions(src))
        flips = draw_flips(src, -(-args.flips // n_regions), np.random.default_rng(args.seed))[: args.flips]
        per_region = collections.defaultdict(collections.Counter)
        t0 = time.time()
        for region, bit in flips:
            dst = flipped_copy(src, Path(tmp) / "flipped.root", bit)
            try:
                kind, value = result_of(dst, run)
                outcome = classify(kind, value, dst, clean)
            except Exception as exc:  # an unhandled exception is a failure of its own
                outcome = f"unhandled {type(exc).__name__}"
            per_region[region][outcome] += 1
        total = sum(per_region.values(), collections.Counter())
    print(f"{len(flips)} single-bit flips in a {size} B file "
          f"({time.time() - t0:.0f} s)")
    outcomes = sorted({o for c in per_region.values() for o in c})
    print(f"{'region':<22}" + "".join(f"{o:>16}" for o in outcomes))
    for region, c in per_region.items():
        print(f"{region:<22}" + "".join(f"{c[o]:>16}" for o in outcomes))
    print(f"{'total':<22}" + "".join(f"{total[o]:>16}" for o in outcomes))
    silent = sum(n for o, n in total.items() if o not in ("error", "identical"))
    print(f"silent changes or unclear failures: {silent}")
    return 1 if silent else 0


if __name__ == "__main__":
    sys.exit(main())
