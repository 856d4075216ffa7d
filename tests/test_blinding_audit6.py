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
