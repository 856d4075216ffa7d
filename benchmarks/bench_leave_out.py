"""What leaving out the optional reco fields saves: the calorimeter stage and the NA64mu chain, in ONE process.

    python benchmarks/bench_leave_out.py --file RAW.root [--rounds 11] [--slice 5000] [--no-chain]

``reconstruct(leave_out=...)`` does not compute :data:`na64reco.reco.event.OPTIONAL_FIELDS` (today the
ECAL shower chi2) and the processors leave out those they read nowhere (``fields_left_out()``; the NA64mu
processor: the shower chi2 of a muon's MIP).  Alternated round by round (the order swapped every other
round), minimum CPU time and the median of each round's own difference or ratio:

* the calorimeter stage (``reconstruct_calo``) of every event of ``--file`` in slices of ``--slice``
  events (the processors' ``RECO_BATCH``), with and without the shower chi2;
* unless ``--no-chain``: ``run_files`` of the file (iterative, chunks of 50k) with the NA64mu processor
  as it is and with a subclass that leaves nothing out; their cut-flows, regions and histograms are
  compared first (the script stops if they differ).
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from na64reco.conditions import load_conditions
from na64reco.geometry import load_setup
from na64reco.io.raw import open_raw
from na64reco.reco.calo import reconstruct_calo
from na64reco.runner import RunOptions, run_files
from processors.na64mu_invisible import Processor


class Everything(Processor):
    """The NA64mu processor computing every optional field."""

    def fields_left_out(self):
        return ()


def _alternated(a, b, rounds: int):
    """CPU seconds of ``a()`` and ``b()`` over ``rounds`` rounds, the order swapped every other round."""
    ta, tb = [], []
    for i in range(rounds):
        for f, out in ((a, ta), (b, tb)) if i % 2 == 0 else ((b, tb), (a, ta)):
            c = time.process_time()
            f()
            out.append(time.process_time() - c)
    return np.array(ta), np.array(tb)


def _summary(outputs) -> tuple:
    out = outputs["mc"] if "mc" in outputs else next(iter(outputs.values()))
    hists = tuple((name, out[g][name].values(flow=True).tobytes()) for g in ("hists", "nminus1") for name in out[g])
    return (tuple(out["cutflow"].n), tuple(out["cutflow"].sumw), tuple((k, v.n) for k, v in out["regions"].items()),
            hists)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--file", required=True)
    ap.add_argument("--rounds", type=int, default=11)
    ap.add_argument("--slice", type=int, default=5000)
    ap.add_argument("--no-chain", action="store_true")
    args = ap.parse_args()
    with open_raw(args.file) as raw:
        setup = load_setup(raw.setup, run=raw.run)
        conditions = load_conditions(setup, raw.run).scoped("calorimeter")
        events = raw.events()  # (a simulated file: the stage refuses a data file's events)
    slices = [events[a:a + args.slice] for a in range(0, len(events), args.slice)]

    def calo(shower):
        return lambda: [reconstruct_calo(s, setup, conditions, shower_chi2=shower) for s in slices]

    calo(True)()
    calo(False)()
    with_chi2, without = _alternated(calo(True), calo(False), args.rounds)
    print(f"{args.file}: {len(events)} events, slices of {args.slice}; {args.rounds} alternated rounds, CPU")
    print(f"calorimeter stage with the shower chi2 {with_chi2.min() * 1e3:.1f} ms, without {without.min() * 1e3:.1f} "
          f"ms ({with_chi2.min() / without.min():.3f}x at the minima); paired median difference "
          f"{statistics.median(with_chi2 - without) * 1e3:.1f} ms (rounds {np.min(with_chi2 - without) * 1e3:.1f} to "
          f"{np.max(with_chi2 - without) * 1e3:.1f})")
    if args.no_chain:
        return
    fileset = {"mc": [args.file]}
    opts = RunOptions("na64mu_invisible", chunksize=50_000)
    left, full = (run_files(fileset, opts, processor_instance=p()) for p in (Processor, Everything))
    if _summary(left) != _summary(full):
        raise SystemExit("the outputs differ with the optional fields left out")
    print(f"NA64mu processor leaves out {Processor().fields_left_out()}: cut-flow, regions and histograms identical")
    everything, default = _alternated(lambda: run_files(fileset, opts, processor_instance=Everything()),
                                      lambda: run_files(fileset, opts, processor_instance=Processor()), args.rounds)
    ratios = everything / default
    print(f"chain computing every field {everything.min():.3f} s, with the processor's fields left out "
          f"{default.min():.3f} s: {everything.min() / default.min():.3f}x at the minima, paired median "
          f"{statistics.median(ratios):.3f}x (rounds {ratios.min():.3f}-{ratios.max():.3f})")


if __name__ == "__main__":
    main()
