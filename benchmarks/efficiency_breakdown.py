"""NA64mu signal efficiency as a product of named effects, versus mass, for both run periods.

    python benchmarks/efficiency_breakdown.py [--events 3000] [--mixture 30000] [--output docs/efficiency.md]

For each run period (2022-like run 1001, 2023-like run 10001; calib/setups/na64mu.yaml
``periods``) a beam-mixture sample measures the trigger rate per muon, which with the
setup's beam intensity and ``trigger.dead_time_per_event`` gives the DAQ live fraction
(:func:`na64reco.efficiency.daq_live_fraction`).  Signal samples at each mass run through
the ``na64mu_invisible`` processor; :func:`na64reco.efficiency.efficiency_breakdown`
splits the efficiency into the trigger, each cut (relative to the previous one; the
signal box last) and the live time.  The last rows give the efficiency per signal
interaction, the analytic x > 0.5 acceptance, and their ratio -- the efficiency relative
to the x > 0.5 cross section -- beside the ~0.04 that the published 2022 limit implies
(see docs/periods.md and the issue tracker's issue 9).
"""

from __future__ import annotations

import argparse
import math
import tempfile
from pathlib import Path

from hepunits import MeV

from na64reco.efficiency import daq_live_fraction, efficiency_breakdown, signal_efficiency
from na64reco.geometry import load_setup
from na64reco.io.raw import open_raw
from na64reco.sim.generate import simulate

PERIODS = {"2022": 1001, "2023": 10001}
MASSES_MEV = (1.0, 10.0, 100.0, 1000.0)
PUBLISHED_IMPLIED = 0.04  # efficiency x acceptance relative to the x > 0.5 cross section (IWW), issue 9


def trigger_rate(run: int, n_mot: int, workdir: Path) -> float:
    path = workdir / f"mixture_{run}.root"
    simulate("na64mu", n_mot, 7, run, path)
    with open_raw(path) as raw:
        spills = raw.spills()
    return float(spills["n_triggered"].sum()) / float(spills["n_beam"].sum())


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=3000, help="signal interactions per mass and period")
    ap.add_argument("--mixture", type=int, default=30_000, help="beam-mixture MOT per period (trigger rate)")
    ap.add_argument("--output", help="write the markdown tables to this file")
    args = ap.parse_args(argv)
    lines = [f"Made with `python benchmarks/efficiency_breakdown.py --events {args.events} "
             f"--mixture {args.mixture}`.", ""]
    with tempfile.TemporaryDirectory() as tmp:
        for period, run in PERIODS.items():
            setup = load_setup("na64mu", run=run)
            rate = trigger_rate(run, args.mixture, Path(tmp))
            n_trig = rate * args.mixture
            live = daq_live_fraction(setup, rate)
            table = signal_efficiency("na64mu", [m * MeV for m in MASSES_MEV], args.events, run=run,
                                      workdir=Path(tmp) / period)
            breakdowns = [efficiency_breakdown(p, live) for p in table.points]
            lines += [f"### {period}-like period (run {run}): trigger rate {rate:.2e} per muon "
                      f"(+- {math.sqrt(n_trig) / args.mixture:.1e}), DAQ live fraction {live:.3f} "
                      f"(dead time {setup.trigger.dead_time / 1000:g} us per trigger, assumed)", "",
                      "| effect | " + " | ".join(f"m = {m:g} MeV" for m in MASSES_MEV) + " |",
                      "|---|" + "---|" * len(MASSES_MEV)]
            for i, (name, _) in enumerate(breakdowns[0]):
                lines.append(f"| {name} | " + " | ".join(f"{b[i][1]:.3f}" for b in breakdowns) + " |")
            lines.append("| **efficiency per signal interaction** | " + " | ".join(
                f"**{p.efficiency * live:.4f}** +- {p.error * live:.4f}" for p in table.points) + " |")
            lines.append("| x > 0.5 acceptance (IWW, analytic) | "
                         + " | ".join(f"{p.acceptance:.3f}" for p in table.points) + " |")
            lines.append("| efficiency relative to the x > 0.5 cross section | " + " | ".join(
                f"{p.efficiency * live / p.acceptance:.3f}" for p in table.points) + " |")
            lines.append("| published-implied (2022) | " + " | ".join(
                f"~{PUBLISHED_IMPLIED:g}" for _ in table.points) + " |")
            lines.append("")
    text = "\n".join(lines)
    print(text)
    if args.output:
        Path(args.output).write_text(text + "\n")


if __name__ == "__main__":
    main()
