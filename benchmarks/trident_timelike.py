"""The timelike part of muon tridents (mu N -> mu N gamma*, gamma* -> mu+ mu-) beside the simulator's toy.

Prints the number of timelike tridents (:mod:`na64reco.physics.tridents`: the virtual photon emitted as a
dark photon of its mass with epsilon = 1, times the muon loop's spectral density) per 160 GeV muon crossing
the ECAL's lead, in all and above the pair energy fractions that matter: the forced region of the
``dimuon`` process (``biasing.v_min``), the toy's v_max and 0.9; and the toy's (spacelike, *assumed*) rate
in the forced region.  The simulator draws both (:mod:`na64reco.sim.tridents`).

    python benchmarks/trident_timelike.py
"""

from __future__ import annotations

import hepunits as u

from na64reco.geometry import load_setup
from na64reco.physics import tridents
from na64reco.physics.muon_losses import LEAD
from na64reco.sim.params import load_sim_params
from na64reco.sim.tridents import rates


def main() -> int:
    setup = load_setup("na64mu")
    prm = load_sim_params(setup)
    e0 = setup.beam.energy
    atoms = LEAD.per_gram * prm.ecal_lead_g_cm2
    print(f"timelike tridents per {e0 / u.GeV:g} GeV muon in the ECAL ({prm.ecal_lead_g_cm2:g} g/cm2 of lead):")
    for label, x_min in (("all v", None), (f"v > {prm.bias_v_min:g}", prm.bias_v_min),
                         (f"v > {prm.dimuon_v_max:g}", prm.dimuon_v_max), ("v > 0.9", 0.9)):
        print(f"  {label:10s} {tridents.timelike_sigma(e0, x_min) * atoms:.3g}")
    r = rates(prm, e0)
    print(f"the toy (1/v on [{prm.dimuon_v_min:g}, {prm.dimuon_v_max:g}], rate {prm.dimuon_rate:g}, assumed) with "
          f"v > {prm.bias_v_min:g}: {r.toy_forced:.3g} per muon; a forced dimuon event's weight: {r.forced:.3g}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
