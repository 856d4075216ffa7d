"""Blinding holes found by a third audit of the blinding (tests fail without their fixes).

* A calibration file edited, read, then restored: the loaded conditions (cached by the
  loaders and the processors) still hold the edited constants, while the blinding compared
  the inputs by the file's bytes *now* -- equal to the reference's -- and skipped the
  reference reconstruction.  VETO gains x20 made every box event a "visible control"
  (``na64reco.export.iterate_reco`` exported all of them, the processor filled them).
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import yaml

from na64reco.resources import calib_dir


@pytest.fixture(scope="module")
def box_data(tmp_path_factory):
    """A data-like (no truth) NA64mu file of Z' signal events: most of them in the box."""
    from na64reco.sim.generate import simulate

    path = tmp_path_factory.mktemp("audit3") / "signal_data.root"
    simulate("na64mu", 1500, 5, 1001, path, process="signal", mass=0.1, truth=False)
    return path


def _calib_copy(tmp_path):
    root = tmp_path / "calib"
    shutil.copytree(calib_dir(), root)
    return root


def _veto_gains_x20(path):
    """Write VETO gains x20 into the calorimeter payload ``path``; returns its original bytes."""
    original = path.read_bytes()
    body = yaml.safe_load(original)
    body["detectors"]["VETO"]["gain_mev_per_adc"] = [20 * g for g in body["detectors"]["VETO"]["gain_mev_per_adc"]]
    path.write_text(yaml.safe_dump(body))
    return original


def _exported_events(path, **kw):
    from na64reco.export import iterate_reco

    return {int(e) for chunk, _, _ in iterate_reco(path, **kw) for e in np.asarray(chunk.event)}


def test_export_after_a_calibration_file_restored_withholds_the_reference_box(box_data, tmp_path, monkeypatch):
    nominal = _exported_events(box_data)
    root = _calib_copy(tmp_path)
    payload = root / "conditions" / "na64mu" / "calorimeter" / "v001.yaml"
    original = _veto_gains_x20(payload)
    monkeypatch.setenv("NA64RECO_CALIB", str(root))
    _exported_events(box_data)  # the edited payload read (and cached)
    payload.write_bytes(original)  # the file as the reference's again, the cached constants not
    shown = _exported_events(box_data)
    assert shown <= nominal, f"{len(shown - nominal)} events the reference hides were exported"


def test_processor_after_a_calibration_file_restored_fills_no_box_event(box_data, tmp_path, monkeypatch):
    from na64reco.runner import RunOptions, run_files

    def box_entries(out):
        h = out["data"]["hists"]["p_out"][{"stage": "all"}]
        return h.values()[h.axes[0].edges[:-1] < 80].sum(), out["data"]["cutflow"].n[0]

    opts = RunOptions("na64mu_invisible", executor="iterative", status=False)
    nominal = box_entries(run_files({"data": [str(box_data)]}, opts))
    root = _calib_copy(tmp_path)
    payload = root / "conditions" / "na64mu" / "calorimeter" / "v001.yaml"
    original = _veto_gains_x20(payload)
    monkeypatch.setenv("NA64RECO_CALIB", str(root))
    run_files({"data": [str(box_data)]}, opts)  # the processor caches the edited conditions
    payload.write_bytes(original)
    in_box, kept = box_entries(run_files({"data": [str(box_data)]}, opts))
    assert in_box <= nominal[0] and kept <= nominal[1]


def test_a_setup_file_read_with_two_contents_is_not_the_reference(tmp_path):
    """The reconstruction's caches are keyed by the setup file's path: after the file was read
    with another content in this process, its objects are not identified by its bytes."""
    from na64reco.conditions import load_conditions
    from na64reco.geometry import load_setup
    from na64reco.selection.blinding import uses_reference_inputs

    root = _calib_copy(tmp_path)
    setup_file = root / "setups" / "na64mu.yaml"
    text = setup_file.read_text()
    try:
        setup = load_setup(str(setup_file), run=1001)
        conditions = load_conditions(setup, 1001, root=root)
        assert uses_reference_inputs(setup, conditions)  # a copy, read once: the reference's files
        setup_file.write_text(text + "\n# edited\n")
        assert not uses_reference_inputs(setup, conditions)  # edited since it was read
        load_setup.cache_clear()
        load_setup(str(setup_file), run=1001)  # read with the other content
        setup_file.write_text(text)
        load_setup.cache_clear()
        setup = load_setup(str(setup_file), run=1001)
        assert not uses_reference_inputs(setup, load_conditions(setup, 1001, root=root))
    finally:
        load_setup.cache_clear()


def test_a_reference_calibration_file_restored_after_a_read_stops_the_export(box_data, tmp_path, monkeypatch):
    """The package's own calib/ is the analyst's in a checkout: VETO gains x20 written into it, read
    (cached by path), the file restored.  The reference reconstruction would be made from the cached
    edit, so it is refused (a fresh process reads the file again); found by the review of the fix."""
    from na64reco.errors import BlindingError
    from na64reco.geometry import load_setup
    from na64reco.selection import blinding

    nominal = _exported_events(box_data)
    root = _calib_copy(tmp_path)
    payload = root / "conditions" / "na64mu" / "calorimeter" / "v001.yaml"

    def clear():
        blinding._reference_inputs.cache_clear()
        blinding._reference_files.cache_clear()
        load_setup.cache_clear()

    clear()
    monkeypatch.setattr(blinding, "package_calib_dir", lambda: root)  # the reference's files: this copy
    monkeypatch.setenv("NA64RECO_CALIB", str(root))  # and the analyst's the same files
    try:
        original = _veto_gains_x20(payload)
        _exported_events(box_data)  # the edit read: reference and analyst's inputs alike
        payload.write_bytes(original)
        try:
            shown = _exported_events(box_data)
        except BlindingError as exc:
            assert "changed after this process read it" in str(exc) and str(payload) in str(exc)
        else:
            assert shown <= nominal, f"{len(shown - nominal)} events the reference hides were exported"
    finally:
        clear()


def test_a_calibration_other_than_the_reference_says_sidebands_may_count_short(box_data, tmp_path, monkeypatch):
    """With another calibration, the events the reference reconstruction protects are withheld as well;
    next to the box they can fall in a sideband (p_out 79 GeV in the reference, 81 GeV here), whose data
    count is then short of the simulation's: the summary says so, and only then (a static fact of the
    inputs, not of the events: it tells nothing about the box)."""
    from na64reco.runner import RunOptions, run_files
    from na64reco.summary import cutflow_summary, format_summary

    opts = RunOptions("na64mu_invisible", executor="iterative", status=False)
    text = format_summary(cutflow_summary(run_files({"data": [str(box_data)]}, opts)))
    assert "not the reference one" not in text
    root = _calib_copy(tmp_path)
    _veto_gains_x20(root / "conditions" / "na64mu" / "calorimeter" / "v001.yaml")
    monkeypatch.setenv("NA64RECO_CALIB", str(root))
    text = format_summary(cutflow_summary(run_files({"data": [str(box_data)]}, opts)))
    assert "the calibration is not the reference one" in text


def test_the_reference_flag_of_a_file_is_any_chunks():
    """(the first chunk's flag won: a calibration edited mid-run left the summary silent)"""
    from processors.base import Provenance

    def prov(flag):
        p = Provenance("p", "s", "x", "f", "t", "v")
        p.files = {"a.root": {"events": 1, "chunks": 1, "reference_withheld": flag}}
        return p

    assert (prov(False) + prov(True)).files["a.root"]["reference_withheld"] is True
    merged = prov(False)
    merged += prov(True)
    assert merged.files["a.root"]["reference_withheld"] is True
    assert (prov(False) + prov(False)).files["a.root"]["reference_withheld"] is False
