"""Run quality (na64reco.dqm): closure against faults injected by the simulator, the bad-spill
list honoured by ``run --bad-spills`` (events dropped, MOT of the good spills only), and the
small pieces (group medians against numpy, the robust judgement, fault and list validation).

The closure run: NA64mu beam muons with the calibration trigger (every muon through the beam
counters is written), 6 spills of 2000 MOT, three faults in three spills.
"""

from __future__ import annotations

import awkward as ak
import numpy as np
import pytest

from na64reco import dqm
from na64reco.errors import ConfigError
from na64reco.io.raw import open_raw
from na64reco.runner import RunOptions, run_files
from na64reco.sim import simulate

SPILLS, PER_SPILL = 6, 2000
FAULTS = [
    {"spill": 2, "kind": "pedestal_jump", "detector": "ECAL", "channel": 44, "adc": 40},  # a beam cell
    {"spill": 4, "kind": "noisy_channel", "detector": "ECAL", "channel": 5, "noise_adc": 20},  # a quiet cell
    {"spill": 5, "kind": "dead_plane", "plane": "MM3X"},
]
FAULTY = {2: "ECAL channel 44: pedestal", 4: "ECAL channel 5: occupancy", 5: "MM3X: hit_fraction"}


@pytest.fixture(scope="module")
def beam_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("dqm")
    kw = dict(trigger="calibration", spill_particles=PER_SPILL)
    simulate("na64mu", SPILLS * PER_SPILL, 7, 1, d / "faulty.root", faults=FAULTS, **kw)
    simulate("na64mu", SPILLS * PER_SPILL, 7, 1, d / "healthy.root", **kw)
    return d / "faulty.root", d / "healthy.root"


@pytest.fixture(scope="module")
def assessments(beam_files):
    tol = dqm.load_tolerances()
    faulty, healthy = (dqm.measure_file(p) for p in beam_files)
    return dqm.assess([faulty], tol), dqm.assess([healthy], tol)


def test_faults_touch_only_their_spills(beam_files):
    """A spill without a fault is simulated with the same random numbers as without faults."""
    with open_raw(beam_files[0]) as f, open_raw(beam_files[1]) as h:
        ef, eh = f.events(), h.events()
        assert f.meta["simulation"]["faults"] == FAULTS
        assert list(f.spills()["n_beam"]) == [PER_SPILL] * SPILLS
    for spill in range(1, SPILLS + 1):
        a, b = ef[ef.spill == spill], eh[eh.spill == spill]
        fields = [("calo", "det"), ("calo", "chan"), ("calo", "adc"), ("apv", "plane"), ("apv", "chan"),
                  ("apv", "a0")]
        same = len(a) == len(b) and all(
            np.array_equal(ak.to_numpy(ak.ravel(a[c][k])), ak.to_numpy(ak.ravel(b[c][k]))) for c, k in fields)
        assert same == (spill not in FAULTY), spill


def test_dqm_flags_exactly_the_faulty_spills(assessments):
    faulty, healthy = assessments
    assert {b["spill"] for b in faulty.bad} == set(FAULTY)
    for b in faulty.bad:
        assert any(r.startswith(FAULTY[b["spill"]]) for r in b["reasons"]), b
        # the fault explains the flag: nothing else in that spill is out of tolerance
        assert all(r.split(":")[0] == FAULTY[b["spill"]].split(":")[0] for r in b["reasons"]), b
    assert healthy.bad == []


def test_measured_fault_sizes(assessments):
    """The injected sizes come back: +40 ADC pedestal, occupancy 1, no hit on the dead plane."""
    a = assessments[0]
    f = a.files[0]
    ch = f.channels.index(("ECAL", 44))
    shift = f.pedestal[1, ch] - np.median(np.delete(f.pedestal[:, ch], 1))
    assert shift == pytest.approx(40.0, abs=0.5)  # median of >100 digits: error ~0.3 ADC
    noisy = f.channels.index(("ECAL", 5))
    assert f.occupancy[3, noisy] == 1.0
    assert f.noise[3, noisy] == pytest.approx(20.0, rel=0.1)  # rms of the pedestal samples
    assert f.hit_fraction[4, f.planes.index("MM3X")] == 0.0
    assert f.n_events.sum() == f.n_triggered.sum()


def test_run_with_the_bad_spill_list(beam_files, assessments, tmp_path):
    """``run --bad-spills``: MOT = sum of the good spills' n_beam; their events alone are filled."""
    path = dqm.write_bad_spills(assessments[0], tmp_path / "bad_spills.yaml")
    assert set(dqm.load_bad_spills(path)) == {(1, s) for s in FAULTY}
    out = run_files({"beam": [str(beam_files[0])]}, RunOptions("na64mu_invisible", bad_spills=path))
    prov = out["beam"]["provenance"]
    with open_raw(beam_files[0]) as f:
        sp = f.spills()
    good = ~np.isin(sp["spill"], list(FAULTY))
    assert prov.n_beam == int(sp["n_beam"][good].sum()) == (SPILLS - len(FAULTY)) * PER_SPILL
    assert prov.n_spills == SPILLS - len(FAULTY)
    assert sorted(s["spill"] for s in prov.excluded_spills) == sorted(FAULTY)
    assert prov.events_excluded == int(sp["n_triggered"][~good].sum())
    assert out["beam"]["cutflow"].to_dict()["cutflow"][0]["events"] == int(sp["n_triggered"][good].sum())
    plain = run_files({"beam": [str(beam_files[0])]}, RunOptions("na64mu_invisible"))["beam"]["provenance"]
    assert plain.n_beam == SPILLS * PER_SPILL and plain.events_excluded == 0 and plain.excluded_spills == []


def test_group_median_matches_numpy():
    rng = np.random.default_rng(3)
    key = rng.integers(0, 7, 500)
    value = rng.normal(size=500)
    med, n = dqm.group_median(key, value, 9)
    for k in range(9):
        sel = value[key == k]
        assert n[k] == sel.size
        assert (np.isnan(med[k]) if sel.size == 0 else med[k] == pytest.approx(np.median(sel)))


def test_judge_is_robust_against_the_outlier():
    x = np.array([[10.0], [10.1], [9.9], [10.0], [30.0], [10.05]])
    pull, med = dqm.judge(x, np.zeros_like(x), np.ones_like(x, bool), floor=1.0, n_sigma=5.0)
    assert med[0] == pytest.approx(10.025)
    assert np.flatnonzero(pull[:, 0] > 1) == [4]
    # fewer than MIN_SPILLS valid spills: nothing judged
    valid = np.zeros_like(x, bool)
    valid[:2] = True
    assert np.isnan(dqm.judge(x, np.zeros_like(x), valid, 1.0, 5.0)[0]).all()


@pytest.mark.parametrize("fault, message", [
    ({"spill": 1, "kind": "melted"}, "kind 'melted' is not one of"),
    ({"spill": 0, "kind": "dead_plane", "plane": "MM1X"}, "spill must be an integer >= 1"),
    ({"spill": 1, "kind": "dead_plane", "plane": "MM9X"}, "plane 'MM9X' is not a plane"),
    ({"spill": 1, "kind": "pedestal_jump", "detector": "ECAL", "channel": 60, "adc": 5}, "channel 60 of ECAL"),
    ({"spill": 1, "kind": "noisy_channel", "detector": "ECAL", "channel": 1}, "missing key(s) ['noise_adc']"),
])
def test_bad_faults_are_refused(fault, message, tmp_path):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        simulate("na64mu", 10, 1, 1, tmp_path / "x.root", faults=[fault])


def test_a_spill_listed_twice_keeps_the_reasons_of_both_entries(tmp_path):
    """(the second entry's reasons replaced the first's, silently)"""
    p = tmp_path / "b.yaml"
    p.write_text("schema_version: 1\nspills: [{run: 1, spill: 2, reasons: [a]}, {run: 1, spill: 2, reasons: [b, a]},"
                 " {run: 1, spill: 3}]\n")
    assert dqm.load_bad_spills(p) == {(1, 2): ["a", "b"], (1, 3): []}


def test_bad_spill_list_errors(tmp_path):
    p = tmp_path / "b.yaml"
    with pytest.raises(dqm.BadSpillsError, match="not found"):
        dqm.load_bad_spills(p)
    p.write_text("spills: []\n")
    with pytest.raises(dqm.BadSpillsError, match="schema_version"):
        dqm.load_bad_spills(p)
    p.write_text("schema_version: 1\nspills: [{run: 1}]\n")
    with pytest.raises(dqm.BadSpillsError, match=r"spills\[0\] needs integer 'run' and 'spill'"):
        dqm.load_bad_spills(p)
    with pytest.raises(dqm.BadSpillsError, match="spills"):  # refused before any file is read
        run_files({"x": ["nofile.root"]}, RunOptions("na64mu_invisible", bad_spills=p))


def test_files_of_two_run_periods_are_refused_naming_them(tmp_path, capsys):
    """(a 2022 and a 2023 run together: 'internal error, a bug in na64reco (ValueError: ... size 17 and ...
    size 21)', their tracker planes)"""
    from na64reco.cli import main

    a, b = tmp_path / "a.root", tmp_path / "b.root"
    simulate("na64mu", 300, 1, 1001, a, trigger="calibration")
    simulate("na64mu", 300, 2, 12000, b, trigger="calibration")
    assert main(["dqm", str(a), str(b), "--output", str(tmp_path / "q")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "internal error" not in err, err
    assert "several run periods of setup 'na64mu' (2022: a.root (run 1001); 2023: b.root (run 12000))" in err
    assert not (tmp_path / "q").exists()


def test_a_list_of_too_few_spills_says_so_and_run_warns(tmp_path, capsys):
    """(dqm of fewer than three spills wrote an empty bad_spills.yaml with no sign that nothing was judged;
    `run --bad-spills` took it silently)"""
    import yaml

    from na64reco.cli import main

    path = tmp_path / "one.root"
    simulate("na64mu", 300, 1, 1001, path, trigger="calibration")
    assert main(["dqm", str(path), "--output", str(tmp_path / "q"), "--no-plots"]) == 0
    listed = yaml.safe_load((tmp_path / "q" / "bad_spills.yaml").read_text())
    assert listed["judged"] is False and listed["spills"] == []
    capsys.readouterr()
    assert main(["run", "--processor", "na64mu_invisible", "--no-plots", "--bad-spills",
                 str(tmp_path / "q" / "bad_spills.yaml"), "--output", str(tmp_path / "r"), str(path)]) == 0
    assert "says judged: false" in capsys.readouterr().err


@pytest.mark.parametrize(("section", "key"), [("tracker", "hit_fraction_flor"), ("tracker", "min_entries"),
                                              (None, "nsigma"), ("rates", "missing_events")])
def test_an_unknown_tolerance_is_refused_naming_it(tmp_path, section, key):
    """A misspelt or misplaced tolerance (``calo.min_entries`` put under ``tracker``) was silently
    ignored: the user believed it applied."""
    import yaml

    doc = yaml.safe_load(dqm.default_tolerances_path().read_text())
    (doc[section] if section else doc)[key] = 0.3
    path = tmp_path / "tol.yaml"
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(ConfigError, match=rf"tol\.yaml.*{key}.*unknown key"):
        dqm.load_tolerances(path)
    assert dqm.load_tolerances().n_sigma == 5.0  # the shipped file passes
