"""The timelike part of muon tridents (mu N -> mu N gamma*, gamma* -> mu+ mu-) against the simulator's toy.

The virtual photon of mass M is emitted like a dark photon of that mass with epsilon = 1
(:func:`na64reco.physics.darkbrem.sigma_total`, model ``aprime``, IWW) and decays to a muon pair with
the spectral density dP/dM^2 = alpha / (3 pi M^2) beta (3 - beta^2) / 2, beta = sqrt(1 - 4 m_mu^2 / M^2)
(the vacuum-polarisation weight of a muon pair).  Prints the number of such tridents per 160 GeV muon
crossing the ECAL's 40 X0 of lead, in all and with the pair's energy fraction v above 0.45 (the forced
region of the simulator's ``dimuon`` process) and 0.9, beside the toy's forced-region rate
(``simulation.dimuon`` of ``calib/setups/na64mu.yaml``: rate x ln(v_max / 0.45) / ln(v_max / v_min)).
The spacelike (Bethe-Heitler) part is not computed here.

    python benchmarks/trident_timelike.py
"""

from __future__ import annotations

import math

import hepunits as u
import numpy as np

from na64reco import constants
from na64reco.geometry import load_setup
from na64reco.physics import darkbrem
from na64reco.physics.yields import lead_number_density
from na64reco.sim.params import load_sim_params


def spectral_density(mass):
    """dP/dM^2 of gamma* -> mu+ mu- (1/MeV^2)."""
    beta = np.sqrt(1.0 - 4.0 * constants.MUON_MASS**2 / mass**2)
    return constants.FINE_STRUCTURE / (3.0 * math.pi) * beta * (3.0 - beta**2) / 2.0 / mass**2


def timelike_per_muon(e0: float, x_min: float | None, n_masses: int = 120) -> float:
    """Timelike tridents per muon of ``e0`` in 40 X0 of lead with v > ``x_min`` (None: all)."""
    masses = np.exp(np.linspace(math.log(2 * constants.MUON_MASS * 1.0005), math.log(20 * u.GeV), n_masses))
    sigma = np.array([darkbrem.sigma_total(e0, m, coupling=1.0, model="aprime", x_min=x_min) for m in masses])
    integrand = spectral_density(masses) * sigma * 2.0 * masses * masses  # d/d(ln M) of Int dM^2
    per_atom = float(np.sum(0.5 * (integrand[1:] + integrand[:-1]) * np.diff(np.log(masses))))
    return per_atom * lead_number_density() * constants.NA64_ECAL_DEPTH_X0 * constants.LEAD_RADIATION_LENGTH


def main() -> int:
    e0 = constants.NA64MU_BEAM_ENERGY
    prm = load_sim_params(load_setup("na64mu"))
    toy = prm.dimuon_rate * math.log(prm.dimuon_v_max / prm.bias_v_min) / math.log(prm.dimuon_v_max / prm.dimuon_v_min)
    print(f"timelike tridents per {e0 / u.GeV:g} GeV muon in {constants.NA64_ECAL_DEPTH_X0:g} X0 of lead:")
    for label, x_min in (("all v", None), (f"v > {prm.bias_v_min:g}", prm.bias_v_min),
                         (f"v > {prm.dimuon_v_max:g}", prm.dimuon_v_max), ("v > 0.9", 0.9)):
        print(f"  {label:10s} {timelike_per_muon(e0, x_min):.3g}")
    print(f"the simulator's toy (1/v on [{prm.dimuon_v_min:g}, {prm.dimuon_v_max:g}], rate {prm.dimuon_rate:g}) "
          f"with v > {prm.bias_v_min:g}: {toy:.3g} per muon (the forced dimuon sample's weight)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
