"""The off-track clusters of a simulated beam run split into uncorrelated noise and beam
pile-up muons (na64reco.calibration.noise_split), compared with the generator's truth: the
setup's noise_hits per plane and its out-of-time pile-up muons per event."""

from __future__ import annotations

import numpy as np
import pytest

from na64reco.calibration import noise_split
from na64reco.calibration.beam_tracks import read_beam_runs, reconstruct_views
from na64reco.conditions import load_conditions
from na64reco.geometry import load_setup

sim = pytest.importorskip("na64reco.sim.generate", reason="needs the simulator (na64reco.sim.generate)")

RUN = 700
N_BEAM = 6000


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    setup = load_setup("na64mu", run=RUN)
    path = tmp_path_factory.mktemp("split") / "beam.root"
    sim.simulate(setup, N_BEAM, 3, RUN, path, process="beam", trigger="calibration")
    cond = load_conditions(setup, RUN)
    run = read_beam_runs([path], setup)[0]
    hits, vts, _ = reconstruct_views(run, setup, cond)
    accs = {p.name: noise_split.Counts() for p in setup.planes}
    partners = {}
    for vt in vts:
        partners.update(noise_split.split_view(hits, vt, setup, {}, accs))
    eff = {p.name: cond.plane_efficiency(p) for p in setup.planes}
    return setup, cond, accs, noise_split.finish(setup, accs, partners, eff)


def test_noise_per_plane_recovers_the_generated_noise(split):
    setup, cond, accs, res = split
    pulls, old = [], []
    for p in setup.planes:
        s, true = res[p.name], cond.plane_noise_hits(p)
        pull = (s.noise_hits - true) / s.noise_error
        assert abs(pull) < 4, (p.name, s.noise_hits, s.noise_error, true)
        pulls.append(pull)
        # the old counting (every off-track cluster: noise + pile-up clusters) is 4-8x the noise,
        # far outside the tolerance
        old.append((s.noise_hits + s.pileup_hits - true) / s.noise_error)
    assert abs(np.mean(pulls)) < 1.5, pulls  # no common bias
    assert min(old) > 10, old


def test_pileup_rate(split):
    from na64reco.sim.occupancy import expected_per_event

    setup, _, _, res = split
    rate, err = noise_split.combined_rate(res.values())
    generated = expected_per_event(setup)  # 0.4375 out-of-time beam muons per event
    assert abs(rate - generated) < 3 * err, (rate, err, generated)
    assert 0.85 * generated < rate < 1.15 * generated, (rate, err, generated)
    for p in setup.planes:  # every plane sees them: ~efficiency x the APV window's share (195 / 420 ns)
        assert res[p.name].pileup_hits > 0.5 * generated * 195 / 420, p.name
