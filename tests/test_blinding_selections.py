"""Paths to the protected region that a curious analyst found with the public API (stop 38).

Each test reproduces one path and fails on the code before it was closed:

* a selection of data events (a mask, an index array, a sort, a projection, ``ak.zip``,
  ``ak.concatenate``, pickling, ``ak.to_packed``) kept the events but dropped the data mark, so
  ``reconstruct`` returned every selected event, the signal box included;
* a processor opened the box with any object that has a ``check`` method, or a subclass of
  :class:`UnblindingToken`;
* ``RawFile.has_truth`` could be set to True, turning a data file's events into simulation;
* the lower-level reconstruction functions (digits, the calorimeter's slow twin, the tracker
  hits) did not refuse data events;
* ``read_beam_runs`` returned a data run's events without the mark.
"""

from __future__ import annotations

import pickle
import types

import awkward as ak
import numpy as np
import pytest

from na64reco.conditions import load_conditions
from na64reco.errors import BlindingError
from na64reco.geometry import load_setup
from na64reco.io.raw import is_data_events, open_raw, release_data_events
from na64reco.reco.event import reconstruct


@pytest.fixture(scope="module")
def data_events(small_na64mu_files):
    with open_raw(small_na64mu_files["data"]) as raw:
        setup = load_setup(raw.setup, run=raw.run)
        return raw.events(0, 200), setup, load_conditions(setup, raw.run)


def _selections(ev):
    n = len(ev)
    return {
        "mask": ev[ev.trigger > 0],
        "index array": ev[np.arange(n)],
        "list of indices": ev[[3, 4]],
        "counts mask": ev[ak.num(ev.calo) > 0],
        "sort": ev[ak.argsort(ev.event)],
        "field projection": ev[list(ev.fields)],
        "zip of the fields": ak.zip({f: ev[f] for f in ev.fields}, depth_limit=1),
        "concatenate": ak.concatenate([ev[:3], ev[5:9]]),
        "pickle": pickle.loads(pickle.dumps(ev[ev.trigger > 0])),
        "to_packed": ak.to_packed(ev[ev.trigger > 0]),
        "with_field": ak.with_field(ev[ev.trigger > 0], ev.run[ev.trigger > 0] * 0, "extra"),
        "slice": ev[2:10],
    }


@pytest.mark.parametrize("how", [
    "mask", "index array", "list of indices", "counts mask", "sort", "field projection", "zip of the fields",
    "concatenate", "pickle", "to_packed", "with_field", "slice"])
def test_selected_data_events_stay_data(data_events, how):
    events, setup, conds = data_events
    selected = _selections(events)[how]
    assert len(selected) > 0
    assert is_data_events(selected)
    with pytest.raises(BlindingError, match="protected region"):
        reconstruct(selected, setup, conds)
    released = release_data_events(selected)  # what the exporter and the display do before withholding
    assert not is_data_events(released)
    assert len(reconstruct(released, setup, conds)) == len(selected)


def test_simulated_events_are_not_marked(small_na64mu_files):
    with open_raw(small_na64mu_files["mc"]) as raw:
        events = raw.events(0, 100)
        arrays = raw.read_verified("events", 0, 100)
    for v in (events, events[events.trigger > 0], arrays, arrays.calo_adc):
        assert not is_data_events(v)


def test_raw_branches_of_a_data_file_stay_marked_through_selections(small_na64mu_files):
    from na64reco.io.raw import assemble_events

    with open_raw(small_na64mu_files["data"]) as raw:
        arrays = raw.read_verified("events", 0, 100)
    assert not is_data_events(arrays.run)  # identifiers: no measured quantity
    for v in (arrays, arrays[arrays.trigger > 0], arrays.apv_a0, arrays[["calo_det", "calo_adc"]]):
        assert is_data_events(v)
    assert is_data_events(assemble_events(arrays[arrays.trigger > 0], "data.root"))


def test_lower_level_reconstruction_refuses_data_events(data_events):
    from na64reco.reco.calo import digits_of_events, reconstruct_calo_reference
    from na64reco.reco.tracking.clusters import PlaneTables, event_hits, event_hits_reference, search_hits

    events, setup, conds = data_events
    tables = PlaneTables(setup, conds)
    n = tables.n_planes
    calls = {
        "digits_of_events": lambda ev: digits_of_events(ev, setup, conds),
        "reconstruct_calo_reference": lambda ev: reconstruct_calo_reference(ev, setup, conds),
        "event_hits": lambda ev: event_hits(ev, tables, threshold_sigma=3.0),
        "search_hits": lambda ev: search_hits(ev, tables, threshold_sigma=3.0, lo=np.full(n, -1e9),
                                              hi=np.full(n, 1e9), drop=np.zeros(n, bool)),
        "event_hits_reference": lambda ev: event_hits_reference(ev[0], setup, conds, threshold_sigma=3.0),
    }
    for name, call in calls.items():
        for ev in (events, events[events.trigger > 0]):
            with pytest.raises(BlindingError, match="protected region"):
                call(ev)
        call(release_data_events(events[:20]))  # the same call on released events works (no error)
        assert name


def test_has_truth_of_a_data_file_cannot_be_set(small_na64mu_files):
    with open_raw(small_na64mu_files["data"]) as raw:
        with pytest.raises(BlindingError, match="cannot be set"):
            raw.has_truth = True
        assert raw.has_truth is False
        assert is_data_events(raw.events(0, 10))


def test_a_look_alike_token_opens_nothing(small_na64mu_files, tmp_path):
    from na64reco.runner import ChunkError, RunOptions, make_processor, run_files
    from na64reco.selection.blinding import UnblindingToken

    opts = RunOptions("na64mu_invisible", executor="iterative")
    proc = make_processor(opts)
    proc.token = types.SimpleNamespace(check=lambda selection: None)  # set after the processor was made
    with pytest.raises((BlindingError, ChunkError), match="only an UnblindingToken"):  # (the chunk's error)
        run_files({"data": [str(small_na64mu_files["data"])]}, opts, processor_instance=proc)

    with pytest.raises(BlindingError, match="cannot be subclassed"):
        class Opener(UnblindingToken):  # noqa: F841  (refused when the class is made)
            __slots__ = ()


def test_beam_runs_of_a_data_file_keep_the_mark(small_na64mu_files):
    from na64reco.calibration.beam_tracks import read_beam_runs, reconstruct_views

    with open_raw(small_na64mu_files["data"]) as raw:
        setup = load_setup(raw.setup, run=raw.run)
        conds = load_conditions(setup, raw.run)
    run = read_beam_runs([small_na64mu_files["data"]], setup)[0]
    assert is_data_events(run.events)
    with pytest.raises(BlindingError):
        reconstruct(run.events, setup, conds)
    hits, views, _ = reconstruct_views(run, setup, conds)  # the calibration itself still works
    assert len(views) > 0 and len(hits["pos"]) > 0


def test_selections_inside_the_events_keep_the_mark(data_events):
    from na64reco.reco.calo import flat_digits, reconstruct_calo

    events, setup, conds = data_events
    inner = ak.zip({"run": events.run, "event": events.event, "calo": events.calo[events.calo.chan >= 0],
                    "apv": events.apv[events.apv.a0 > -1000], "straw": events.straw}, depth_limit=1)
    for v in (inner, ak.with_field(events.calo, events.calo.adc - 1, "adc"), events.calo.adc):
        assert is_data_events(v)
    for call in (lambda: reconstruct_calo(inner, setup, conds), lambda: reconstruct(inner, setup, conds),
                 lambda: flat_digits(inner)):
        with pytest.raises(BlindingError, match="protected region"):
            call()
    assert not is_data_events(events.run)  # the identifiers stay plain numbers


def _exported_events(path):
    from na64reco.export import iterate_reco

    return set(np.concatenate([np.asarray(reco["event"]) for reco, _, _ in iterate_reco(path, chunk_size=500)]))


@pytest.mark.parametrize("edit", ["setup", "conditions"])
def test_inputs_edited_in_memory_do_not_move_events_out_of_the_protected_region(small_na64mu_files, edit):
    """(the blinding compared the inputs by their files: an edit of the shared, cached setup or
    conditions object, e.g. MS2's field integral x 2.5 in a notebook, moved box events out of the
    protected region of the export and of the processors)"""
    import dataclasses

    from na64reco.conditions import load_conditions
    from na64reco.geometry import load_setup

    path = small_na64mu_files["data"]
    with open_raw(path) as raw:
        run, n_events = raw.run, raw.n_events
    shown = _exported_events(path)  # the reference inputs
    assert 0 < len(shown) < n_events
    setup = load_setup("na64mu", run=run)
    original = setup.magnets["MS2"]
    if edit == "setup":
        setup.magnets["MS2"] = dataclasses.replace(original, field_integral=2.5 * original.field_integral)
        try:
            moved = _exported_events(path)
        finally:
            setup.magnets["MS2"] = original
            load_setup.cache_clear()
    else:  # the conditions of one RunConditions object (what a processor caches), edited in place
        from na64reco.selection.blinding import reference_protected, uses_reference_inputs

        conds = load_conditions(setup, run)
        assert uses_reference_inputs(setup, conds)
        conds.calo["VETO"].gain[:] *= 10  # every box event would look like a visible control (VETO fired)
        assert not uses_reference_inputs(setup, conds)
        with open_raw(path) as raw:
            events = release_data_events(raw.events())
        from na64reco.selection.blinding import protected_mask

        faked = reconstruct(events, setup, conds)
        assert (protected_mask(faked, "na64mu") != protected_mask(reconstruct(events, setup, load_conditions(
            setup, run)), "na64mu")).any()  # the edit does move events out of the protected region
        hidden = reference_protected(events, setup, conds, reconstruct)
        assert hidden is not None
        assert not set(np.asarray(events.event)[~hidden]) - shown  # the reference still hides them
        return
    assert moved <= shown  # nothing the reference hides is shown


def test_conditions_edited_before_the_first_chunk_do_not_fill_the_reference_tables(small_na64mu_files):
    """(the tracking tables were cached by the files' names: conditions edited in place before the
    first reconstruction left their tables for the reference reconstruction, which then moved box
    events out of the protected region)"""
    import dataclasses

    from na64reco.conditions import load_conditions
    from na64reco.geometry import load_setup
    from na64reco.reco.tracking import stage
    from na64reco.selection.blinding import reference_protected

    path = small_na64mu_files["data"]
    shown = _exported_events(path)
    with open_raw(path) as raw:
        run = raw.run
        events = release_data_events(raw.events())
    setup = load_setup("na64mu", run=run)
    conds = load_conditions(setup, run)
    from na64reco.selection.blinding import protected_mask

    plane = "GEM2X"  # (a plane of the outgoing track: its offset moves p_out)
    conds.planes[plane] = dataclasses.replace(conds.planes[plane], alignment=conds.planes[plane].alignment + 0.5)
    stage._CACHE.clear()
    stage._MATCH_CACHE.clear()
    reconstruct(events, setup, conds)  # the edited conditions' tables first
    assert not stage._CACHE  # nothing cached under the files' names from the edited conditions
    hidden = reference_protected(events, setup, conds, reconstruct)
    assert hidden is not None and not set(np.asarray(events.event)[~hidden]) - shown
    clean = load_conditions(setup, run)
    np.testing.assert_array_equal(hidden, protected_mask(reconstruct(events, setup, clean), "na64mu"))


def test_a_selection_of_the_other_setup_set_after_the_processor_was_made_is_refused(small_na64mu_files):
    from na64reco.runner import ChunkError, RunOptions, make_processor, run_files
    from na64reco.selection import load_selection

    opts = RunOptions("na64mu_invisible", executor="iterative")
    proc = make_processor(opts)
    proc.selection = load_selection("na64e_invisible")
    with pytest.raises((BlindingError, ChunkError), match="its selection .* for 'na64e'"):
        run_files({"data": [str(small_na64mu_files["data"])]}, opts, processor_instance=proc)


def test_the_reference_inputs_are_read_again_after_an_edit_in_place():
    """(``reference_inputs`` returned one cached pair: conditions edited in place by whoever had
    them, e.g. VETO gains x 10, became the reference, and every box event looked like a control)"""
    from na64reco.selection.blinding import reference_inputs

    setup, conds = reference_inputs("na64mu", 1002)
    gain, ms2 = conds.calo["VETO"].gain.copy(), setup.magnets["MS2"]
    try:
        conds.calo["VETO"].gain[:] *= 10
        setup.magnets["MS2"] = setup.magnets["MS1"]
        again_setup, again = reference_inputs("na64mu", 1002)
        assert again is not conds and again_setup is not setup
        np.testing.assert_array_equal(again.calo["VETO"].gain, gain)
        assert again_setup.magnets["MS2"] == ms2
    finally:  # (the edited objects may still be held elsewhere in this process)
        conds.calo["VETO"].gain[:] = gain
        setup.magnets["MS2"] = ms2
