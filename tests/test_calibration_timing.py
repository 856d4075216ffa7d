"""``calibrate --kind timing``: MSADC channel time offsets from a beam run, against the offsets
the run was simulated with (``docs/calibration.md``, "Timing")."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from na64reco.calibration.publish import calibrate_files
from na64reco.calibration.timing import median_shift
from na64reco.cli import main
from na64reco.conditions import STATUS_NOISY, load_conditions, nominal_content, publish
from na64reco.errors import NA64Error
from na64reco.geometry import load_setup
from na64reco.io.raw import open_raw
from na64reco.reco.event import reconstruct

sim = pytest.importorskip("na64reco.sim.generate", reason="needs the simulator (na64reco.sim.generate)")

REPO_CALIB = Path(__file__).resolve().parent.parent / "calib"
RUN = 500
#: the late cable of the true detector: every channel of HCAL module 1, beyond the 25 ns window
LATE_NS = 40.0
#: the HCAL channel the "base-masked" tag marks noisy (the centre cell of module 0)
MASKED_HCAL = 4


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A private calib dir whose 'true-time' tag differs from the default one only in the
    calorimeters' time offsets (each moved by N(0, 4 ns), HCAL module 1 by 40 ns more), a base tag
    'base-masked' that marks one HCAL centre cell noisy, and a 30k-muon run of the beam mixture
    (calibration trigger) simulated with the true tag."""
    root = tmp_path_factory.mktemp("calib")
    shutil.copytree(REPO_CALIB, root, dirs_exist_ok=True)
    mp = pytest.MonkeyPatch()
    mp.setenv("NA64RECO_CALIB", str(root))
    setup = load_setup("na64mu", run=RUN)
    base = load_conditions(setup, RUN, root=root)
    content = nominal_content(setup, seed=1)  # the default tag's calorimeter constants (calib v001)
    rng = np.random.default_rng(7)
    for name, d in content["calorimeter"]["detectors"].items():
        assert np.allclose(d["gain_mev_per_adc"], base.calo[name].gain, rtol=1e-4), name  # only the times differ
        off = np.asarray(base.calo[name].time_offset) + rng.normal(0.0, 4.0, setup.detector(name).n_channels)
        if name == "HCAL":
            off[_module_of(setup)] += LATE_NS
        d["time_offset_ns"] = np.round(off, 2).tolist()
    publish("na64mu", "true-time", (1, 999999), {"calorimeter": content["calorimeter"]}, base_tag="na64mu-default",
            comment="true time offsets of the timing closure", root=root)
    # a base tag that masks the centre cell of HCAL module 0 (noisy): its pulses must not be used
    masked = nominal_content(setup, seed=1)["calorimeter"]
    masked["detectors"]["HCAL"]["status"][MASKED_HCAL] = STATUS_NOISY
    publish("na64mu", "base-masked", (1, 999999), {"calorimeter": masked}, base_tag="na64mu-default", root=root)
    muons = root / "mu.root"
    # the beam mixture (pile-up muons at other times, halo, rare processes) with the calibration trigger
    sim.simulate("na64mu", 30000, 12, RUN, muons, calib_tag="true-time", trigger="calibration")
    yield setup, root, muons, base, load_conditions(setup, RUN, "true-time", root=root)
    mp.undo()


def _module_of(setup, module: int = 1) -> np.ndarray:
    hcal = setup.detector("HCAL")
    return hcal.cell_of_channel(np.arange(hcal.n_channels))[0] == module


def test_timing_closure_by_the_command(world, capsys):
    setup, root, muons, base, true = world
    code = main(["calibrate", "--setup", "na64mu", "--kind", "timing", "--runs", "400", "600", "--tag", "time-1",
                 "--base-tag", "base-masked", "--calib-dir", str(root), str(muons)])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "timing: " in out and "published tag 'time-1'" in out
    assert re.search(r"HCAL: 3 calibrated, 33 left at the base values; offsets moved by at most \+4\d\.\d\d", out), out
    assert f"HCAL channel {MASKED_HCAL}: 0 clean pulses < 50" in out  # masked in the base: not used, said so
    new = load_conditions(setup, RUN, "time-1", root=root)
    base = load_conditions(setup, RUN, "base-masked", root=root)
    res = calibrate_files("timing", setup, [muons], RUN, base_tag="base-masked", root=root, runs=(400, 600))
    assert new.calo["HCAL"].time_offset[MASKED_HCAL] == base.calo["HCAL"].time_offset[MASKED_HCAL]
    pulls, n_cal = [], {}
    for name, d in res.derived.items():
        ok = np.isfinite(d["time_offset"])
        n_cal[name] = int(ok.sum())
        np.testing.assert_allclose(new.calo[name].time_offset[ok], d["time_offset"][ok], atol=6e-5)  # as published
        # channels without enough clean pulses keep the base offset exactly
        np.testing.assert_array_equal(new.calo[name].time_offset[~ok], base.calo[name].time_offset[~ok])
        pulls.append((d["time_offset"][ok] - true.calo[name].time_offset[ok]) / d["error"][ok])
    pulls = np.concatenate(pulls)
    # the beam-centre channels: counters, VETO paddles on the beam, HCAL centre cells, ECAL main-section core
    assert all(n_cal[c] == 1 for c in ("S0", "S1", "S4", "Smu")) and n_cal["HCAL"] == 3 and n_cal["ECAL"] >= 10
    assert pulls.size >= 25
    # the median's error is right: pulls of unit width, no bias (a MIN_SIGNIFICANCE of 0
    # takes the ECAL preshower's small, late pulses: a +0.8 ns bias, pulls up to 17)
    assert np.all(np.abs(pulls) < 4.5), pulls
    assert abs(pulls.mean()) < 4.0 / np.sqrt(pulls.size), pulls
    assert 0.5 < pulls.std() < 1.5, pulls
    # the late module's centre cell is found 40 ns late to 0.1 ns
    centre = np.flatnonzero(_module_of(setup) & np.isfinite(res.derived["HCAL"]["time_offset"]))
    assert centre.size == 1
    assert abs(res.derived["HCAL"]["shift"][centre[0]] - (true.calo["HCAL"].time_offset[centre[0]]
                                                          - base.calo["HCAL"].time_offset[centre[0]])) < 0.1
    assert res.derived["HCAL"]["shift"][centre[0]] > 30


def test_timing_restores_the_late_module_energy(world):
    """Reconstructed with the base tag, HCAL module 1 is out of the 25 ns window and reads 0; with the
    calibrated offsets it reads what the true offsets give (only its outer cells, rarely hit by a
    beam muon, stay uncalibrated)."""
    setup, root, muons, base, true = world
    if not (root / "tags" / "time-2.yaml").exists():
        assert main(["calibrate", "--setup", "na64mu", "--kind", "timing", "--runs", "400", "600", "--tag", "time-2",
                     "--calib-dir", str(root), str(muons)]) == 0
    new = load_conditions(setup, RUN, "time-2", root=root)
    with open_raw(muons) as f:
        events = f.events()
    module = {}
    for label, cond in (("true", true), ("base", base), ("new", new)):
        reco = reconstruct(events, setup, cond, source=str(muons))
        module[label] = np.asarray(reco.hcal_module_energy)[:, 1]
    n = module["true"].size
    assert module["true"].mean() > 2.0  # a MIP in an HCAL module, ~2.7 GeV
    assert module["base"].mean() < 0.05 * module["true"].mean()
    assert abs(module["new"].mean() / module["true"].mean() - 1) < 3 * module["true"].std() / np.sqrt(n) / \
        module["true"].mean() + 0.002
    assert np.mean(module["new"] == module["true"]) > 0.99


def test_timing_needs_beam_pulses(world, tmp_path):
    setup, root, _, _, _ = world
    ped = tmp_path / "ped.root"
    sim.simulate("na64mu", 200, 11, RUN, ped, process="pedestal", calib_tag="true-time")
    with pytest.raises(NA64Error, match=r"too few clean pulses in 200 events of .*ped\.root"):
        calibrate_files("timing", setup, [ped], RUN, root=root)


@pytest.mark.parametrize(("name", "draw"), [
    ("50 Gaussian", lambda rng: rng.normal(0.0, 1.5, 50)),
    ("400 Laplace", lambda rng: rng.laplace(0.0, 1.5, 400)),
    ("400 + 20 % pile-up", lambda rng: np.r_[rng.normal(2.5, 1.5, 400), rng.uniform(-150, 150, 100)]),
])
def test_median_shift_error_against_toys(name, draw):
    """The median's error against the scatter of medians over 1500 toys (its own error ~2 %): right at
    the default 50 entries (whole ranks gave 1.29x), for a peaked mixture of resolutions (Laplace: the
    MAD-based 1.2533 sigma / sqrt(n) gives 1.29x) and with out-of-time pile-up in the tails."""
    rng = np.random.default_rng(3)
    meds, errs = [], []
    for _ in range(1500):
        m, e, _ = median_shift(draw(rng))
        meds.append(m)
        errs.append(e)
    ratio = np.mean(errs) / np.std(meds)
    assert 0.92 < ratio < 1.1, (name, ratio)


def test_only_clean_significant_pulses_are_used(monkeypatch):
    """The digits a channel's offset is measured from: not masked, saturated, pile-up or below threshold,
    a finite time, at least MIN_SIGNIFICANCE noise sigmas; the others' times are far off and would
    move the median of a few entries."""
    from na64reco.calibration import timing
    from na64reco.reco import waveform as wf

    setup = load_setup("na64mu", run=RUN)
    cond = load_conditions(setup, RUN)
    hcal = setup.detector("HCAL")
    noise = cond.calo["HCAL"].noise_adc[0]
    nominal = wf.waveform_config(setup).nominal_time
    flags = [0, 0, 0, wf.FLAG_MASKED, wf.FLAG_SATURATED, wf.FLAG_PILEUP, wf.FLAG_BELOW_THRESHOLD, 0, 0,
             wf.FLAG_OUT_OF_TIME]
    amp = [20 * noise] * 7 + [9.9 * noise, 20 * noise, 20 * noise]
    time = [nominal + 1.0, nominal + 1.5, nominal + 2.0] + [nominal + 90.0] * 5 + [np.nan, nominal + 3.0]
    n = len(flags)
    digits = wf.Digits(np.full(n, hcal.id, np.int16), np.zeros(n, np.int16), np.asarray(amp), np.asarray(time),
                       np.zeros(n), np.zeros(n), np.zeros(n), np.zeros(n), np.asarray(flags, np.uint8))
    monkeypatch.setattr(timing, "digits_of_events", lambda *a, **k: (digits, np.zeros(n, np.int64), np.zeros(1)))
    col = timing.TimeCollector(setup, cond)
    col.add([None])
    res = col.residuals()
    # the three clean ones and the out-of-time one (the offset decides what is in time)
    np.testing.assert_allclose(np.sort(res[hcal.id * col.width]), [1.0, 1.5, 2.0, 3.0])
