"""The out-of-time beam pile-up muons (na64reco.sim.occupancy) transported only up to the last
tracker plane (issue 11, fifth pass).

Their tracker crossings are all that is kept, and nothing behind the last plane can change
them: the crossings must be *identical* to those of the full transport from the same random
numbers (so their distributions are unchanged exactly, forced or not), while the later stages
of the spill read the random stream from another position (fewer numbers drawn).
"""

from __future__ import annotations

import numpy as np
import pytest

from na64reco.geometry import load_setup
from na64reco.io.raw import PROCESSES
from na64reco.sim.beam import sample_beam
from na64reco.sim.occupancy import ForcedPileup, beam_pileup_hits, last_tracker_z, pileup_muons
from na64reco.sim.params import load_sim_params
from na64reco.sim.tracks import ROLE_PILEUP, Recorder
from na64reco.sim.transport import Context, Truth, elements, follow


@pytest.fixture(scope="module")
def setup_params():
    setup = load_setup("na64mu", run=1)
    return setup, load_sim_params(setup)


def _full_transport_hits(rng, setup, params, n_events, forced=None):
    """The crossings of the pile-up muons transported through the whole detector (before)."""
    ev, t = pileup_muons(rng, setup, n_events, forced)
    tracks = sample_beam(rng, setup, ev, np.full(ev.size, PROCESSES["beam"], np.int8), role=ROLE_PILEUP, t=t)
    rec = Recorder(n_events)
    follow(Context(rng, setup, params, rec, Truth.new(n_events)), tracks)
    return rec.hits()


def test_last_tracker_plane_has_only_downstream_detectors_behind_it(setup_params):
    setup, _ = setup_params
    z = last_tracker_z(setup)
    behind = [e for e in elements(setup) if e.z > z]
    assert behind and all(e.kind != "plane" for e in behind)
    assert {e.kind for e in behind} <= {"hcal", "counter", "paddles", "srd", "vhcal", "ecal"}


@pytest.mark.parametrize("forced", [None, ForcedPileup.of([(-45.0, -15.0), (15.0, 79.0)], 2)])
def test_pileup_crossings_identical_to_the_full_transport(setup_params, forced):
    setup, params = setup_params
    n_events = 3000
    rng_new, rng_old = np.random.default_rng(11), np.random.default_rng(11)
    new = beam_pileup_hits(rng_new, setup, params, n_events, forced)
    old = _full_transport_hits(rng_old, setup, params, n_events, forced)
    assert new[0].size > 500  # muons crossing the trackers (0.44 per event nominal)
    for a, b in zip(new, old, strict=True):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)
    # the HCAL and the counters behind the trackers drew numbers before: not any more
    assert rng_new.bit_generator.state != rng_old.bit_generator.state


def test_follow_last_z_stops_before_the_elements_behind(setup_params):
    setup, params = setup_params
    rng = np.random.default_rng(5)
    n = 200
    tracks = sample_beam(rng, setup, np.arange(n), np.full(n, PROCESSES["beam"], np.int8))
    rec = Recorder(n)
    follow(Context(rng, setup, params, rec, Truth.new(n)), tracks, last_z=last_tracker_z(setup))
    assert rec.deposits()[0].size > 0  # the counters and the ECAL upstream of the last plane
    hcal = setup.detector("HCAL").id
    assert not np.any(rec.deposits()[1] == hcal)  # nothing behind the last plane
