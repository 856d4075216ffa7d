"""Picture of simulated NA64mu distributions (truth and raw-level), for the docs.

    python benchmarks/plot_simulation.py [--events 50000] [--output docs/images/simulation.png]

Simulates a beam mixture and a Z' signal sample, then draws: the true incoming momentum,
the true ECAL deposit of beam muons (MIP peak and radiative tail) against the setup's
MIP most probable value, the true HCAL deposit, the signal's x = E_Z'/E_0 against the
IWW shape of na64reco.physics, the true p_out of beam and signal, and the raw ADC
pulse of one ECAL digit.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import mplhep
import numpy as np

from na64reco.constants import MUON_MASS
from na64reco.geometry import load_setup
from na64reco.io.raw import PROCESSES, open_raw
from na64reco.physics.darkbrem import x_pdf
from na64reco.sim.generate import simulate
from na64reco.units import GeV


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=50_000)
    ap.add_argument("--mass", type=float, default=0.1, help="Z' mass, GeV")
    ap.add_argument("--output", default="docs/images/simulation.png")
    args = ap.parse_args()
    setup = load_setup("na64mu", run=1001)
    tmp = Path(tempfile.mkdtemp(prefix="na64sim-"))
    simulate(setup, args.events, seed=11, run=1001, output=tmp / "mix.root")
    simulate(setup, args.events // 4, seed=12, run=1001, output=tmp / "sig.root", process="signal",
             mass=args.mass * GeV)
    mix, sig = open_raw(tmp / "mix.root"), open_raw(tmp / "sig.root")
    tm, ts = mix.truth(), sig.truth()
    beam = tm["process"] == PROCESSES["beam"]

    mplhep.style.use("CMS")
    fig, ax = plt.subplots(2, 3, figsize=(22, 12))
    a = ax[0, 0]
    a.hist(tm["p_in"][beam], bins=100, range=(120, 200), histtype="step", lw=2)
    mean, std = np.mean(tm["p_in"][beam]), np.std(tm["p_in"][beam])
    a.set_xlabel(r"true $p_{in}$ [GeV]")
    a.set_title(f"beam: mean {mean:.1f} GeV, rms/mean {std / mean:.3f} "
                f"(set {setup.beam.momentum_spread:.3f})", fontsize=14)
    a = ax[0, 1]
    e = tm["e_ecal"][beam]
    a.hist(e, bins=np.logspace(-1, 2.2, 120), histtype="step", lw=2)
    a.axvline(setup.calorimeters["ECAL"].mip_mpv / GeV, color="r", ls="--", label="setup MIP MPV")
    a.set_xscale("log")
    a.set_yscale("log")
    a.set_xlabel(r"true $E_{ECAL}$ of beam muons [GeV]")
    a.legend(fontsize=14)
    a.set_title(f"P(E > 3.5 GeV) = {np.mean(e > 3.5):.4f}", fontsize=14)
    a = ax[0, 2]
    a.hist(tm["e_hcal"][beam], bins=120, range=(0, 30), histtype="step", lw=2, label="beam muons")
    a.set_xlabel(r"true $E_{HCAL}$ (4 modules) [GeV]")
    a.legend(fontsize=14)
    a = ax[1, 0]
    x = ts["x"]
    counts, edges = np.histogram(x, bins=50, range=(0, 1))
    centres = 0.5 * (edges[1:] + edges[:-1])
    a.errorbar(centres, counts, yerr=np.sqrt(counts), fmt="o", label="simulated (written events)")
    e0 = float(np.mean(ts["p_in"])) * GeV
    shape = x_pdf(centres, e0, args.mass * GeV, MUON_MASS)
    a.plot(centres, shape / shape.sum() * counts.sum(), "r-", label="IWW $d\\sigma/dx$ shape")
    a.set_xlabel(r"signal $x = E_{Z'}/E_0$")
    a.legend(fontsize=14)
    a.set_title(f"Z' m = {args.mass:g} GeV (trigger acceptance not unfolded)", fontsize=14)
    a = ax[1, 1]
    a.hist(tm["p_out"][beam], bins=80, range=(0, 200), histtype="step", lw=2, label="beam muons")
    a.hist(ts["p_out"], bins=80, range=(0, 200), histtype="step", lw=2, label="Z' signal")
    a.axvline(80, color="k", ls=":", label="signal box edge")
    a.set_yscale("log")
    a.set_xlabel(r"true $p_{out}$ [GeV]")
    a.legend(fontsize=14)
    a = ax[1, 2]
    ev = mix.events(0, 200)
    ecal = setup.calorimeters["ECAL"].id
    for i in range(200):
        sel = np.asarray(ev.calo.det[i]) == ecal
        if sel.any():
            adc = np.asarray(ev.calo.adc[i])[sel]
            k = int(np.argmax(adc.max(axis=1)))
            t = np.arange(adc.shape[1]) * setup.msadc.sample_period
            a.step(t, adc[k], where="mid", lw=2, label=f"event {int(ev.event[i])}, ECAL channel "
                   f"{int(np.asarray(ev.calo.chan[i])[sel][k])}")
            break
    a.set_xlabel("time [ns]")
    a.set_ylabel("ADC counts")
    a.legend(fontsize=12)
    a.set_title("raw MSADC samples (even/odd pedestals, 12.5 ns)", fontsize=14)
    fig.suptitle(f"na64reco fast simulation, NA64mu: {args.events} muons on target", fontsize=18)
    fig.tight_layout()
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.output, dpi=70)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
