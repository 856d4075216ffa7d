"""The ECAL interaction vertices (signal, tridents, leading hadrons) are uniform in the lead crossed.

The ECAL's sections sample lead at different densities (NA64mu: 4 X0 in the 80 mm preshower, 36 X0
in the 450 mm main section).  A process whose rate goes with the nuclei crossed has its vertices
uniform in radiation lengths: 4/40 = 10 % of them in the preshower, where a depth uniform in
millimetres put 80/530 = 15 %.
"""

from __future__ import annotations

import hepunits as u
import numpy as np
import uproot

from na64reco.geometry import load_setup
from na64reco.sim import simulate
from na64reco.sim.transport import _ecal_sections, _vertex_depths


def test_vertex_depths_uniform_in_radiation_lengths():
    ecal = load_setup("na64mu", run=1).calorimeters["ECAL"]
    depths, x0 = _ecal_sections(ecal)
    n = 200_000
    z, f = _vertex_depths(np.random.default_rng(1), ecal, n)
    share = x0[0] / x0.sum()  # 0.1
    sigma = np.sqrt(share * (1 - share) / n)
    assert abs(np.mean(z < depths[0]) - share) < 5 * sigma
    # within a section, uniform in millimetres; the fraction is that of the radiation lengths in front
    main = z[z >= depths[0]]
    assert abs(main.mean() - (depths[0] + depths[1] / 2)) < 5 * depths[1] / np.sqrt(12 * main.size)
    inside = z < depths[0]
    np.testing.assert_allclose(f[inside], z[inside] / depths[0] * share, rtol=1e-12)
    np.testing.assert_allclose(f[~inside], share + (z[~inside] - depths[0]) / depths[1] * (1 - share), rtol=1e-12)


def test_signal_vertices_in_the_preshower_follow_its_lead(tmp_path):
    path = tmp_path / "sig.root"
    simulate("na64mu", 4000, 5, 1, path, process="signal", mass=0.1 * u.GeV, trigger="calibration")
    ecal = load_setup("na64mu", run=1).calorimeters["ECAL"]
    with uproot.open(path) as f:
        tr = f["truth"].arrays(["process", "vertex_z"], library="np")
    z = tr["vertex_z"][np.isfinite(tr["vertex_z"])] - ecal.z
    assert z.size > 3500
    share = 4.0 / 40.0  # the preshower's radiation lengths over the ECAL's (calib/setups/na64mu.yaml)
    sigma = np.sqrt(share * (1 - share) / z.size)
    frac = np.mean(z < ecal.section_depths[0])
    assert abs(frac - share) < 4 * sigma, (frac, share, sigma)  # uniform in mm gave 80/530 = 0.151: 10 sigma away
