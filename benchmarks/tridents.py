"""Muon tridents mu N -> mu N mu+ mu- in the ECAL: both parts' rates and v spectra (what the simulator draws).

Prints the number of tridents per 160 GeV muon crossing the ECAL's lead (:mod:`na64reco.physics.tridents`):
the spacelike part (Kelner, Kokoulin, Petrukhin's direct muon pair production) and the timelike part (the
virtual photon emitted as a dark photon of its mass with epsilon = 1, times the muon loop's spectral
density), above the pair energy fractions that matter: the simulated spacelike range (``dimuon.v_min``),
the forced region of the ``dimuon`` process (``biasing.v_min``), 0.6 (the old toy's end) and 0.9; the
weight of a forced ``dimuon`` event; the spacelike part's energy loss against the e+e- pairs'; the ratio of
the spacelike formula to the equivalent-photon estimate at three virtuality cut-offs.  With
``--plot F`` it draws v dsigma/dv of both parts.

    python benchmarks/tridents.py --plot docs/images/tridents.png
"""

from __future__ import annotations

import argparse
import math

import hepunits as u
import numpy as np

from na64reco import constants
from na64reco.geometry import load_setup
from na64reco.physics import tridents
from na64reco.physics.muon_losses import LEAD, energy_loss_b, ln_cumulative
from na64reco.sim.params import load_sim_params
from na64reco.sim.tridents import rates


def _timelike_v_density(e0: float, v: np.ndarray, atoms: float) -> np.ndarray:
    """v dN/dv of the timelike part per muon, from differences of its cross section above v."""
    edges = np.exp(np.linspace(math.log(v[0]), math.log(v[-1]), v.size + 1))
    above = np.array([tridents.timelike_sigma(e0, float(x)) for x in edges]) * atoms
    return -np.diff(above) / np.diff(np.log(edges))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--plot", default=None, help="write v dN/dv of both parts to this PNG")
    args = ap.parse_args()
    setup = load_setup("na64mu")
    prm = load_sim_params(setup)
    e0 = setup.beam.energy
    atoms = LEAD.per_gram * prm.ecal_lead_g_cm2
    print(f"tridents per {e0 / u.GeV:g} GeV muon in the ECAL ({prm.ecal_lead_g_cm2:g} g/cm2 of lead):")
    print(f"  {'':10s} {'spacelike':>10s} {'timelike':>10s}")
    for label, v_min in ((f"v > {prm.dimuon_v_min:g}", prm.dimuon_v_min), (f"v > {prm.bias_v_min:g}", prm.bias_v_min),
                         ("v > 0.6", 0.6), ("v > 0.9", 0.9)):
        print(f"  {label:10s} {tridents.spacelike_sigma(e0, v_min) * atoms:10.3g} "
              f"{tridents.timelike_sigma(e0, v_min) * atoms:10.3g}")
    print(f"  {'all v':10s} {'':>10s} {tridents.timelike_sigma(e0) * atoms:10.3g}")
    r = rates(prm, e0)
    print(f"a forced dimuon event's weight (v > {prm.bias_v_min:g}): {r.forced:.3g} per muon "
          f"(spacelike {r.spacelike_forced:.3g} + timelike {r.timelike_forced:.3g})")
    m = constants.MUON_MASS
    v = np.exp(np.linspace(math.log(2 * m / e0 * 1.001), math.log(1 - m / e0), 3001))
    b_mumu = float(ln_cumulative(v, tridents.spacelike_dsigma(e0, v) * v)[-1]) * LEAD.per_gram  # Int v dsigma/dv dv
    print(f"spacelike energy loss b = {b_mumu:.3g} cm2/g = {b_mumu / energy_loss_b(LEAD, e0, 'pair'):.3g} x the e+e- "
          "pairs'")
    print("the normalisation's check: formula / equivalent-photon estimate (physics.tridents.equivalent_photon_dsigma)")
    for q2 in (1.0, 4.0, 16.0):
        ratios = [tridents.spacelike_dsigma(e0, v)[0] / tridents.equivalent_photon_dsigma(e0, v, q2)
                  for v in (0.03, 0.05, 0.1, 0.2)]
        print(f"  Q2max = {q2:4.0f} m_mu^2, v = 0.03 / 0.05 / 0.1 / 0.2: " + " / ".join(f"{r:.2f}" for r in ratios))
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        grid = np.exp(np.linspace(math.log(0.01), math.log(0.995), 240))
        fig, ax = plt.subplots(figsize=(6.4, 4.4))
        ax.plot(grid, tridents.spacelike_dsigma(e0, grid) * grid * atoms, label="spacelike (KKP 2000)")
        ax.plot(grid, _timelike_v_density(e0, grid, atoms), label="timelike (gamma* -> mu mu)")
        ax.axvline(prm.bias_v_min, color="grey", ls=":", label=f"forced region v > {prm.bias_v_min:g}")
        ax.set(xscale="log", yscale="log", xlabel="pair energy fraction v", ylabel="v dN/dv per muon (ECAL)",
               title=f"muon tridents, {e0 / u.GeV:g} GeV muon, {prm.ecal_lead_g_cm2:g} g/cm2 Pb")
        ax.legend()
        fig.tight_layout()
        fig.savefig(args.plot, dpi=110)
        print(f"wrote {args.plot}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
