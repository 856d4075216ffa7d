"""Blinding holes found by a sixth audit (tests fail without their fixes).

* The selection file was parsed by one read and hashed by a second: a file replaced between
  the two gave a selection with other cuts under the frozen file's SHA-256, which is what the
  unblinding token compares (216 mismatches in 3000 loads with a file swapped in a loop).  Now
  the digest is of the bytes that were parsed, and the unblinding's final plots use the
  processor's selection instead of reading the file a third time.
* The processor's bad-spill step was a method (``drop_bad_spills``) whose returned events fed
  both the reconstruction and the blinding's reference reconstruction: a subclass that returned
  the calorimeter samples x 3 pushed every VETO into the visible control region and showed 860
  data events of the box in the ``p_out`` histogram.  The bad spills are now dropped from the
  events as read, by a function.
* The processor's file cache was keyed by the path alone: a data file copied over a simulated
  one that a kept processor had read stayed "simulation" (its ``reco=`` hook accepted, the box
  counted).  A local file's entry is now keyed by its version as well.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import awkward as ak
import hepunits as u
import numpy as np
import pytest

from na64reco.selection.schema import load_selection, selection_path


@pytest.fixture(scope="module")
def box_data(tmp_path_factory):
    """A data-like (no truth) file of Z' signal events: most are in the box."""
    from na64reco.sim.generate import simulate

    path = tmp_path_factory.mktemp("audit6") / "data.root"
    simulate("na64mu", 2000, 5, 1002, path, process="signal", mass=0.1 * u.GeV, truth=False)
    return path


def test_the_selection_digest_is_of_the_bytes_parsed(tmp_path, monkeypatch):
    frozen = selection_path("na64mu_invisible").read_bytes()
    edited = frozen.replace(b"max: 25 MeV", b"max: 900 MeV", 1)
    assert edited != frozen
    path = tmp_path / "sel.yaml"
    path.write_bytes(frozen)
    reads = []
    real = Path.read_bytes

    def swapped_after_the_first_read(self):  # the file replaced right after it was first read
        if self == path:
            reads.append(1)
            return frozen if len(reads) == 1 else edited
        return real(self)

    monkeypatch.setattr(Path, "read_bytes", swapped_after_the_first_read)
    sel = load_selection(path)
    assert len(reads) == 1
    assert sel.sha256 == hashlib.sha256(frozen).hexdigest()
    assert [c.max for c in sel.cuts if c.name == "no_veto"] == [pytest.approx(0.025)]  # GeV: the frozen 25 MeV


def test_a_subclass_cannot_alter_the_events_through_a_bad_spill_hook(box_data):
    from na64reco.runner import RunOptions, run_files
    from processors import get_processor

    base = get_processor("na64mu_invisible")

    class Louder(base):
        def drop_bad_spills(self, events):  # the hook the processor had: calorimeter samples x 3
            adc = events["calo_adc"]
            return ak.with_field(events, ak.values_astype(np.minimum(adc * 3, 4095), np.int16), "calo_adc"), None

    out = run_files({"d": [str(box_data)]}, RunOptions("na64mu_invisible"), processor_instance=Louder())["d"]
    h = out["hists"]["p_out"]
    edges = h.axes[-1].edges
    below = edges[1:] <= 80.0
    assert h["all", :].values()[below].sum() == 0  # no data event with p_out < 80 GeV
    assert out["regions"]["signal_box"].blinded


def test_a_kept_processor_asks_again_about_a_file_replaced_at_its_path(box_data, tmp_path):
    """A notebook keeps a processor with a ``reco=`` hook (allowed for simulation), runs it on a
    simulated file, then a data file is copied over that path: the processor's file cache was keyed
    by the path alone and kept calling it simulation (the hook accepted, the box counted)."""
    import shutil

    import uproot

    from na64reco.errors import BlindingError
    from na64reco.io.raw import event_branches
    from na64reco.sim.generate import simulate
    from processors import get_processor
    from processors.base import reconstruct_stage

    def reco(nested, setup, cond, src):  # the library's reconstruction with a unit weight
        r = reconstruct_stage(nested, setup, cond, src)
        return ak.with_field(r, np.ones(len(r)), "truth_weight")

    path = tmp_path / "run.root"
    simulate("na64mu", 2000, 6, 1002, path, process="signal", mass=0.1 * u.GeV)
    proc = get_processor("na64mu_invisible")(reco=reco)

    def process():
        with uproot.open(path) as f:
            ev = f["events"].arrays(event_branches(), library="ak")
        return proc.process_chunk(ev, {"filename": str(path), "entrystart": 0, "entrystop": len(ev),
                                       "dataset": "x"})["x"]

    assert not process()["regions"]["signal_box"].blinded  # simulation: the box is counted
    shutil.copyfile(box_data, tmp_path / "copy.root")
    (tmp_path / "copy.root").replace(path)  # the data file now at the simulated file's path
    with pytest.raises(BlindingError, match="reco= hook is refused for data"):
        process()
