"""Blinding holes found by a fourth audit (tests fail without their fixes).

* A data chunk named as a chunk of a simulated file: the processor took data or simulation
  from the chunk's ``filename`` and checked the chunk against that file only through the
  checksum blocks lying wholly inside its range; a range beyond the file's end, or one inside
  a single block, compared nothing, so the data events counted as simulation (the ``reco=``
  hook accepted, the box count shown).  Now the range must lie in the file, the chunk must
  hold as many entries as it names, and the part of a block it covers is compared with the
  file's content.
* ``dataclasses.replace(raw, _has_truth=True)`` made a data file's ``RawFile`` say it was
  simulation: the flag was a constructor argument.  It is now taken from the open file.
"""

from __future__ import annotations

import dataclasses

import awkward as ak
import hepunits as u
import numpy as np
import pytest
import uproot

from na64reco.errors import RawFormatError
from na64reco.io.raw import event_branches, open_raw


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A data-like (no truth) file of Z' signal events, most in the box, and a simulated
    beam file of the same run with more entries (one checksum block each)."""
    from na64reco.sim.generate import simulate

    d = tmp_path_factory.mktemp("audit4")
    simulate("na64mu", 2000, 5, 1002, d / "data.root", process="signal", mass=0.1 * u.GeV, truth=False)
    simulate("na64mu", 2000, 6, 1002, d / "mc.root", process="signal", mass=0.1 * u.GeV)
    return d / "data.root", d / "mc.root"


def _events(path, start=None, stop=None):
    with uproot.open(path) as f:
        return f["events"].arrays(event_branches(), library="ak", entry_start=start, entry_stop=stop)


def _process(events, filename, start, stop):
    from processors import get_processor
    from processors.base import reconstruct_stage

    def reco(nested, setup, cond, src):  # the library's reconstruction with a unit weight
        r = reconstruct_stage(nested, setup, cond, src)
        return ak.with_field(r, np.ones(len(r)), "truth_weight")

    proc = get_processor("na64mu_invisible")(reco=reco)
    return proc.process_chunk(events, {"filename": str(filename), "entrystart": start, "entrystop": stop,
                                       "dataset": "x"})


def test_a_data_chunk_named_beyond_a_simulated_files_end_is_refused(files):
    data, mc = files
    ev = _events(data)
    n_mc = open_raw(mc).n_events
    assert len(ev) > 100
    with pytest.raises(RawFormatError, match="not inside tree 'events'"):
        _process(ev, mc, n_mc - 5, n_mc - 5 + len(ev))


def test_a_data_chunk_named_inside_a_simulated_files_block_is_refused(files):
    data, mc = files
    ev = _events(data)[:300]
    assert open_raw(mc).n_events > 301
    with pytest.raises(RawFormatError, match="the chunk's content is not the file's"):
        _process(ev, mc, 1, 301)


def test_a_chunk_that_holds_other_than_its_range_is_refused(files):
    _, mc = files
    ev = _events(mc, 1, 301)
    with pytest.raises(RawFormatError, match="holds 300 entries for entries 1-201"):
        _process(ev, mc, 1, 201)


def test_a_simulated_chunk_inside_a_block_is_its_files_content(files):
    _, mc = files
    out = _process(_events(mc, 1, 301), mc, 1, 301)["x"]
    assert out["cutflow"].n[0] == 300  # accepted: the same content as the file's entries 1-301


def test_a_data_rawfile_cannot_be_replaced_into_simulation(files):
    data, mc = files
    raw = open_raw(data)
    assert not raw.has_truth
    with pytest.raises((TypeError, ValueError)):
        dataclasses.replace(raw, _has_truth=True)
    # the metadata or the file swapped alone does not make it simulation either
    assert not dataclasses.replace(raw, meta={**raw.meta, "has_truth": True}).has_truth
    assert not dataclasses.replace(raw, _file=open_raw(mc)._file).has_truth
    assert open_raw(mc).has_truth


def test_verify_chunk_takes_an_empty_chunk_and_refuses_a_missing_branch_anywhere(files):
    """(review: an empty chunk inside a block was refused as 'not made of whole blocks'; a chunk
    inside a block without one of the branches was compared on the others only)"""
    from na64reco.io.checksum import verify_chunk

    _, mc = files
    raw = open_raw(mc)
    blocks = raw.blocks("events")
    read = lambda a, b: raw.arrays("events", a, b)  # noqa: E731
    fields = lambda arr: {f: arr[f] for f in arr.fields}  # noqa: E731
    chunk = read(10, 60)
    verify_chunk(blocks, chunk, 10, 60, mc, read)  # inside the file's one block: compared, accepted
    verify_chunk(blocks, {k: v[:0] for k, v in fields(chunk).items()}, 35, 35, mc, read)  # empty: nothing to compare
    for start, stop in ((10, 60), (0, raw.n_events)):  # inside a block, and whole blocks
        part = {k: v for k, v in fields(read(start, stop)).items() if k != "calo_det"}
        with pytest.raises(RawFormatError, match="the chunk lacks branch 'calo_det'"):
            verify_chunk(blocks, part, start, stop, mc, read)
