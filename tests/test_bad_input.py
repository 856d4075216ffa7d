"""Bad input that the checksums cannot catch (a file written wrongly, with valid checksums),
a run list naming one file twice, and malformed YAML: each is an error naming the file,
the branch or key, the value and what was expected, never a silently wrong result."""

from __future__ import annotations

import shutil
from pathlib import Path

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


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -5.0, 1e300])
def test_a_non_finite_truth_weight_is_refused_not_summed_into_the_cutflow(tmp_path, value):
    """(a NaN weight made every weighted row of the cut-flow NaN, silently; a negative one
    was summed; one of 1e300, events per beam particle, overflowed the sums to inf)"""
    path = _write(tmp_path / "w.root", tweak=_set(TRUTH, "weight", slice(250, 260), value))
    with open_raw(path) as raw, pytest.raises(RawFormatError) as err:
        raw.truth()
    assert (f"{path}: branch truth.weight of entry 250 is {value!r}; expected a weight in 0..1 (expected events "
            "per beam particle) (10 entries") in str(err.value)
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


CROSS_CHUNK = [  # each chunk of 200 events in order, not the file
    (lambda e: np.concatenate([e[:200], e[199:599]]), "of entry 200 is 199, after 199 at entry 199", "duplicated"),
    (lambda e: np.concatenate([e[200:400], e[:200], e[400:]]), "of entry 200 is 0, after 399 at entry 199",
     "out of order"),
    (lambda e: np.concatenate([e[:200], e[:400]]), "of entry 200 is 0, after 199 at entry 199", "out of order"),
]


def _reorder(order):
    def tweak(ev, spills, tr):
        ev["event"] = order(ev["event"])
        tr["event"] = ev["event"]
    return tweak


@pytest.mark.parametrize("order, words, why", CROSS_CHUNK)
def test_event_numbers_are_checked_across_the_chunks_of_a_run(tmp_path, order, words, why):
    """(each chunk of 200 events is in order: a duplicate or a swap at a chunk boundary was
    processed silently; then found after the run only, where --skip-bad-files could not skip it)"""
    path = _write(tmp_path / "c.root", tweak=_reorder(order))
    for executor in ("iterative", "futures"):
        with pytest.raises(RawFormatError) as err:
            _run([path], executor=executor, workers=2)
        assert str(err.value) == (f"{path}: branch events.event {words}; expected event numbers strictly "
                                  f"increasing ({why})")
    with open_raw(path) as raw, pytest.raises(RawFormatError, match="expected event numbers strictly increasing"):
        raw.events()


@pytest.mark.parametrize("order, words, why", CROSS_CHUNK)
def test_a_file_out_of_order_across_chunks_is_skipped_whole_when_asked(tmp_path, order, words, why):
    """(the order across chunks was checked after the run, in postprocess: a bad file stopped a
    --skip-bad-files run, and its events could not be taken out of the merged outputs)"""
    bad = _write(tmp_path / "c.root", tweak=_reorder(order))
    good = _write(tmp_path / "good.root", first_event=10_000, tweak=_set(TRUTH, "p_out", slice(0, 100), 20.0))
    alone = _run([good])["d"]
    for executor in ("iterative", "futures"):
        out = _run([good, bad], skip_bad_files=True, executor=executor, workers=2)["d"]
        prov = out["provenance"]
        assert prov.skipped == {bad: {"reason": f"{bad}: branch events.event {words}; expected event numbers "
                                                f"strictly increasing ({why})", "events": 600}}
        assert prov.events_processed == 600 and prov.events_processed + prov.events_skipped == prov.events_total == 1200
        assert list(prov.files) == [good]
        # nothing of the bad file in the outputs: the same as the good file alone
        assert (prov.n_beam, prov.n_spills, prov.n_triggered) == (alone["provenance"].n_beam, 2, 600) \
            and alone["provenance"].n_beam == 100_000
        assert out["cutflow"].to_dict() == alone["cutflow"].to_dict()
        assert {k: v.to_dict() for k, v in out["regions"].items()} == \
            {k: v.to_dict() for k, v in alone["regions"].items()}
        for group in ("hists", "nminus1"):
            assert out[group].keys() == alone[group].keys()
            for name, h in out[group].items():
                np.testing.assert_array_equal(h.values(flow=True), alone[group][name].values(flow=True))
                np.testing.assert_array_equal(h.variances(flow=True), alone[group][name].variances(flow=True))


def test_the_processors_check_of_chunk_spans_still_names_the_file():
    """(what a processor run outside the runner, which checks no file first, still finds)"""
    from processors.base import Provenance, check_event_spans

    prov = Provenance("p", "s", "h", "f", "t", "v", files={
        "x.root": {"event_spans": [(200, 0, 199), (0, 0, 199)]}, "y.root": {"event_spans": [(0, 1, 5)]}})
    with pytest.raises(RawFormatError, match=r"^x\.root: branch events\.event of entry 200 is 0, after 199 at "
                                             r"entry 199; .*\(out of order\)"):
        check_event_spans(prov)


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
    # (each was read without a word: a gain of 1e30 MeV per count made a 3.5e31 GeV ECAL energy)
    ("gain_mev_per_adc", 1e30, "key 'detectors.ECAL.gain_mev_per_adc': channel 3 has 1e+30; expected gains "
                               "within 0.04..400 MeV per count (0.01-100 x the setup's nominal_gain 4 MeV)"),
    ("pedestal_even", 1e9, "key 'detectors.ECAL.pedestal_even': channel 3 has 1e+09; expected pedestals in ADC "
                           "counts within 0..4095"),
    ("pedestal_odd", -3000.0, "key 'detectors.ECAL.pedestal_odd': channel 3 has -3000; expected pedestals in ADC "
                              "counts within 0..4095"),
    ("noise_adc", 0.0, "key 'detectors.ECAL.noise_adc': channel 3 has 0; expected noise in ADC counts above 0, "
                       "below 4095"),
    ("time_offset_ns", 1e12, "key 'detectors.ECAL.time_offset_ns': channel 3 has 1e+12; expected time offsets "
                             "within +-400 ns (the sampled window)"),
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


@pytest.mark.parametrize("truth", [True, False])
def test_the_reco_export_checks_event_numbers_across_its_chunks(tmp_path, truth, capsys):
    """(`na64reco reco` checked each chunk alone: a file whose second chunk restarts the event
    numbers was exported silently)"""
    from na64reco.cli import main
    from na64reco.export import iterate_reco, reconstruct_file

    path = _write(tmp_path / "r.root", truth=truth, tweak=_reorder(lambda e: np.concatenate([e[:300], e[:300]])))
    words = (f"{path}: branch events.event of entry 300 is 0, after 299 at entry 299; expected event numbers "
             "strictly increasing (out of order)")
    with pytest.raises(RawFormatError) as err:
        reconstruct_file(path, tmp_path / "r.parquet", chunk_size=300)
    assert str(err.value) == words
    assert main(["reco", path, "-o", str(tmp_path / "r2.parquet"), "--chunk-size", "300", "--quiet"]) == 1
    assert words in capsys.readouterr().err and not (tmp_path / "r2.parquet").exists()
    dup = _write(tmp_path / "d.root", truth=truth, tweak=_reorder(lambda e: np.concatenate([e[:200], e[199:599]])))
    with pytest.raises(RawFormatError, match=r"d\.root: branch events\.event of entry 200 is 199, after 199 at entry "
                                             r"199; expected event numbers strictly increasing \(duplicated\)"):
        for _ in iterate_reco(dup, chunk_size=200):
            pass
    good = _write(tmp_path / "g.root", truth=truth)
    withheld = []
    assert sum(len(r) for r, *_ in iterate_reco(good, chunk_size=200, withheld=withheld)) + sum(withheld) == 600


def test_the_event_numbers_of_a_data_file_are_read_alone_as_numpy_and_nothing_else(tmp_path):
    """(the runner reads every file's event numbers before the run: identifiers, no measured
    quantity; any other branch of a data file's events stays refused as numpy)"""
    from na64reco.errors import BlindingError

    path = _write(tmp_path / "d.root", truth=False, first_event=3)
    with open_raw(path) as raw:
        np.testing.assert_array_equal(raw.event_numbers(), np.arange(3, 603))
        with pytest.raises(BlindingError, match="read as awkward arrays only"):
            raw.read_verified("events", library="np", branches=("run", "event", "time_in_spill"))


def _simulate(path, seed=1, run=1001, **kw):
    from na64reco.sim.generate import simulate

    simulate("na64mu", kw.pop("n", 300), seed, run, path, process=kw.pop("process", "beam"), trigger="calibration",
             spill_particles=100, **kw)
    return str(path)


def _check(files, **kw):
    from na64reco.runner import check_files

    return check_files({"d": list(files)}, "na64mu", skip_bad_files=kw.get("skip_bad_files", False))


def test_two_simulations_with_one_seed_are_refused_not_a_double_mot(tmp_path):
    """(`simulate --seed 1` run twice gives two files of identical content with other ROOT
    UUIDs: a fileset with both doubled the MOT, silently)"""
    a, again = _simulate(tmp_path / "a.root"), _simulate(tmp_path / "again.root")
    with open_raw(a) as x, open_raw(again) as y:
        assert x.uuid != y.uuid and x.meta["sums_checksum"] == y.meta["sums_checksum"]  # (what made it silent)
    words = (f"dataset 'd': {again} holds the events of {a}: both were simulated with seed 1, setup 'na64mu', "
             "period '2022', process 'beam', trigger 'calibration' and the same other settings, and share spills 1-3 "
             "(each spill's random stream is (seed, spill), whatever the run number)")
    for skip in (False, True):
        with pytest.raises(ConfigError) as err:
            _run([a, again], skip_bad_files=skip)
        assert str(err.value).startswith(words) and "counted twice; simulate one of them with another --seed" \
            in str(err.value), str(err.value)
    # spills 3-5 of seed 1 overlap spill 3 of a (spills are numbered from 1, as in the files, the DQM and
    # --bad-spills); more beam, same first spills too; the same seed in another run of the period: the same
    # beam particles (the streams do not depend on the run)
    for other, spills in [(_simulate(tmp_path / "late.root", first_spill=2), "3-3"),
                          (_simulate(tmp_path / "more.root", n=500), "1-3"),
                          (_simulate(tmp_path / "r.root", run=1002), "1-3")]:
        with pytest.raises(ConfigError, match=f"share spills {spills} "):
            _check([a, other])
    # legitimate: another seed of the same run (MC campaigns), the next spills of the same seed
    # (na64reco.campaign), one seed in another period's run (another setup), and one file per dataset
    fine = [a, _simulate(tmp_path / "b.root", seed=2), _simulate(tmp_path / "next.root", first_spill=3),
            _simulate(tmp_path / "p.root", run=10001)]
    assert _check(fine).good["d"] == fine
    # one seed of another process holds other events, but is another sample: not in the same dataset
    with pytest.raises(ConfigError, match=r"mixes simulated 'beam' files .* and simulated 'halo' files"):
        _check([a, _simulate(tmp_path / "halo.root", process="halo")])
    # one seed at another beam energy holds other events, but is another sample: not in the same dataset
    with pytest.raises(ConfigError, match=r"mixes files of a 160 GeV beam .* and files of a 100 GeV beam"):
        _check([a, _simulate(tmp_path / "e.root", beam_energy=100_000.0)])
    out = run_files({"x": [a], "y": [again]}, RunOptions("na64mu_invisible", chunksize=200))
    assert out["x"]["provenance"].n_beam == out["y"]["provenance"].n_beam == 300


def test_data_files_of_one_run_with_overlapping_event_numbers_are_refused(tmp_path):
    """(a data file copied and re-written, or one chunk of a run listed in two files, doubled
    its events and MOT)"""
    a = _write(tmp_path / "a.root", run=7, truth=False)  # events 0-599
    late = _write(tmp_path / "late.root", run=7, truth=False, first_event=599, n=10)
    for skip in (False, True):
        with pytest.raises(ConfigError) as err:
            _check([a, late], skip_bad_files=skip)
        assert str(err.value) == (f"dataset 'd': {late} holds events of {a}: both are data of setup 'na64mu' run 7 "
                                  "and their event numbers overlap (599-599 here): its events and beam particles "
                                  "would be counted twice; list each file once")
    early = _write(tmp_path / "early.root", run=7, truth=False, first_event=-5, n=10)  # (-5...4)
    with pytest.raises(ConfigError, match=r"early\.root holds events of .*a\.root.*overlap \(0-4 here\)"):
        _check([a, early])
    # consecutive files of one run, and the same numbers in another run, are other events
    check = _check([a, _write(tmp_path / "next.root", run=7, truth=False, first_event=600),
                    _write(tmp_path / "before.root", run=7, truth=False, first_event=-600),
                    _write(tmp_path / "run8.root", run=8, truth=False)])
    assert len(check.good["d"]) == 4


def test_a_rewritten_copy_is_refused_by_its_content(tmp_path):
    """(a file written again with the same content has another UUID: its events counted twice)"""
    a, b = _write(tmp_path / "a.root"), _write(tmp_path / "b.root")
    with pytest.raises(ConfigError) as err:
        _check([a, b])
    with open_raw(a) as raw:
        assert str(err.value).startswith(f"dataset 'd': {b} has the same content as {a} (the same checksum table, "
                                         f"{raw.meta['sums_checksum']}): its events")
    assert len(_check([a, _write(tmp_path / "c.root", first_event=600)]).good["d"]) == 2


def test_calibrate_and_dqm_refuse_one_file_twice_as_the_runner_does(tmp_path, monkeypatch, capsys):
    """(both summed a file listed twice, a copy or a same-seed simulation twice, silently)"""
    from na64reco import dqm
    from na64reco.calibration.publish import calibrate_files
    from na64reco.cli import main
    from na64reco.geometry import load_setup

    a = _simulate(tmp_path / "a.root")
    copy = tmp_path / "copy.root"
    shutil.copy(a, copy)
    again = _simulate(tmp_path / "again.root")
    monkeypatch.chdir(tmp_path)
    setup = load_setup("na64mu")
    for files, words in [(["a.root", "./a.root"], "./a.root is listed twice (as a.root)"),
                         ([a, str(copy)], f"{copy} is a copy of {a} (the same ROOT file UUID "),
                         ([a, again], f"{again} holds the events of {a}: both were simulated with seed 1")]:
        with pytest.raises(ConfigError) as err:
            calibrate_files("mip", setup, files, 1001)
        assert str(err.value).startswith("calibration inputs (mip): " + words), str(err.value)
        with pytest.raises(ConfigError) as err:
            dqm.measure_files(files)
        assert str(err.value).startswith("dqm inputs: " + words), str(err.value)
        assert main(["dqm", "--output", "q", "--no-plots", *files]) == 1
        assert "dqm inputs: " + words in capsys.readouterr().err and not (tmp_path / "q").exists()
        assert main(["calibrate", "--setup", "na64mu", "--kind", "pedestals", "--runs", "1", "2", "--tag", "t",
                     "--calib-dir", str(_calib_copy(tmp_path)), *files]) == 1
        assert "calibration inputs (pedestals): " + words in capsys.readouterr().err
    b = _simulate(tmp_path / "b.root", seed=2)  # another seed of the run: fine
    assert [q.path for q in dqm.measure_files([a, b])] == [a, b]


def _calib_copy(tmp_path):
    from na64reco.resources import calib_dir

    root = tmp_path / "calib"
    if not root.exists():
        shutil.copytree(calib_dir(), root)
    return root


@pytest.mark.parametrize("branch, value, words", [
    ("trigger", 8, "expected a non-empty mask of the trigger bits"),
    ("trigger", 0, "expected a non-empty mask of the trigger bits"),
    ("time_in_spill", float("nan"), "expected a finite time"),
])
def test_event_words_outside_the_format_are_refused(tmp_path, branch, value, words):
    """(a trigger word of all bits set stopped the run inside the histogram filling, naming
    neither the branch nor the value, even with --skip-bad-files; a NaN time was accepted)"""
    path = _write(tmp_path / "t.root", tweak=_set(EVENTS, branch, 7, value))
    with open_raw(path) as raw, pytest.raises(RawFormatError, match=rf"t\.root: branch events\.{branch} of entry 7 "
                                                                    rf"is .*; {words}"):
        raw.events()
    good = _write(tmp_path / "good.root", first_event=10_000)
    prov = _run([good, path], skip_bad_files=True)["d"]["provenance"]
    assert prov.skipped[path]["events"] == 200 and f"events.{branch}" in prov.skipped[path]["reason"]
    assert prov.events_processed + prov.events_skipped == prov.events_total == 1200


def test_an_unknown_truth_process_code_is_refused(tmp_path):
    path = _write(tmp_path / "p.root", tweak=_set(TRUTH, "process", 3, 99))
    with open_raw(path) as raw, pytest.raises(RawFormatError, match=r"branch truth\.process of entry 3 is 99; "
                                                                    r"expected a process code"):
        raw.truth()


def test_msadc_samples_outside_the_adc_range_are_refused():
    """(samples of +-30000 written with valid checksums moved a pedestal: an HCAL energy of 1.55
    GeV became 0)"""
    from na64reco.reco.waveform import check_samples

    adc = np.full((4, 32), 200, np.int16)
    check_samples(adc, "f.root", max_adc=4095)
    for value in (-1, 4096, 30000, -30000):
        bad = adc.copy()
        bad[2, 17] = value
        with pytest.raises(RawFormatError, match=rf"f\.root: digit 2 has MSADC sample 17 = {value}; "
                                                 r"expected raw ADC counts 0\.\.4095"):
            check_samples(bad, "f.root", max_adc=4095)


@pytest.mark.parametrize("edit, words", [
    ("dead_strips: []", "dead_strips: [99999]"),
    ("alignment_mm: 0.0444", "alignment_mm: .nan"),
])
def test_a_tracker_calibration_error_names_its_file_and_is_never_a_bad_raw_file(calib, small_na64mu_files,
                                                                                 monkeypatch, edit, words):
    """(a dead strip out of range was a RawFormatError of the raw file: --skip-bad-files skipped every
    good file of the run and the run succeeded; a NaN alignment was accepted)"""
    from na64reco import runner

    for path in (calib / "conditions/na64mu/tracker").glob("v*.yaml"):
        path.write_text(path.read_text().replace(edit, words, 1) if edit in path.read_text()
                        else path.read_text().replace("alignment_mm: ", "alignment_mm: .nan #", 1))
    monkeypatch.setenv("NA64RECO_CALIB", str(calib))
    opts = RunOptions("na64mu_invisible", skip_bad_files=True)
    with pytest.raises(NA64Error) as err:
        run_files({"d": [str(small_na64mu_files["mc"])]}, opts)
    message = str(err.value)
    # (found when the conditions are loaded since stop 47, a ConfigError itself; before, by the hits' tables)
    assert ("ConfigError" in message or isinstance(err.value, ConfigError)) and "tracker/v" in message
    assert str(calib) in message
    assert ("dead_strips" if "dead" in words else "alignment_mm") in message
    assert not runner.is_bad_file(err.value)


def test_the_skip_reasons_of_a_files_chunks_are_separated(tmp_path):
    path = _write(tmp_path / "w.root", tweak=_set(TRUTH, "weight", slice(0, 600), float("nan")))
    good = _write(tmp_path / "good.root", first_event=10_000)
    prov = _run([good, path], skip_bad_files=True)["d"]["provenance"]
    reason = prov.skipped[path]["reason"]
    assert reason.startswith("entries 0-200: ") and reason.count("; entries ") == 2, reason


def test_the_skip_reasons_of_a_files_chunks_are_in_entry_order_whatever_order_they_finished():
    """(futures and dask finish chunks in any order: the provenance listed 14644, 10460, ... and so
    differed between executors and runs)"""
    from na64reco.runner import _in_entry_order

    reasons = [f"entries {a}-{a + 2092}: RawFormatError: bad basket" for a in (10460, 12552, 14644, 2000, 0)]
    for order in (reasons, reasons[::-1], reasons[2:] + reasons[:2]):
        assert [r.split(":")[0] for r in _in_entry_order(order)] == [
            "entries 0-2092", "entries 2000-4092", "entries 10460-12552", "entries 12552-14644", "entries 14644-16736"]


def test_the_reco_export_names_the_file_and_entry_of_truth_rows_of_other_events(tmp_path, capsys):
    """(``na64reco reco`` stopped with 'internal error, a bug' on such a file)"""
    from na64reco.cli import main

    def tweak(ev, spills, tr):
        tr["event"] = tr["event"].copy()  # (the events' array otherwise)
        tr["event"][250:] += 100_000
    path = _write(tmp_path / "t.root", tweak=tweak)
    assert main(["reco", path, "--output", str(tmp_path / "t.parquet"), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "internal error" not in err
    assert f"{path}: truth rows do not match the events: entry 250 has truth.event 100250 and events.event 250" in err


@pytest.mark.parametrize("tweak, words", [
    (_set(SPILLS, "n_triggered", 0, 10), r"spill 1 has 300 events in the events tree, but spills\.n_triggered says 10"),
    (_set(SPILLS, "spill", 1, 3), r"events of spill\(s\) \[2\] that the spills tree does not list"),
])
def test_spill_counts_that_disagree_with_the_events_are_a_bad_file_before_the_run(tmp_path, tweak, words):
    """(found only when the exposure was settled, after the file's events were processed: the
    whole run failed, also with --skip-bad-files, and `na64reco verify` said ok)"""
    path = _write(tmp_path / "s.root", tweak=tweak)
    with open_raw(path) as raw, pytest.raises(RawFormatError, match=rf"s\.root: {words}"):
        raw.verify()
    with pytest.raises(NA64Error, match=rf"s\.root: {words}"):
        _run([path])
    good = _write(tmp_path / "good.root", first_event=10_000)
    prov = _run([good, path], skip_bad_files=True)["d"]["provenance"]
    assert prov.skipped[path]["events"] == 600 and prov.events_processed == 600
    assert prov.events_processed + prov.events_skipped == prov.events_total == 1200


@pytest.mark.parametrize("cut", [1, 1000])
def test_a_file_cut_short_after_its_data_is_refused(tmp_path, cut):
    """(a file missing its last bytes, the records ROOT writes at the end, passed `na64reco verify`)"""
    good = _write(tmp_path / "good.root")
    data = Path(good).read_bytes()
    path = tmp_path / "cut.root"
    path.write_bytes(data[:-cut])
    with pytest.raises(RawFormatError, match=rf"cut\.root: (file is truncated: {len(data) - cut} bytes, its header "
                                             rf"says {len(data)}|not a readable ROOT file)"):
        open_raw(path)


def test_verify_checks_the_digits_of_each_event_and_the_truth_rows_as_a_run_does(tmp_path):
    def tweak(ev, spills, tr):
        tr["event"] = tr["event"].copy()
        tr["event"][42] += 1_000_000
    path = _write(tmp_path / "t.root", tweak=tweak)
    with open_raw(path) as raw, pytest.raises(RawFormatError, match=r"t\.root: truth rows do not match the events: "
                                                                    r"entry 42 has truth\.event 1000042"):
        raw.verify()


def test_verify_checks_the_adc_range_and_the_run_period_as_the_reconstruction_does(tmp_path, capsys):
    """(`na64reco verify` said ok for samples of -30000 and for a run in no period of its setup, both
    refused by `na64reco run`)"""
    from na64reco.cli import main

    def tweak(ev, spills, tr):
        ev["n_calo"] = np.zeros(600, np.int64)
        ev["n_calo"][3] = 1
        ev["calo_det"], ev["calo_chan"] = [1], [0]
        ev["calo_adc"] = np.full((1, 32), 200, np.int16)
        ev["calo_adc"][0, 5] = -30000
    adc = _write(tmp_path / "adc.root", tweak=tweak)
    period = _write(tmp_path / "period.root", run=99_999_999)
    assert main(["verify", adc, period]) == 1
    out = capsys.readouterr().out
    assert f"{adc}: BAD: {adc}: digit 0 has MSADC sample 5 = -30000; expected raw ADC counts 0..4095" in out
    assert f"{period}: BAD: {period}: setup 'na64mu', run 99999999: " in out and "is in no period" in out


def test_the_reco_export_checks_the_spill_counts_as_the_runner_does(tmp_path, capsys):
    from na64reco.cli import main

    path = _write(tmp_path / "s.root", tweak=_set(SPILLS, "spill", 1, 3))
    assert main(["reco", path, "--output", str(tmp_path / "s.parquet"), "--quiet"]) == 1
    assert f"{path}: events of spill(s) [2] that the spills tree does not list" in capsys.readouterr().err


# ---- values outside their physical range (docs/raw-format.md, "on reading") -------------------------
@pytest.mark.parametrize("n_beam, words", [
    (100, r"expected at least the spill's n_triggered, 300 \(the beam counters count every particle"),
    (2**62, r"expected a count of beam particles per spill <= 1e\+10"),
])
def test_an_implausible_beam_count_is_a_bad_file_before_the_run(tmp_path, n_beam, words):
    """(fewer beam particles than triggered events, or 2^62, was summed into the MOT silently)"""
    path = _write(tmp_path / "b.root", tweak=_set(SPILLS, "n_beam", 1, n_beam))
    message = rf"b\.root: branch spills\.n_beam of entry 1 is {n_beam}; {words}"
    with open_raw(path) as raw:
        with pytest.raises(RawFormatError, match=message):
            raw.spills()
        with pytest.raises(RawFormatError, match=message):
            raw.verify()  # (`na64reco verify`)
    with pytest.raises(RawFormatError, match=message):
        _run([path])
    good = _write(tmp_path / "good.root", first_event=10_000)
    prov = _run([good, path], skip_bad_files=True)["d"]["provenance"]  # (the file check reads the spills)
    assert prov.skipped[path]["events"] == 600 and "spills.n_beam" in prov.skipped[path]["reason"]
    assert prov.events_processed == 600 and prov.n_beam == 100_000
    assert prov.events_processed + prov.events_skipped == prov.events_total == 1200


def _digit(collection: str, entry: int, **values):
    """A tweak giving event ``entry`` one ``collection`` digit with ``values`` (the others none)."""
    def tweak(ev, spills, tr):
        n = len(ev["event"])
        ev[f"n_{collection}"] = np.zeros(n, np.int64)
        ev[f"n_{collection}"][entry] = 1
        for name, value in values.items():
            ev[f"{collection}_{name}"] = [value]
    return tweak


#: (tweak, branch, entry, value, what is expected)
DIGITS = [
    # (2^31 - 1: the hit fell outside its plane's time window, the 2022 tracking, which wants a hit on
    # every plane, found no MS2 track, and p_out was NaN, silently)
    (_digit("straw", 250, plane=14, tube=3, tdc=2**31 - 1), "straw_tdc", 250, 2**31 - 1,
     r"TDC counts 0\.\.360 \(the straw TDC window of setup 'na64mu': 300 ns from the trigger plus the 60 ns longest "
     r"drift, at 1 ns per count\)"),
    (_digit("straw", 250, plane=14, tube=3, tdc=-7), "straw_tdc", 250, -7, r"TDC counts 0\.\.360"),
    (_digit("apv", 250, plane=0, chan=5, a0=10, a1=-32768, a2=10), "apv_a1", 250, -32768,
     r"a pedestal-subtracted APV sample in -4095\.\.4095 \(the ADC range of setup 'na64mu'"),
    (_digit("apv", 250, plane=0, chan=5, a0=30000, a1=40, a2=10), "apv_a0", 250, 30000,
     r"a pedestal-subtracted APV sample in -4095\.\.4095"),
]
TIMES = [
    (_set(EVENTS, "time_in_spill", 250, -1.0), "time_in_spill", 250, -1.0,
     r"a time in the spill, 0\.\.4\.8 s \(the spill duration of setup 'na64mu'\)"),
    (_set(EVENTS, "time_in_spill", 250, 60.0), "time_in_spill", 250, 60.0, r"a time in the spill, 0\.\.4\.8 s"),
]


@pytest.mark.parametrize("tweak, branch, entry, value, words", DIGITS + TIMES)
def test_event_values_outside_their_range_are_refused_by_run_reco_and_verify(tmp_path, capsys, tweak, branch, entry,
                                                                              value, words):
    """(a straw TDC of 2^31 - 1 gave a NaN momentum, an APV sample of -32768 a wrong cluster, a time
    in the spill of -1 s or 60 s was accepted: all silently)"""
    from na64reco.cli import main

    path = _write(tmp_path / "v.root", tweak=tweak)
    digit = r" \(digit 0 of the entry\)" if branch != "time_in_spill" else ""
    message = rf"v\.root: branch events\.{branch} of entry {entry}{digit} is {value!r}; expected {words}"
    with open_raw(path) as raw:
        with pytest.raises(RawFormatError, match=message):
            raw.events()
        with pytest.raises(RawFormatError, match=message):
            raw.verify()
    assert main(["verify", path]) == 1
    assert f"{path}: BAD: {path}: branch events.{branch} of entry {entry}" in capsys.readouterr().out
    assert main(["reco", path, "--output", str(tmp_path / "v.parquet"), "--quiet"]) == 1  # (`na64reco reco`)
    assert f"{path}: branch events.{branch} of entry {entry}" in capsys.readouterr().err
    with pytest.raises(NA64Error, match=message):
        _run([path])  # (`na64reco run`: the processor's check of the chunk)
    good = _write(tmp_path / "good.root", first_event=10_000)
    prov = _run([good, path], skip_bad_files=True)["d"]["provenance"]  # its chunk of entries 200-400 skipped
    assert prov.skipped[path]["events"] == 200 and f"events.{branch} of entry {entry}" in prov.skipped[path]["reason"]
    assert prov.events_processed == 1000
    assert prov.events_processed + prov.events_skipped == prov.events_total == 1200


@pytest.mark.parametrize("branch, value", [("p_in", -5.0), ("p_in", float("inf")), ("p_out", 1.0e6),
                                           ("p_out", -0.5)])
def test_a_truth_momentum_outside_the_physical_range_is_refused(tmp_path, branch, value):
    path = _write(tmp_path / "p.root", tweak=_set(TRUTH, branch, slice(250, 252), value))
    message = (rf"p\.root: branch truth\.{branch} of entry 250 is {value!r}; expected a momentum in 0\.\.500 GeV or "
               r"NaN for none \(na64reco\.constants\.TRUTH_MOMENTUM_MAX: above the 400 GeV/c of the SPS protons")
    with open_raw(path) as raw:
        with pytest.raises(RawFormatError, match=message):
            raw.truth()
        with pytest.raises(RawFormatError, match=message):
            raw.verify()
    with pytest.raises(NA64Error, match=rf"p\.root.*truth\.{branch} of entry 250"):
        _run([path])
    good = _write(tmp_path / "good.root", first_event=10_000)
    prov = _run([good, path], skip_bad_files=True)["d"]["provenance"]
    assert prov.skipped[path]["events"] == 200 and f"truth.{branch}" in prov.skipped[path]["reason"]
    assert prov.events_processed + prov.events_skipped == prov.events_total == 1200
    # NaN (no such particle: a pedestal event, an electron beam's p_out) and the beam's own are fine
    fine = _write(tmp_path / "f.root", tweak=_set(TRUTH, branch, slice(0, 300), float("nan")))
    with open_raw(fine) as raw:
        raw.verify()


def test_the_simulator_refuses_a_beam_energy_above_the_north_area_protons():
    """(the truth of such a beam would be refused by every reader)"""
    import hepunits as u

    from na64reco.geometry import load_setup
    from na64reco.sim.beam import with_beam_energy

    setup = load_setup("na64e")
    assert with_beam_energy(setup, 400 * u.GeV).beam.energy == 400 * u.GeV
    with pytest.raises(ConfigError, match=r"beam energy 450 GeV: expected above 0 and at most 400 GeV, the SPS"):
        with_beam_energy(setup, 450 * u.GeV)


def test_a_truncated_file_of_a_multi_file_run_is_reported_under_its_own_dataset(tmp_path):
    """(a file that cannot be opened was put in a dataset 'default' of its own, whose provenance then
    listed it, instead of the dataset it belongs to)"""
    from na64reco.runner import fileset_from_files

    good = _write(tmp_path / "good.root", first_event=10_000)
    whole = Path(_write(tmp_path / "whole.root")).read_bytes()
    cut = tmp_path / "cut.root"
    cut.write_bytes(whole[:-1000])
    data = _write(tmp_path / "data.root", truth=False)
    junk = tmp_path / "junk.root"
    junk.write_bytes(b"not root")
    fileset = fileset_from_files([good, str(cut), data, str(junk)])
    assert fileset == {"mc": [good, str(cut)], "data": [data], "default": [str(junk)]}
    del fileset["data"], fileset["default"]
    out = run_files(fileset, RunOptions("na64mu_invisible", chunksize=200, skip_bad_files=True),
                    processor_instance=Processor(reco=synthetic_reco))
    assert set(out) == {"mc"}
    prov = out["mc"]["provenance"]
    assert list(prov.skipped) == [str(cut)] and "truncated" in prov.skipped[str(cut)]["reason"]
    assert prov.events_processed == 600


def _write_blocks(path, numbers, *, truth=True, block=150):
    """A raw file of events with the event numbers ``numbers`` (2 spills), written ``block`` events at a
    time (one checksum block each)."""
    n = len(numbers)
    numbers = np.asarray(numbers, np.int64)
    spill = 1 + np.arange(n) * 2 // n
    with RawWriter(path, setup="na64mu", run=1, has_truth=truth) as w:
        for a in range(0, n, block):
            sl = slice(a, min(a + block, n))
            k = sl.stop - sl.start
            zeros = np.zeros(k, np.int64)
            w.write_events({"run": np.ones(k, np.int64), "spill": spill[sl], "event": numbers[sl],
                            "trigger": np.ones(k, np.uint32), "time_in_spill": np.zeros(k), "n_calo": zeros,
                            "calo_det": [], "calo_chan": [], "calo_adc": np.zeros((0, 32)), "n_apv": zeros,
                            "apv_plane": [], "apv_chan": [], "apv_a0": [], "apv_a1": [], "apv_a2": [],
                            "n_straw": zeros, "straw_plane": [], "straw_tube": [], "straw_tdc": []})
            if truth:
                w.write_truth({"run": np.ones(k, np.int64), "spill": spill[sl], "event": numbers[sl],
                               "process": np.full(k, PROCESSES["beam"]), "p_in": np.full(k, 160.0),
                               "p_out": np.full(k, 100.0), "x": np.zeros(k), "vertex_z": np.zeros(k),
                               "e_ecal": zeros, "e_ecal_preshower": zeros, "e_hcal": zeros, "e_vhcal": zeros,
                               "e_veto": zeros, "e_srd": zeros, "weight": np.full(k, 0.5)})
        w.write_spills({"run": np.ones(2, np.int64), "spill": np.array([1, 2]), "n_beam": np.full(2, 50_000),
                        "n_triggered": np.full(2, n // 2)})
    return str(path)


def test_whole_file_scans_read_a_bounded_number_of_entries_and_agree_with_the_whole_columns(tmp_path, monkeypatch):
    """The check before a run, the export's and `verify` read a file a step at a time (stop 39: they
    held its whole identifier columns, ~150 MB more at 1e7 events, and `verify` all its events)."""
    from na64reco.io import raw as raw_module

    path = _write_blocks(tmp_path / "b.root", np.arange(1000, 1600) * 3)
    reads = []
    original = raw_module.RawFile.read_verified

    def spy(self, tree, entry_start=None, entry_stop=None, library="ak", branches=None):
        reads.append((tree if branches is None else f"{tree} {','.join(branches)}", entry_start, entry_stop))
        return original(self, tree, entry_start, entry_stop, library, branches)

    monkeypatch.setattr(raw_module.RawFile, "read_verified", spy)
    with open_raw(path) as raw:
        whole = raw.read_verified("events", library="np", branches=("run", "spill", "event"))
        assert raw.scan_ranges("events", 200) == [(0, 300), (300, 600)]
        reads.clear()
        ids = raw.scan_ids(step=150)
        assert [r[1:] for r in reads] == [(0, 150), (150, 300), (300, 450), (450, 600)]
        spills, counts = np.unique(whole["spill"], return_counts=True)
        assert (ids.n_events, ids.first, ids.last) == (600, 3000, 4797)
        assert np.array_equal(ids.spills, spills) and np.array_equal(ids.counts, counts)
        assert np.array_equal(ids.span_numbers(), [3000, 4797])
        reads.clear()
        assert raw.verify(step=150) == {"events": 600, "spills": 2, "truth": 600}
        # whole events a step at a time; the identifiers (order, spill counts) in one scan of SCAN_ENTRIES
        assert sorted(r[1:] for r in reads if r[0] == "events") == [(0, 150), (150, 300), (300, 450), (450, 600)]
        assert [r[1:] for r in reads if r[0] == "events run,spill,event"] == [(0, 600)]
        assert raw.verify() == {"events": 600, "spills": 2, "truth": 600}


def test_whole_file_scans_see_the_event_order_across_their_reads(tmp_path):
    numbers = np.concatenate([np.arange(0, 150), np.arange(100, 550)])  # restarts at entry 150, a read's first
    path = _write_blocks(tmp_path / "o.root", numbers)
    with open_raw(path) as raw:
        for scan in (lambda: raw.scan_ids(step=150), lambda: raw.verify(step=150)):
            with pytest.raises(RawFormatError, match=r"o\.root: branch events\.event of entry 150 is 100, after 149"):
                scan()


def test_the_simulator_writes_only_values_the_readers_accept(tmp_path):
    """APV samples saturate at ``trackers.apv_max_adc`` and straw TDC counts stay inside the readers'
    bound (:class:`ValueRanges`) also for a setup without a straw window (stop 39's audit: the simulator
    clipped APV samples to int16 only and cut the TDC counts only inside a window)."""
    import dataclasses

    import uproot

    from na64reco.geometry import load_setup
    from na64reco.io.raw import ValueRanges
    from na64reco.sim.generate import simulate

    base = load_setup("na64mu", run=1001)
    setup = dataclasses.replace(base, readout=dataclasses.replace(base.readout, apv_max_adc=120,
                                                                  straw_noise_window=(0.0, 0.0)))
    path = tmp_path / "s.root"
    simulate(setup, 400, 3, 1001, path, trigger="calibration")
    with uproot.open(path) as f:
        ev = f["events"].arrays(["apv_a0", "apv_a1", "apv_a2", "straw_tdc"], library="np")
    samples = np.concatenate([np.concatenate(list(ev[k])) for k in ("apv_a0", "apv_a1", "apv_a2")])
    tdc = np.concatenate(list(ev["straw_tdc"]))
    assert np.abs(samples).max() == 120 and (samples == 120).sum() > 100  # saturated, not dropped
    assert tdc.size > 300 and tdc.min() >= 0 and tdc.max() <= ValueRanges.of(setup).straw_tdc_max


def test_a_bad_digit_is_named_by_its_file_run_and_event_in_every_command(tmp_path, capsys):
    """(`na64reco display` named the file `<digits>`; `reco --chunk-size 10` and `run` named an entry
    counted within the chunk, 'entry 9' for the file's entry 39)"""
    from na64reco.cli import main

    path = _write(tmp_path / "d.root", tweak=_digit("calo", 39, det=999, chan=3, adc=np.full(32, 300)))
    where = "run 1 event 39 (detector id 999 channel 3)"
    assert main(["reco", path, "--output", str(tmp_path / "d.parquet"), "--chunk-size", "10", "--quiet"]) == 1
    err = capsys.readouterr().err
    assert path in err and where in err and "entry" not in err, err
    assert main(["display", path, "--event", "39", "--output", str(tmp_path / "d.png")]) == 1
    err = capsys.readouterr().err
    assert path in err and where in err and "<digits>" not in err, err


def test_a_coupling_whose_signal_weight_is_above_one_is_refused(tmp_path):
    """(the simulator wrote a weight of 2.85 events per beam particle for eps = 3, which its own
    reader then refused; before, the yield's failure was also hidden behind a weight of 1)"""
    import hepunits as u

    from na64reco.sim.generate import simulate

    with pytest.raises(ConfigError, match=r"coupling 3 at mass 0\.001 GeV gives 2\.85 expected signal events per "
                                          r"beam particle, not in 0\.\.1"):
        simulate("na64e", 300, 1, 1, tmp_path / "s.root", process="signal", mass=0.001 * u.GeV, coupling=3.0)
    assert not (tmp_path / "s.root").exists()

