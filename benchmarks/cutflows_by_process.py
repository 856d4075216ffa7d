"""Cut-flow of the signal and of every background process, per setup (a report, not a test).

    python benchmarks/cutflows_by_process.py [--setup na64mu] [--events 5000] [--output docs/cutflows.md]

Each process is simulated alone (forced) with the same number of beam particles, the
invisible-mode processor runs over all of them (iterative executor, one dataset per
process), and the script prints, per process: the triggered fraction, the cumulative
efficiency after every cut, the fraction in the signal box, and the expected count for
the published exposure (NA64mu: 1.98e10 MOT; NA64e: 9e11 EOT) from the process's
probability per beam particle (``simulation.mixture`` of the setup; for the signal, the
truth weight of ``--coupling``).  Efficiencies are relative to the simulated beam
particles, so the trigger is included.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from na64reco.geometry import load_setup
from na64reco.runner import RunOptions, run_files
from na64reco.sim.biasing import FORCED_PROCESSES, species_per_mot
from na64reco.sim.generate import simulate
from na64reco.sim.params import load_sim_params
from na64reco.stats.limits import ZERO_OBSERVED_UL90 as UL0
from na64reco.units import GeV

EXPOSURE = {"na64mu": 1.98e10, "na64e": 9e11}  # NA64.md: published MOT / EOT
PROCESSES = {
    "na64mu": ("beam", "signal", "kdecay", "pidecay", "hadron", "punchthrough", "dimuon", "pileup", "halo"),
    "na64e": ("beam", "signal", "hadron"),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--setup", choices=tuple(PROCESSES), default="na64mu")
    ap.add_argument("--events", type=int, default=5000, help="beam particles per process")
    ap.add_argument("--mass", type=float, default=None, help="signal mass in GeV (default 0.1 / 0.01)")
    ap.add_argument("--output", default=None, help="append the markdown table to this file")
    args = ap.parse_args()
    setup = load_setup(args.setup, run=1001)
    mass = args.mass or (0.1 if args.setup == "na64mu" else 0.01)
    mixture = load_sim_params(setup).mixture
    tmp = Path(tempfile.mkdtemp(prefix="cutflows-"))
    fileset, probability = {}, {}
    for i, proc in enumerate(PROCESSES[args.setup]):
        path = tmp / f"{proc}.root"
        simulate(setup, args.events, seed=100 + i, run=1001, output=path, process=proc,
                 mass=mass * GeV if proc == "signal" else None)
        fileset[proc] = [str(path)]
        probability[proc] = None if proc == "signal" else (
            1.0 - sum(mixture.values()) if proc == "beam" else mixture[proc])
    out = run_files(fileset, RunOptions(f"{args.setup}_invisible", executor="iterative"))
    cuts = [r["cut"] for r in out["beam"]["cutflow"].rows()]
    exposure = EXPOSURE[args.setup]
    header = ["cut"] + list(fileset)
    lines = [f"### {args.setup}: cumulative efficiency per simulated beam particle "
             f"({args.events} per process; signal m = {mass:g} GeV)", "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    table = {}
    for proc, acc in out.items():
        rows = acc["cutflow"].rows()
        n_beam = acc["provenance"].n_beam
        table[proc] = [r["sumw"] / rows[0]["sumw"] * rows[0]["events"] / n_beam if rows[0]["sumw"] else 0.0
                       for r in rows]
    for k, cut in enumerate(cuts):
        lines.append("| " + " | ".join([cut] + [f"{table[p][k]:.3g}" for p in fileset]) + " |")
    expected = []
    for proc in fileset:
        acc = out[proc]
        last = acc["cutflow"].rows()[-1]
        n_beam = acc["provenance"].n_beam
        if proc == "signal":
            n_exp = last["sumw"] / n_beam * exposure  # truth weight = expected events per MOT
            err = last["sumw_err"] / n_beam * exposure
        elif args.setup == "na64mu" and proc in FORCED_PROCESSES:  # weighted (biased) sample
            first = acc["cutflow"].rows()[0]
            scale = species_per_mot(setup, proc) / n_beam * exposure
            mean_w = first["sumw"] / first["events"] if first["events"] else 0.0
            n_exp = last["sumw"] * scale
            err = (last["sumw_err"] if last["events"] else UL0 * mean_w) * scale
        else:
            frac, n_in = last["events"] / n_beam, last["events"]
            n_exp = frac * probability[proc] * exposure
            err = (np.sqrt(n_in) if n_in else 2.3) / n_beam * probability[proc] * exposure
        expected.append(f"{n_exp:.3g} +- {err:.2g}" if last["events"] else f"< {err:.2g} (90% CL)")
    unit = "MOT" if args.setup == "na64mu" else "EOT"
    lines.append(f"| expected in box for {exposure:.3g} {unit} | "
                 + " | ".join(expected) + " |")
    lines.append("")
    text = "\n".join(lines)
    print(text)
    if args.output:
        with open(args.output, "a") as fh:
            fh.write(text + "\n")


if __name__ == "__main__":
    main()
