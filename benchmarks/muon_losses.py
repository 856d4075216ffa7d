"""The muon's energy losses in the ECAL and the HCAL by process, and what the simulator makes of them.

Prints, for a 160 GeV muon: a and b by process in lead and iron (``na64reco.physics.muon_losses``),
the critical energies against PDG's, the mean number of discrete losses above the thresholds that
matter (the ECAL MIP cut, the signal box), and, from a simulated beam-muon run, the fraction of muons
with E_ECAL above 2 GeV against the table's prediction.  ``--plot`` draws dN/dln v by process and
the simulated E_ECAL.

    python benchmarks/muon_losses.py --events 20000 --seed 1 --plot docs/images/muon_losses.png
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import hepunits as u
import numpy as np

from na64reco import constants
from na64reco.geometry import load_setup
from na64reco.io.raw import open_raw
from na64reco.physics import muon_losses as ml
from na64reco.sim import simulate
from na64reco.sim.params import load_sim_params

PROCESSES = ("knock_on", "brems", "pair")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=20000, help="simulated beam muons (default 20000)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--plot", type=Path, default=None, help="write the figure here (PNG)")
    args = ap.parse_args(argv)

    e = 160 * u.GeV
    print("## a and b of a 160 GeV muon (MeV cm2/g, 1e-6 cm2/g)\n")
    print("| absorber | a (Bethe) | b_brems | b_pair | b_nucl (not computed) | b | E_c ours | E_c PDG |")
    print("|---|---|---|---|---|---|---|---|")
    for ab, pdg in ((ml.LEAD, 141.0), (ml.IRON, 347.0)):
        bb, bp = ml.energy_loss_b(ab, e, "brems"), ml.energy_loss_b(ab, e, "pair")
        bn = constants.MUON_PHOTONUCLEAR_B / (u.cm2 / u.g)
        print(f"| {ab.name} | {ml.ionisation(ab, e):.3f} | {bb * 1e6:.2f} | {bp * 1e6:.2f} | {bn * 1e6:.2f} | "
              f"{(bb + bp + bn) * 1e6:.2f} | {ml.critical_energy(ab) / u.GeV:.0f} GeV | {pdg:.0f} GeV |")

    prm = load_sim_params(load_setup("na64mu"))
    x = prm.ecal_lead_g_cm2
    print(f"\n## Discrete losses of a 160 GeV muon in the ECAL ({x:g} g/cm2 of lead), mean number per muon\n")
    thresholds = ((f"v > {prm.radiative_v_min:g} (simulated)", prm.radiative_v_min),
                  ("E > 1.6 GeV (ECAL MIP cut)", 0.01), ("E > 20 GeV", 0.125), ("v > 0.5 (signal box)", 0.5))
    print("| losses | " + " | ".join(PROCESSES) + " | all |")
    print("|---|" + "---|" * (len(PROCESSES) + 1))
    for label, v0 in thresholds:
        row = [ml.loss_spectrum("lead", e, x, 1e-3, (p,)).mean_number(v0) for p in PROCESSES]
        print(f"| {label} | " + " | ".join(f"{r:.2e}" for r in row) + f" | {sum(row):.2e} |")

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "beam.root"
        simulate("na64mu", args.events, args.seed, 1001, path, process="beam", trigger="calibration")
        with open_raw(path) as f:
            t = f.truth()
        e_ecal = np.asarray(t["e_ecal"])
        p_in = np.asarray(t["p_in"])
    table = prm.ecal_losses.table(prm.beam_energy)
    n = e_ecal.size
    print("\n## Simulated beam muons (truth E_ECAL) against the table\n")
    print("| E_ECAL above | simulated | table: 1 - exp(-N(v > (E - 0.4 GeV) / p_in)) |")
    print("|---|---|---|")
    for thr in (2.0, 5.0, 20.0):
        sim = float(np.mean(e_ecal > thr))
        pred = float(np.mean(1 - np.exp(-np.array([table.mean_number((thr - 0.4) / p) for p in p_in]))))
        print(f"| {thr:g} GeV | {sim:.4f} +- {np.sqrt(sim * (1 - sim) / n):.4f} | {pred:.4f} |")

    if args.plot is not None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4.2))
        for p in PROCESSES:
            tab = ml.loss_spectrum("lead", e, x, 1e-3, (p,))
            a1.plot(tab.v, tab.v * tab.dndv, label=p.replace("_", "-"))
        a1.plot(table.v, table.v * table.dndv, "k--", label="all")
        a1.set(xscale="log", yscale="log", xlabel="v = E_loss / E", ylabel="dN / d ln v per muon",
               title=f"160 GeV muon, {x:g} g/cm2 of lead", ylim=(1e-5, 1))
        a1.legend()
        a2.hist(e_ecal, bins=np.logspace(-1, np.log10(200), 80), histtype="step", color="k")
        a2.axvline(2.0, color="r", ls=":", label="ECAL MIP cut 2 GeV")
        a2.set(xscale="log", yscale="log", xlabel="E_ECAL (GeV, truth)", ylabel="muons",
               title=f"{n} simulated beam muons")
        a2.legend()
        fig.tight_layout()
        args.plot.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(args.plot, dpi=110)
        print(f"\nwrote {args.plot}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
