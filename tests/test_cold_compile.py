"""No kernel of the reconstruction or the simulation is compiled twice for the same argument types.

numba types an integer constant, or a counter that starts at ``0`` before a loop, as
``Literal[int](0)`` in the first pass of its type inference, and compiles the compiled function
it is passed to for that type too: a second specialisation that never runs but that every cold
start pays for (the tracker hits block: ~6 s of each table's ~13 s; see "Literal integers" in
``na64reco/reco/tracking/_jit.py``).  This runs the simulation and the reconstruction of both
setups in this process, then looks at every compiled function of ``na64reco.reco`` and
``na64reco.sim`` (the modules that workload compiles; other tests in the same process may have
run other modules' kernels): two signatures that are the same once literal types are replaced by
their base types are such a duplicate.  (Signatures loaded from the on-disk cache count like
compiled ones: the test holds with a warm cache too.)
"""

from __future__ import annotations

import sys

import pytest

from na64reco.conditions import load_conditions
from na64reco.geometry import load_setup
from na64reco.io.raw import open_raw
from na64reco.reco.event import reconstruct
from na64reco.reco.tracking._jit import duplicate_specialisations
from na64reco.reco.tracking.stage import reconstruct_tracks
from na64reco.sim.generate import simulate


@pytest.mark.parametrize(("setup", "run"), [("na64mu", 1001), ("na64e", 1)])
def test_no_kernel_is_compiled_again_for_literal_arguments(tmp_path, setup, run):
    path = tmp_path / f"{setup}.root"
    simulate(setup, 300, 5, run, path, trigger="calibration")
    raw = open_raw(path)
    events = raw.events()
    assert len(events) > 50  # the kernels ran on real events (the calibration trigger keeps most beam particles)
    geometry = load_setup(raw.setup, run=raw.run)
    conditions = load_conditions(raw.setup, raw.run)
    reconstruct(events, geometry, conditions, source=str(path))
    reconstruct_tracks(events, geometry, conditions, return_internals=True)  # the whole hits table
    assert duplicate_specialisations(("na64reco.reco", "na64reco.sim")) == {}


def test_the_check_finds_a_kernel_compiled_for_a_literal_counter():
    """The scan itself: a helper called with a counter that starts at a literal 0 is reported."""
    module = type(sys)("na64reco._literal_probe")
    exec(
        "import numba\n"
        "@numba.njit\n"
        "def step(n, x):\n"
        "    return n + x\n"
        "@numba.njit\n"
        "def loop(k):\n"
        "    n = 0\n"
        "    for _ in range(k):\n"
        "        n = step(n, 1)\n"
        "    return n\n",
        module.__dict__,
    )
    sys.modules[module.__name__] = module
    try:
        assert module.loop(3) == 3
        found = duplicate_specialisations(("na64reco._literal_probe",))
        assert list(found) == ["na64reco._literal_probe.step"]
        assert any("Literal[int](0)" in a for sig in found["na64reco._literal_probe.step"] for a in sig)
    finally:
        del sys.modules[module.__name__]
