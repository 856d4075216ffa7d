"""Calibration closure: simulate calibration runs with known ("true") constants, derive the
constants from the raw files, compare with the truth within statistical tolerances."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from na64reco.calibration.mip import expected_mip, fit_mip_peak
from na64reco.calibration.publish import calibrate_files, publish_result
from na64reco.cli import main
from na64reco.conditions import load_conditions, nominal_content, publish
from na64reco.geometry import load_setup

sim = pytest.importorskip("na64reco.sim.generate", reason="needs the simulator (na64reco.sim.generate)")

REPO_CALIB = Path(__file__).resolve().parent.parent / "calib"
RUN = 500


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A private calib dir with a 'true' tag, a pedestal run and a muon run made with it."""
    root = tmp_path_factory.mktemp("calib")
    shutil.copytree(REPO_CALIB, root, dirs_exist_ok=True)
    mp = pytest.MonkeyPatch()
    mp.setenv("NA64RECO_CALIB", str(root))
    setup = load_setup("na64mu")
    publish("na64mu", "true-mu", (1, 999999), nominal_content(setup, seed=4242), base_tag="na64mu-default",
            comment="true constants of the closure test", root=root)
    ped = root / "ped.root"
    sim.simulate("na64mu", 400, 11, RUN, ped, process="pedestal", calib_tag="true-mu")
    muons = root / "mu.root"
    sim.simulate("na64mu", 30000, 12, RUN, muons, process="beam", calib_tag="true-mu")
    yield setup, root, ped, muons, load_conditions(setup, RUN, "true-mu", root=root)
    mp.undo()


def test_pedestal_closure(world):
    setup, root, ped, _, true = world
    res = calibrate_files("pedestals", setup, [ped], RUN, root=root)
    assert res.n_events == 400
    assert res.n_calibrated == sum(d.n_channels for d in setup.calorimeters.values())
    for name, d in res.derived.items():
        t = true.calo[name]
        # statistical error of a parity mean: noise / sqrt(16 samples x 400 events) ~ 0.03 ADC
        err = t.noise_adc / np.sqrt(16 * 400)
        assert np.all(np.abs(d["pedestal_even"] - t.pedestal_even) < 5 * err + 1e-6), name
        assert np.all(np.abs(d["pedestal_odd"] - t.pedestal_odd) < 5 * err + 1e-6), name
        # noise: relative error 1/sqrt(2 x 12800 samples) ~ 0.6 %
        np.testing.assert_allclose(d["noise_adc"], t.noise_adc, rtol=0.04, err_msg=name)
    # the base (default-tag) pedestals differ by ~30 ADC: the derived ones are not just copies
    base = load_conditions(setup, RUN, root=root)
    assert np.abs(base.calo["ECAL"].pedestal_even - true.calo["ECAL"].pedestal_even).mean() > 5


def test_mip_gain_closure(world):
    setup, root, ped, muons, true = world
    ped_res = calibrate_files("pedestals", setup, [ped], RUN, root=root)
    publish_result(ped_res, setup, "closure-ped", (1, 999999), base_tag="na64mu-default", root=root)
    res = calibrate_files("mip", setup, [muons], RUN, base_tag="closure-ped", root=root)
    n_checked = {}
    for name, d in res.derived.items():
        ok = np.isfinite(d["gain"])
        ratio = d["gain"][ok] / true.calo[name].gain[ok]
        rel_err = d["gain_error"][ok] / d["gain"][ok]
        pull = (ratio - 1) / rel_err
        assert np.all(np.abs(pull) < 5), (name, ratio, rel_err)
        precise = rel_err < 0.003  # enough muons: the 1 % requirement applies
        assert np.all(np.abs(ratio[precise] - 1) < 0.01), (name, ratio[precise])
        n_checked[name] = int(precise.sum())
    # the beam-centre cells are calibrated: ECAL main-section centre cells, every HCAL module,
    # the beam counters and the VETO paddle on the beam
    assert n_checked["ECAL"] >= 2 and n_checked["HCAL"] == 4
    assert all(n_checked[c] == 1 for c in ("S0", "S1", "S4", "Smu"))
    assert n_checked["VETO"] >= 2
    # preshower MIP (~10 ADC) sits at the zero-suppression threshold: not calibrated, said why
    ecal = setup.detector("ECAL")
    ps = ecal.channel(0, 2, 3)
    assert not np.isfinite(res.derived["ECAL"]["gain"][ps])
    assert "zero suppression" in res.derived["ECAL"]["reason"][ps]
    assert any(ch == ps for ch, _ in res.skipped["ECAL"])


def test_calibrate_command(world, capsys):
    setup, root, ped, _, true = world
    code = main(["calibrate", "--setup", "na64mu", "--kind", "pedestals", "--runs", "400", "600",
                 "--tag", "cli-ped", "--calib-dir", str(root), str(ped)])
    out = capsys.readouterr().out
    assert code == 0
    assert "channels calibrated" in out and "published tag 'cli-ped'" in out
    cond = load_conditions(setup, RUN, "cli-ped", root=root)
    assert np.all(np.abs(cond.calo["HCAL"].pedestal_odd - true.calo["HCAL"].pedestal_odd) < 0.25)
    # outside the new run range the base tag's constants still apply
    assert load_conditions(setup, 10, "cli-ped", root=root).calo["HCAL"].pedestal_odd.tolist() == \
        load_conditions(setup, 10, root=root).calo["HCAL"].pedestal_odd.tolist()
    # tags are immutable; missing files are one-line errors
    assert main(["calibrate", "--setup", "na64mu", "--kind", "pedestals", "--runs", "400", "600",
                 "--tag", "cli-ped", "--calib-dir", str(root), str(ped)]) == 1
    assert "exists already" in capsys.readouterr().err
    assert main(["calibrate", "--setup", "na64mu", "--kind", "mip", "--runs", "1", "2", "--tag", "x",
                 "--calib-dir", str(root), str(root / "nope.root")]) == 1
    err = capsys.readouterr().err
    assert "nope.root" in err and err.count("\n") == 1


def test_mip_peak_fit_recovers_moyal_mpv():
    rng = np.random.default_rng(5)
    mpv, w = 100.0, 8.75
    n = 4000
    a = mpv + w * (-np.log(rng.chisquare(1, n)))  # Moyal(mpv, w) = mpv - w log(chi2_1)
    a = a + rng.normal(0, 1.7, n)  # amplitude noise
    fit = fit_mip_peak(a, w / mpv)
    assert abs(fit.mpv - mpv) < 4 * fit.error and fit.error < 0.01 * mpv


def test_expected_mip_shares_ecal_by_radiation_lengths():
    setup = load_setup("na64mu")
    ecal = setup.detector("ECAL")
    e = expected_mip(ecal)
    assert e[ecal.channel(0, 2, 3)] == pytest.approx(0.1 * ecal.mip_mpv)
    assert e[ecal.channel(1, 2, 3)] == pytest.approx(0.9 * ecal.mip_mpv)
    assert np.all(expected_mip(setup.detector("HCAL")) == setup.detector("HCAL").mip_mpv)
