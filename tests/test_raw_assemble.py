"""na64reco.io.raw.assemble_events: the collections built as ``ListOffsetArray(RecordArray)``
are what ``ak.zip`` of the branches gave (type, form, values), and branches of one
collection whose entries per event disagree are refused naming the branch."""

from __future__ import annotations

import awkward as ak
import numpy as np
import pytest
import uproot

from na64reco.errors import RawFormatError
from na64reco.io.raw import COLLECTIONS, EVENT_SCALARS, N_SAMPLES, assemble_events, event_branches


def _zipped(arrays) -> ak.Array:
    """The construction by ``ak.zip`` (the code before the fourth pass), the reference."""
    out = {k: arrays[k] for k in EVENT_SCALARS}
    for c, fields in COLLECTIONS.items():
        out[c] = ak.zip({f: arrays[f"{c}_{f}"] for f in fields})
    flat = np.asarray(ak.flatten(arrays["calo_adc"])).reshape(-1, N_SAMPLES)
    samples = ak.unflatten(ak.from_numpy(flat, regulararray=True), np.asarray(ak.num(arrays["calo_det"], axis=1)))
    out["calo"] = ak.with_field(out["calo"], samples, "adc")
    return ak.zip(out, depth_limit=1)


def _same(got: ak.Array, ref: ak.Array) -> None:
    assert got.layout.form == ref.layout.form and got.type == ref.type and len(got) == len(ref)
    assert ak.array_equal(got, ref)
    assert ak.to_list(got[:5]) == ak.to_list(ref[:5])


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A simulated and a data-like NA64mu file of 400 MOT, calibration trigger (~380 events)."""
    from na64reco.sim.generate import simulate

    folder = tmp_path_factory.mktemp("assemble")
    out = {"mc": folder / "mc.root", "data": folder / "data.root"}
    simulate("na64mu", 400, 5, 1001, out["mc"], trigger="calibration", truth=True)
    simulate("na64mu", 400, 6, 1002, out["data"], trigger="calibration", truth=False)
    return out


@pytest.fixture(scope="module")
def chunks(files):
    """The ``events`` branches of the simulated and the data-like file, as read."""
    out = {}
    for kind, path in files.items():
        with uproot.open(path) as f:
            out[kind] = f["events"].arrays(event_branches())
    return out


@pytest.mark.parametrize("kind", ["mc", "data"])
def test_collections_are_the_zip_of_their_branches(chunks, kind):
    a = chunks[kind]
    n = len(a)
    assert n > 100 and ak.sum(ak.num(a["calo_det"])) > 0 and ak.sum(ak.num(a["straw_tdc"])) > 0
    keep = np.arange(n) % 3 != 1
    for arrays in (a, a[:0], a[:1], a[17:n - 5],  # whole, empty, one event, offsets not from 0
                   a[keep],  # events of a mask (bad spills dropped): indexed fields
                   {k: a[k][3:40] for k in a.fields},  # a dict of sliced branches
                   {k: a[keep][k] for k in a.fields}):
        _same(assemble_events(arrays), _zipped(arrays))


def test_raw_file_events_are_assembled(files):
    from na64reco.io.raw import DATA_PARAMETER, open_raw

    with open_raw(files["data"]) as raw:
        events = raw.events(10, 300)
        ref = ak.without_parameters(_zipped(raw.read_verified("events", 10, 300)))  # (the branches are marked too)
    assert events.layout.parameter(DATA_PARAMETER) is True
    assert events.calo.layout.parameter(DATA_PARAMETER) is True  # the collections too (kept by selections)
    assert ak.array_equal(ak.without_parameters(events), ref)
    assert ak.without_parameters(events).layout.form == ref.layout.form
    assert events.calo.adc.type.content.content.size == N_SAMPLES


def _moved_hit(arrays, branch: str, event: int) -> ak.Array:
    """``arrays`` with one value of ``branch`` moved from ``event`` to the next event (same total)."""
    counts = np.asarray(ak.num(arrays[branch], axis=1)).copy()
    assert counts[event] > 0
    counts[event] -= 1
    counts[event + 1] += 1
    return ak.with_field(arrays, ak.unflatten(ak.flatten(arrays[branch]), counts), branch)


@pytest.mark.parametrize("branch", ["apv_a1", "straw_tdc", "calo_chan"])
def test_branches_whose_entries_disagree_are_named(chunks, branch):
    a = chunks["mc"]
    event = int(np.flatnonzero(np.asarray(ak.num(a[branch], axis=1)) > 0)[0])
    bad = _moved_hit(a, branch, event)
    with pytest.raises(RawFormatError, match=rf"^bad\.root: branch '{branch}' does not have the entries per "
                                             rf"event of '\w+' \(event {event} of the chunk"):
        assemble_events(bad, "bad.root")
    with pytest.raises(RawFormatError, match=f"branch '{branch}'"):  # also from a dict of branches
        assemble_events({k: bad[k] for k in bad.fields}, "bad.root")


def test_samples_not_32_per_digit_are_refused(chunks):
    a = chunks["mc"]
    event = int(np.flatnonzero(np.asarray(ak.num(a["calo_adc"], axis=1)) > 0)[0])
    with pytest.raises(RawFormatError, match=r"^bad\.root: calo_adc does not hold 32 samples per calo digit"):
        assemble_events(_moved_hit(a, "calo_adc", event), "bad.root")


@pytest.mark.parametrize("kind", ["mc", "data"])
def test_collection_arrays_are_ak_num_and_flatten(chunks, kind):
    """``collection_arrays`` (views of the assembled buffers) gives what ``ak.num`` and
    ``ak.flatten`` give, for whole, sliced (offsets not from 0), masked (another layout: the
    awkward route), empty and one-event selections; the calo samples as (digits, 32)."""
    from na64reco.io.raw import collection_arrays

    events = assemble_events(chunks[kind], "test")
    n = len(events)
    selections = [events, events[7:n - 5], events[np.arange(n) % 3 != 1], events[3:3], events[4:5],
                  events[ak.num(events["calo"], axis=1) > 4][2:]]
    for ev in selections:
        for coll, fields in COLLECTIONS.items():
            off, flat = collection_arrays(ev[coll], fields)
            ref = np.zeros(len(ev) + 1, np.int64)
            np.cumsum(ak.to_numpy(ak.num(ev[coll], axis=1)), out=ref[1:])
            np.testing.assert_array_equal(off, ref)
            assert off.dtype == np.int64
            for f in fields:
                want = ak.to_numpy(ak.flatten(ev[coll][f], axis=1))
                assert flat[f].dtype == want.dtype and flat[f].shape == want.shape, (coll, f)
                np.testing.assert_array_equal(flat[f], want)
    assert collection_arrays(events["calo"], ("adc",))[1]["adc"].shape[1:] == (N_SAMPLES,)
