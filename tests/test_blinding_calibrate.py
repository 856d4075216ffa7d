"""Blinding review of stop 48: two routes by which a data file's box events reached an output.

* ``na64reco calibrate`` read a data file's physics-trigger events whole: a momentum-scale fit
  of a data-like signal run printed a field integral of 5.2 T m for 1.4 (the box events' mean
  p_out) from 793 tracks where the reco export shows 71 events;
* a file's version was its mtime alone, so a data file copied over a simulated one with the
  mtime set back (``os.utime``) was still the simulation to the processor's file cache: its
  ``reco=`` hook was allowed and the signal box was counted unblinded.
"""

from __future__ import annotations

import os
import shutil

import awkward as ak
import numpy as np
import pytest

from na64reco.calibration.blinded_inputs import calibration_events, physics_trigger
from na64reco.calibration.publish import calibrate_files
from na64reco.conditions import load_conditions
from na64reco.errors import BlindingError, NA64Error
from na64reco.geometry import load_setup
from na64reco.io.location import file_version
from na64reco.io.raw import event_branches, is_data_events, open_raw
from na64reco.reco.event import reconstruct, record
from na64reco.sim.generate import simulate

pytest.importorskip("processors")

RUN = 1002


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A data-like signal run (physics trigger, rich in box events), its simulated twin, and a
    data-like beam run of the calibration trigger."""
    d = tmp_path_factory.mktemp("blind_calib")
    out = {"data": d / "sig_data.root", "mc": d / "sig_mc.root", "beam": d / "beam_data.root"}
    simulate("na64mu", 1500, 5, RUN, out["data"], truth=False, process="signal", mass=100.0)
    simulate("na64mu", 1500, 5, RUN, out["mc"], truth=True, process="signal", mass=100.0)
    simulate("na64mu", 600, 6, RUN, out["beam"], truth=False, process="beam", trigger="calibration")
    return out


def _events(path):
    with open_raw(path) as raw:
        setup = load_setup(raw.setup, run=raw.run)
        return raw.events(), setup, load_conditions(setup, raw.run)


def _exported(path) -> set:
    from na64reco.export import iterate_reco

    return set(np.concatenate([np.asarray(reco["event"]) for reco, _, _ in iterate_reco(path, chunk_size=500)]))


def test_a_calibration_uses_only_the_data_events_the_export_shows(files):
    events, setup, conds = _events(files["data"])
    kept, withheld = calibration_events(events, setup, conds, str(files["data"]))
    assert is_data_events(kept)  # still data: the calibrations lift the mark themselves
    assert withheld > 0.5 * len(events)  # the signal run is mostly box events
    assert len(kept) + withheld == len(events)
    assert set(np.asarray(kept["event"])) == _exported(files["data"])


def test_simulation_and_calibration_trigger_runs_are_used_whole(files):
    for name in ("mc", "beam"):
        events, setup, conds = _events(files[name])
        kept, withheld = calibration_events(events, setup, conds, str(files[name]))
        assert withheld == 0 and len(kept) == len(events), name
    events, _, _ = _events(files["beam"])
    assert not physics_trigger(events).any()


@pytest.mark.parametrize("kind", ["mip", "momentum-scale"])
def test_calibrate_does_not_read_the_box_events_of_data(files, kind):
    setup = load_setup("na64mu", run=RUN)
    events, _, _ = _events(files["data"])
    n_visible = len(_exported(files["data"]))
    if kind == "mip":
        res = calibrate_files(kind, setup, [files["data"]], RUN, min_entries=1)
        assert res.n_events == n_visible and res.withheld == len(events) - n_visible
        assert f"{res.withheld} physics-trigger events of data not used" in res.summary()
    else:  # too few beam tracks remain: refused, with the count of what it was given
        with pytest.raises(NA64Error, match=f"\\({n_visible} events\\)"):
            calibrate_files(kind, setup, [files["data"]], RUN)


def test_the_simulated_twin_is_calibrated_whole(files):
    setup = load_setup("na64mu", run=RUN)
    with open_raw(files["mc"]) as raw:
        n = len(raw.events())
    res = calibrate_files("mip", setup, [files["mc"]], RUN, min_entries=1)
    assert res.n_events == n and res.withheld == 0


def test_a_data_file_copied_over_a_simulated_one_with_its_mtime_set_back_is_data(files, tmp_path):
    from processors import get_processor
    from processors.base import close_raw_files

    path = tmp_path / "swap.root"
    shutil.copy(files["mc"], path)
    st = os.stat(path)
    before = file_version(path)

    def chunk():
        import uproot

        with uproot.open(path) as f:
            t = f["events"]
            return record(t.arrays(event_branches(), how=dict)), t.num_entries

    proc = get_processor("na64mu_invisible")
    events, n = chunk()
    meta = {"filename": str(path), "entrystart": 0, "entrystop": n, "dataset": "x"}
    assert not proc().process_chunk(events, meta)["x"]["provenance"].files[str(path)]["data"]
    close_raw_files()
    shutil.copy(files["data"], path)  # same inode, the mtime set back: the ctime moves
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert file_version(path) != before

    def hook(nested, setup, cond, src):  # a reco hook that adds truth: refused for data
        r = reconstruct(nested, setup, cond, src)
        return ak.with_field(ak.with_field(r, np.ones(len(r)), "truth_weight"), np.zeros(len(r)), "truth_process")

    events, n = chunk()
    meta["entrystop"] = n
    with pytest.raises(BlindingError):
        proc(reco=hook).process_chunk(events, meta)
    out = proc().process_chunk(events, meta)["x"]
    assert out["provenance"].files[str(path)]["data"] and out["regions"]["signal_box"].blinded
