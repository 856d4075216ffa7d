"""Optional reco fields (``reconstruct(leave_out=...)``): a field left out is absent and every other
field is bit for bit the full reconstruction's; the processors leave out only what they read nowhere,
and their outputs do not change."""

from __future__ import annotations

import awkward as ak
import numpy as np
import pytest

from na64reco.conditions import load_conditions
from na64reco.geometry import load_setup
from na64reco.io.raw import open_raw
from na64reco.reco.event import OPTIONAL_FIELDS, reconstruct
from na64reco.runner import RunOptions, run_files
from na64reco.sim.generate import simulate
from processors.na64e_invisible import Processor as EProcessor
from processors.na64mu_invisible import Processor as MuProcessor


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("leave_out")
    simulate("na64mu", 1500, 5, 1001, d / "mu.root", trigger="calibration")
    simulate("na64e", 400, 6, 2001, d / "e.root", trigger="calibration")
    return {"na64mu": d / "mu.root", "na64e": d / "e.root"}


def _inputs(path):
    raw = open_raw(path)
    setup = load_setup(raw.setup, run=raw.run)
    return raw.events(), setup, load_conditions(setup, raw.run)


@pytest.mark.parametrize("setup_name", ["na64mu", "na64e"])
def test_a_left_out_field_is_absent_and_the_others_unchanged(files, setup_name):
    events, setup, conditions = _inputs(files[setup_name])
    full = reconstruct(events, setup, conditions)
    part = reconstruct(events, setup, conditions, leave_out=tuple(OPTIONAL_FIELDS))
    chi2 = np.asarray(full["ecal_shower_chi2"])
    assert np.isfinite(chi2).sum() > len(full) // 2  # computed in the full record: the comparison is not empty
    assert part.fields == [f for f in full.fields if f not in OPTIONAL_FIELDS]
    for name in part.fields:
        assert ak.array_equal(part[name], full[name], equal_nan=True), name
    calo_only = reconstruct(events, setup, conditions, stages=("calo",), leave_out="ecal_shower_chi2")  # one name
    assert "ecal_shower_chi2" not in calo_only.fields and "ecal_energy" in calo_only.fields


def test_an_unknown_field_is_refused(files):
    events, setup, conditions = _inputs(files["na64mu"])
    with pytest.raises(ValueError, match="'p_out' cannot be left out.*ecal_shower_chi2"):
        reconstruct(events[:10], setup, conditions, leave_out=("p_out",))


def test_processors_leave_out_only_fields_they_read_nowhere():
    assert MuProcessor().fields_left_out() == ("ecal_shower_chi2",)  # a MIP in the ECAL: no shower shape
    assert EProcessor().fields_left_out() == ()  # the NA64e selection cuts on it

    class Plotted(MuProcessor):
        MAIN_VARIABLES = (*MuProcessor.MAIN_VARIABLES, "ecal_shower_chi2")

    assert Plotted().fields_left_out() == ()


class _Everything(MuProcessor):
    """The NA64mu processor with every optional field computed."""

    def fields_left_out(self):
        return ()


def test_the_na64mu_run_is_the_same_with_the_field_left_out(files):
    """Cut-flow, N-1, regions and every histogram of a run are those of a run computing every field."""
    fileset = {"mc": [str(files["na64mu"])]}
    runs = [run_files(fileset, RunOptions("na64mu_invisible", chunksize=500), processor_instance=p)["mc"]
            for p in (MuProcessor(), _Everything())]
    (a, b) = runs
    assert a["cutflow"].labels == b["cutflow"].labels and a["cutflow"].n.tolist() == b["cutflow"].n.tolist()
    assert np.array_equal(a["cutflow"].sumw, b["cutflow"].sumw)
    assert {k: v.n for k, v in a["regions"].items()} == {k: v.n for k, v in b["regions"].items()}
    for group in ("hists", "nminus1"):
        assert a[group].keys() == b[group].keys()
        for name in a[group]:
            assert np.array_equal(a[group][name].values(flow=True), b[group][name].values(flow=True)), name
    assert a["provenance"].events_processed == b["provenance"].events_processed > 0
