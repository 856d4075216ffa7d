"""Bad input that the checksums cannot catch (a file written wrongly, with valid checksums),
a run list naming one file twice, and malformed YAML: each is an error naming the file,
the branch or key, the value and what was expected, never a silently wrong result."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from test_processors_synthetic import synthetic_reco

from na64reco.config import load_yaml
from na64reco.errors import ConfigError, NA64Error, RawFormatError
from na64reco.io.raw import PROCESSES, RawWriter, open_raw
from na64reco.runner import RunOptions, run_files
from processors.na64mu_invisible import Processor


def _write(path, *, n=600, run=1, truth=True, first_event=0, tweak=None):
    """A raw file of ``n`` events without digits in 2 spills; ``tweak(events, spills, truth)``
    edits the arrays before they are written (the checksums are then those of the edit)."""
    event = np.arange(first_event, first_event + n, dtype=np.int64)
    spill = 1 + (event - first_event) * 2 // n
    zeros = np.zeros(n, np.int64)
    ev = {"run": np.full(n, run), "spill": spill, "event": event, "trigger": np.ones(n, np.uint32),
          "time_in_spill": np.zeros(n), "n_calo": zeros, "calo_det": [], "calo_chan": [],
          "calo_adc": np.zeros((0, 32)), "n_apv": zeros, "apv_plane": [], "apv_chan": [], "apv_a0": [],
          "apv_a1": [], "apv_a2": [], "n_straw": zeros, "straw_plane": [], "straw_tube": [], "straw_tdc": []}
    spills = {"run": np.full(2, run), "spill": np.array([1, 2]), "n_beam": np.full(2, 50_000),
              "n_triggered": np.full(2, n // 2)}
    tr = {"run": np.full(n, run), "spill": spill, "event": event, "process": np.full(n, PROCESSES["beam"]),
          "p_in": np.full(n, 160.0), "p_out": np.full(n, 100.0), "x": np.zeros(n), "vertex_z": np.zeros(n),
          "e_ecal": zeros, "e_ecal_preshower": zeros, "e_hcal": zeros, "e_vhcal": zeros, "e_veto": zeros,
          "e_srd": zeros, "weight": np.full(n, 0.5)}
    if tweak is not None:
        tweak(ev, spills, tr)
    with RawWriter(path, setup="na64mu", run=run, has_truth=truth) as w:
        w.write_events(ev)
        w.write_spills(spills)
        if truth:
            w.write_truth(tr)
    return str(path)


def _run(files, **kw):
    return run_files({"d": list(files)}, RunOptions("na64mu_invisible", chunksize=200, **kw),
                     processor_instance=Processor(reco=synthetic_reco))


def _set(tree: int, branch: str, index, value):
    def tweak(*trees):
        trees[tree][branch] = np.array(trees[tree][branch], dtype=float if isinstance(value, float) else None)
        trees[tree][branch][index] = value
    return tweak


EVENTS, SPILLS, TRUTH = 0, 1, 2


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_a_non_finite_truth_weight_is_refused_not_summed_into_the_cutflow(tmp_path, value):
    """(a NaN weight made every weighted row of the cut-flow NaN, silently)"""
    path = _write(tmp_path / "w.root", tweak=_set(TRUTH, "weight", slice(250, 260), value))
    with open_raw(path) as raw, pytest.raises(RawFormatError) as err:
        raw.truth()
    assert f"{path}: branch truth.weight of entry 250 is {value!r}; expected a finite weight (10 entries" \
        in str(err.value)
    with pytest.raises(NA64Error, match=r"w\.root.*truth\.weight of entry 250"):
        _run([path])
    good = _write(tmp_path / "good.root", first_event=10_000)
    out = _run([good, path], skip_bad_files=True)  # a bad file: skipped chunk by chunk when asked
    prov = out["d"]["provenance"]
    assert prov.skipped[path]["events"] == 200 and "truth.weight" in prov.skipped[path]["reason"]
    assert prov.events_processed == 1000 and prov.events_processed + prov.events_skipped == prov.events_total == 1200
    assert all(np.isfinite(r["sumw"]) for r in out["d"]["cutflow"].to_dict()["cutflow"])


@pytest.mark.parametrize("branch", ["n_beam", "n_triggered"])
def test_a_negative_spill_count_is_refused_not_a_negative_mot(tmp_path, branch):
    path = _write(tmp_path / "s.root", tweak=_set(SPILLS, branch, 1, -5))
    with open_raw(path) as raw:
        with pytest.raises(RawFormatError, match=rf"s\.root: branch spills\.{branch} of entry 1 is -5; "
                                                 r"expected a count >= 0"):
            raw.spills()
        with pytest.raises(RawFormatError, match=f"spills.{branch}"):
            raw.verify()  # (`na64reco verify`)
    with pytest.raises(RawFormatError, match=f"spills.{branch}"):
        _run([path])


def test_rows_of_another_run_than_the_files_are_refused(tmp_path):
    """(the conditions are those of the metadata's run: events of another run were reconstructed
    with them, silently)"""
    path = _write(tmp_path / "r.root", run=7, tweak=_set(EVENTS, "run", slice(None), 8))
    with open_raw(path) as raw, pytest.raises(RawFormatError, match=r"branch events\.run of entry 0 is 8; "
                                                                     r"expected the file's run 7 \(metadata\)"):
        raw.events()
    with pytest.raises(NA64Error, match=r"r\.root.*events\.run of entry 0 is 8"):
        _run([path])
    spills = _write(tmp_path / "rs.root", run=7, tweak=_set(SPILLS, "run", 0, 8))
    with open_raw(spills) as raw, pytest.raises(RawFormatError, match=r"spills\.run of entry 0 is 8"):
        raw.spills()


@pytest.mark.parametrize("order, words", [
    (lambda e: np.concatenate([e[:300], e[299:599]]), "of entry 300 is 299, after 299 at entry 299"),
    (lambda e: e[::-1].copy(), "of entry 1 is 598, after 599 at entry 0"),
])
def test_duplicated_or_unordered_event_numbers_are_refused(tmp_path, order, words):
    """(a duplicated event that kept the spill's count was processed twice, silently)"""
    def tweak(ev, spills, tr):
        ev["event"] = order(ev["event"])
        tr["event"] = ev["event"]
    path = _write(tmp_path / "e.root", tweak=tweak)
    with open_raw(path) as raw, pytest.raises(RawFormatError) as err:
        raw.events()
    assert f"{path}: branch events.event {words}; expected event numbers strictly increasing" in str(err.value)
    with pytest.raises(NA64Error, match=r"e\.root.*expected event numbers strictly increasing"):
        _run([path])


@pytest.mark.parametrize("order, words", [
    (lambda e: np.concatenate([e[:200], e[199:599]]), "of entry 200 is 199, not after 199 of the entries before it"),
    (lambda e: np.concatenate([e[200:400], e[:200], e[400:]]), "of entry 200 is 0, not after 399 of the entries"),
])
def test_event_numbers_are_checked_across_the_chunks_of_a_run(tmp_path, order, words):
    """(each chunk of 200 events is in order: a duplicate or a swap at a chunk boundary was
    processed silently)"""
    def tweak(ev, spills, tr):
        ev["event"] = order(ev["event"])
        tr["event"] = ev["event"]
    path = _write(tmp_path / "c.root", tweak=tweak)
    for executor in ("iterative", "futures"):
        with pytest.raises(NA64Error) as err:
            _run([path], executor=executor, workers=2)
        assert f"{path}: branch events.event {words}" in str(err.value), str(err.value)
    with open_raw(path) as raw, pytest.raises(RawFormatError, match="expected event numbers strictly increasing"):
        raw.events()


def test_truth_rows_of_other_events_are_a_bad_file_skipped_when_asked(tmp_path):
    def tweak(ev, spills, tr):
        tr["event"] = tr["event"] + 1
    path = _write(tmp_path / "t.root", tweak=tweak)
    good = _write(tmp_path / "good.root", first_event=10_000)
    with pytest.raises(NA64Error, match=r"t\.root.*truth rows do not match"):
        _run([good, path])
    prov = _run([good, path], skip_bad_files=True)["d"]["provenance"]
    assert prov.skipped[path]["events"] == 600 and prov.events_processed == 600
    assert prov.events_processed + prov.events_skipped == prov.events_total == 1200


def test_a_file_listed_twice_or_copied_is_refused_before_the_run(tmp_path, monkeypatch):
    """(the same path twice stopped the run with a misleading spill count; a copy under
    another name doubled the events and the MOT, silently)"""
    a = _write(tmp_path / "a.root")
    copy = tmp_path / "copy.root"
    shutil.copy(a, copy)
    monkeypatch.chdir(tmp_path)
    for files, words in [([a, a], f"{a} is listed twice (as {a})"),
                         (["a.root", "./a.root"], "./a.root is listed twice (as a.root)"),
                         ([a, str(copy)], f"{copy} is a copy of {a} (the same ROOT file UUID ")]:
        for skip in (False, True):
            with pytest.raises(ConfigError) as err:
                _run(files, skip_bad_files=skip)
            assert str(err.value).startswith("dataset 'd': " + words) and "counted twice" in str(err.value)
    # files of one run (a spill may straddle two) are fine, as is one file in two datasets
    b = _write(tmp_path / "b.root", first_event=5000)
    assert _run([a, b])["d"]["provenance"].events_processed == 1200
    out = run_files({"x": [a], "y": [a]}, RunOptions("na64mu_invisible", chunksize=200),
                    processor_instance=Processor(reco=synthetic_reco))
    assert out["x"]["provenance"].events_processed == out["y"]["provenance"].events_processed == 600


def test_yaml_with_a_key_twice_or_not_text_is_refused(tmp_path):
    """(PyYAML keeps the last of two equal keys: a fileset's first dataset vanished silently)"""
    p = tmp_path / "fileset.yaml"
    p.write_text("schema_version: 1\ndatasets:\n  mc: [a.root]\n  data: [b.root]\n  mc: [c.root]\n")
    with pytest.raises(ConfigError, match=rf"{p}: malformed YAML \(line 5, column 3\): key 'mc' is given twice "
                                          r"\(first on line 3\)"):
        load_yaml(p)
    binary = tmp_path / "sel.yaml"
    binary.write_bytes(b"\xff\xfe\x00schema_version: 1\n")
    with pytest.raises(ConfigError, match=rf"{binary}: not a UTF-8 text file \(byte 0"):
        load_yaml(binary)
    ok = tmp_path / "ok.yaml"
    ok.write_text("a: &x {b: 1}\nc: *x\nd: {<<: *x, e: 2}\n")  # anchors and merge keys still read
    assert load_yaml(ok).data == {"a": {"b": 1}, "c": {"b": 1}, "d": {"b": 1, "e": 2}}


@pytest.fixture
def calib(tmp_path):
    """A private copy of calib/."""
    from na64reco.resources import calib_dir

    root = tmp_path / "calib"
    shutil.copytree(calib_dir(), root)
    return root


def test_two_conditions_files_of_one_version_for_a_run_are_refused(calib):
    """(the tie was broken by the file name, silently)"""
    from na64reco.conditions import load_conditions, resolve

    src = calib / "conditions/na64mu/calorimeter/v001.yaml"
    twin = src.with_name("v002.yaml")  # a copy whose version was not bumped
    twin.write_text(src.read_text().replace("runs: {first: 1, last: 999999}", "runs: {first: 100, last: 200}"))
    tag = calib / "tags/na64mu-default.yaml"
    tag.write_text(tag.read_text().replace("- na64mu/calorimeter/v001.yaml",
                                           "- na64mu/calorimeter/v001.yaml\n  - na64mu/calorimeter/v002.yaml"))
    assert resolve("na64mu-default", 50, calib)["calorimeter"] == src  # one file covers run 50
    with pytest.raises(ConfigError, match=rf"tag 'na64mu-default': calorimeter files {src} and {twin} both have "
                                          r"version 1 and cover run 150"):
        load_conditions("na64mu", 150, "na64mu-default", root=calib)


@pytest.mark.parametrize("field, value, words", [
    ("noise_adc", -1.0, "key 'detectors.ECAL.noise_adc.3': -1.0 is less than the minimum of 0"),
    ("status", 7, "key 'detectors.ECAL.status.3': 7 is not one of [0, 1, 2]"),  # (was: masked as if dead)
])
def test_a_calorimeter_constant_out_of_its_range_is_refused(calib, field, value, words):
    import yaml

    from na64reco.conditions import _payload, load_conditions

    path = calib / "conditions/na64mu/calorimeter/v001.yaml"
    data = yaml.safe_load(path.read_text())
    data["detectors"]["ECAL"][field][3] = value
    path.write_text(yaml.safe_dump(data))
    _payload.cache_clear()
    try:
        with pytest.raises(ConfigError) as err:
            load_conditions("na64mu", 10, "na64mu-default", root=calib)
        assert str(err.value) == f"{path}: {words}"
    finally:
        _payload.cache_clear()
