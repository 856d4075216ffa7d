"""Simulated raw files: reproducibility, format round trip, physics from truth, CLI errors."""

from __future__ import annotations

import awkward as ak
import hepunits as u
import numpy as np
import pytest
from scipy import integrate, stats

from na64reco import cli, constants
from na64reco.conditions import load_conditions
from na64reco.errors import ConfigError
from na64reco.geometry import load_setup
from na64reco.io.raw import PROCESSES, TRIGGER_BITS, open_raw
from na64reco.sim import simulate
from na64reco.sim.params import load_sim_params

N_BEAM = 20_000


@pytest.fixture(scope="module")
def beam_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("sim") / "beam.root"
    # calibration trigger (beam counters only): every beam muon is written, for the detector
    # response tests; the physics trigger keeps only deflected muons (test_sim_models)
    result = simulate("na64mu", N_BEAM, 11, 42, path, process="beam", chunk_size=10_000, trigger="calibration")
    return path, result


def _all_arrays(path):
    with open_raw(path) as f:
        ev = f.events()
        return {"events": ev, "truth": f.truth() if f.has_truth else None, "spills": f.spills(), "meta": f.meta}


# ---- reproducibility ---------------------------------------------------------------------
def test_same_seed_same_file_other_seed_differs(tmp_path):
    a, b, c = tmp_path / "a.root", tmp_path / "b.root", tmp_path / "c.root"
    simulate("na64mu", 3000, 7, 1, a, chunk_size=1000, mixture={"pileup": 0.2, "dimuon": 0.1})
    simulate("na64mu", 3000, 7, 1, b, chunk_size=100_000, mixture={"pileup": 0.2, "dimuon": 0.1})
    simulate("na64mu", 3000, 8, 1, c, chunk_size=1000, mixture={"pileup": 0.2, "dimuon": 0.1})
    ra, rb, rc = _all_arrays(a), _all_arrays(b), _all_arrays(c)
    # same seed, different chunking: identical arrays
    ea, eb = ra["events"], rb["events"]
    assert len(ea) == len(eb)
    for field in ea.fields:
        x, y = ea[field], eb[field]
        if field in ("calo", "apv", "straw"):
            for sub in x.fields:
                np.testing.assert_array_equal(ak.to_numpy(ak.flatten(x[sub], axis=None)),
                                              ak.to_numpy(ak.flatten(y[sub], axis=None)))
            np.testing.assert_array_equal(ak.to_numpy(ak.num(x)), ak.to_numpy(ak.num(y)))
        else:
            np.testing.assert_array_equal(ak.to_numpy(x), ak.to_numpy(y))
    for k in ra["truth"]:
        np.testing.assert_array_equal(ra["truth"][k], rb["truth"][k])
    # another seed: different digits
    n = min(len(ra["events"]), len(rc["events"]))
    assert not np.array_equal(ak.to_numpy(ak.flatten(ra["events"].calo.adc[:n][:, :1], axis=None)),
                              ak.to_numpy(ak.flatten(rc["events"].calo.adc[:n][:, :1], axis=None)))


# ---- raw format round trip -----------------------------------------------------------------
def test_round_trip_counts_and_ranges(beam_file):
    path, result = beam_file
    with open_raw(path, setup="na64mu") as f:
        ev, truth, sp = f.events(), f.truth(), f.spills()
        assert f.has_truth and f.meta["simulation"]["seed"] == 11
    assert len(ev) == result.n_written == sp["n_triggered"].sum() == len(truth["event"])
    assert sp["n_beam"].sum() == N_BEAM
    assert np.all(np.diff(np.asarray(ev.event)) == 1)
    np.testing.assert_array_equal(np.asarray(ev.event), truth["event"])
    assert np.all(np.asarray(ev.trigger) == TRIGGER_BITS["calibration"])
    adc = ak.to_numpy(ak.flatten(ev.calo.adc, axis=None))
    assert adc.min() >= 0 and adc.max() <= 4095
    setup = load_setup("na64mu")
    known = {d.id: d.n_channels for d in setup.calorimeters.values()}
    det, chan = ak.to_numpy(ak.flatten(ev.calo.det)), ak.to_numpy(ak.flatten(ev.calo.chan))
    assert all(0 <= c < known[d] for d, c in zip(det[:2000], chan[:2000], strict=True))
    # APV: MM channels 0..63, GEM strips < 256; every event has its counters
    plane = ak.to_numpy(ak.flatten(ev.apv.plane))
    ch = ak.to_numpy(ak.flatten(ev.apv.chan))
    mm = np.array([p.type == "MM" for p in setup.planes])[plane]
    assert ch[mm].max() < 64 and ch[~mm].max() < 256
    s0 = setup.detector("S0").id
    assert ak.all(ak.any(ev.calo.det == s0, axis=1))


def test_pedestal_run_has_conditioned_parity_pedestals(tmp_path):
    path = tmp_path / "ped.root"
    simulate("na64mu", 400, 3, 42, path, process="pedestal")
    cond = load_conditions("na64mu", 42)
    setup = load_setup("na64mu")
    with open_raw(path) as f:
        ev = f.events()
    assert np.all(np.asarray(ev.trigger) == TRIGGER_BITS["random"])
    total = sum(d.n_channels for d in setup.calorimeters.values())
    assert np.all(ak.to_numpy(ak.num(ev.calo)) == total)
    det = ak.to_numpy(ak.flatten(ev.calo.det))
    chan = ak.to_numpy(ak.flatten(ev.calo.chan))
    adc = ak.to_numpy(ak.flatten(ev.calo.adc, axis=1)).astype(float)
    ecal = setup.detector("ECAL")
    c = cond.calo["ECAL"]
    for k in range(ecal.n_channels):
        sel = (det == ecal.id) & (chan == k)
        even, odd = adc[sel][:, 0::2].mean(), adc[sel][:, 1::2].mean()
        n = adc[sel][:, 0::2].size
        # noise per sample / sqrt(n) plus the rounding (uniform, rms 0.29) / sqrt(n)
        tol = 5 * np.hypot(c.noise_adc[k], 0.29) / np.sqrt(n) + 0.01
        assert even == pytest.approx(c.pedestal_even[k], abs=tol)
        assert odd == pytest.approx(c.pedestal_odd[k], abs=tol)


# ---- physics from the truth tree ------------------------------------------------------------
def test_ecal_mip_most_probable_value(beam_file):
    """The ECAL's MIP deposit below the discrete losses (> 0.8 GeV) is the setup's Moyal: a maximum-
    likelihood fit of the truncated Moyal gives its most probable value and width within 5 standard errors
    (~0.4 and 0.2 MeV at 20k muons; the errors from the likelihood's curvature).  Before stop 48 the mode of
    a 5 MeV histogram was compared with 10 MeV of tolerance, 1.3 of its standard errors."""
    from scipy import optimize, stats

    path, _ = beam_file
    with open_raw(path) as f:
        e = np.asarray(f.truth()["e_ecal"], float)
    ecal = load_setup("na64mu").detector("ECAL")
    mpv, width = ecal.mip_mpv / u.GeV, ecal.mip_width / u.GeV
    hi = 0.8
    x = e[(e > 0) & (e < hi)]

    def nll(par):
        d = stats.moyal(par[0], par[1])
        return -(d.logpdf(x).sum() - x.size * np.log(d.cdf(hi) - d.cdf(0.0)))

    best = optimize.minimize(nll, [mpv, width], method="Nelder-Mead", options={"xatol": 1e-8, "fatol": 1e-8}).x
    h = 1e-4 * best  # the curvature by central differences
    hess = np.empty((2, 2))
    for i in range(2):
        for j in range(2):
            di, dj = np.eye(2)[i] * h[i], np.eye(2)[j] * h[j]
            hess[i, j] = (nll(best + di + dj) - nll(best + di - dj) - nll(best - di + dj) + nll(best - di - dj)) / (
                4 * h[i] * h[j])
    err = np.sqrt(np.diag(np.linalg.inv(hess)))
    assert err[0] < 0.002 and err[1] < 0.001
    assert abs(best[0] - mpv) < 5 * err[0], (best, err)
    assert abs(best[1] - width) < 5 * err[1], (best, err)


def test_radiative_tail_rate_matches_closed_form(beam_file):
    """P(discrete losses above v0) = 1 - exp(-N(v0)) with N from the cross sections' table."""
    path, _ = beam_file
    with open_raw(path) as f:
        t = f.truth()
    params = load_sim_params(load_setup("na64mu"))
    threshold = 3.5  # GeV of ECAL energy; the MIP part is ~0.4 GeV and never reaches it
    v0 = (threshold - 0.4) / t["p_in"]
    table = params.ecal_losses.table(params.beam_energy)
    expected = float(np.mean(1 - np.exp(-np.array([table.mean_number(x) for x in v0]))))
    observed = float(np.mean(t["e_ecal"] > threshold))
    n = len(t["e_ecal"])
    sigma = np.sqrt(expected * (1 - expected) / n)
    # 5 sigma statistical plus 10 % for the shower resolution at the threshold
    assert observed == pytest.approx(expected, abs=5 * sigma + 0.1 * expected)


def test_momentum_loss_in_the_target(beam_file):
    path, _ = beam_file
    with open_raw(path) as f:
        t = f.truth()
    loss = t["p_in"] - t["p_out"]
    ok = np.isfinite(loss)
    assert ok.mean() > 0.99
    # the muon loses what it deposits in the ECAL (ionisation + showers of its radiative losses)
    np.testing.assert_allclose(np.median(loss[ok]), np.median(t["e_ecal"][ok]), atol=0.02)


def _iww_shape(x, e0, mass, lepton_mass):
    """Reference IWW x-shape (BEST 2009 with the lepton mass kept; chi is x-independent)."""
    beta = np.sqrt(np.clip(1 - (mass / (x * e0)) ** 2, 0, None))
    u0 = mass**2 * (1 - x) / x + lepton_mass**2 * x
    big_m2 = mass**2 + 2 * lepton_mass**2
    return beta * ((1 - x + x**2 / 2) / u0 - x * (1 - x) * big_m2 / (6 * u0**2))


def test_signal_x_follows_the_iww_shape(tmp_path):
    path = tmp_path / "sig.root"
    mass = 0.1 * u.GeV
    # calibration trigger: every signal event is written, whatever its p_out
    simulate("na64mu", 6000, 5, 1, path, process="signal", mass=mass, coupling=1e-4, trigger="calibration")
    with open_raw(path) as f:
        t = f.truth()
    assert np.all(t["process"] == PROCESSES["signal"])
    e0 = load_setup("na64mu").beam.energy
    lo = mass / e0
    # the whole spectrum up to x = 0.9 (beyond it the ~1 GeV ECAL losses stop some muons)
    x_cut = 0.9
    x = t["x"][t["x"] < x_cut]
    norm = integrate.quad(_iww_shape, lo, x_cut, args=(e0, mass, constants.MUON_MASS), limit=200)[0]
    grid = np.linspace(lo, x_cut, 400)
    cdf = np.array([integrate.quad(_iww_shape, lo, g, args=(e0, mass, constants.MUON_MASS), limit=200)[0]
                    for g in grid]) / norm
    assert stats.kstest(x, lambda v: np.interp(v, grid, cdf)).pvalue > 1e-3
    # the muon keeps (1 - x) E: p_out / p_in = 1 - x up to the ECAL losses (~ 1 GeV)
    ok = np.isfinite(t["p_out"])
    # up to the ECAL losses: ionisation (~0.4 GeV) and rare hard radiative losses (~1 %)
    assert np.mean(np.abs(t["p_out"][ok] - (1 - t["x"][ok]) * t["p_in"][ok]) < 5.0) > 0.98
    assert np.median(np.abs(t["p_out"][ok] - (1 - t["x"][ok]) * t["p_in"][ok])) < 1.0
    assert np.all(t["weight"] > 0)


def test_mixture_fractions_and_spill_accounting(tmp_path):
    path = tmp_path / "mix.root"
    mixture = {"halo": 0.1, "pileup": 0.1, "hadron": 0.05, "pidecay": 0.05, "dimuon": 0.05}
    n = 20_000
    result = simulate("na64mu", n, 9, 1, path, mixture=mixture)
    for name, prob in mixture.items():
        k = result.process_counts.get(name, 0)
        assert k == pytest.approx(n * prob, abs=5 * np.sqrt(n * prob * (1 - prob))), name
    with open_raw(path) as f:
        sp, t = f.spills(), f.truth()
    assert sp["n_beam"].sum() == n and sp["n_triggered"].sum() == f.n_events
    assert np.all(sp["n_beam"] == 10_000)
    # the halo hits V1 (vetoed), pion showers stop before S4: neither is written
    assert np.sum(t["process"] == PROCESSES["halo"]) < 0.01 * result.process_counts["halo"]
    assert np.sum(t["process"] == PROCESSES["hadron"]) < 0.01 * result.process_counts["hadron"]
    # pile-up doubles the MIP signals; tridents add two muons in the HCAL
    base = t["process"] == PROCESSES["beam"]
    for proc in ("pileup", "dimuon"):
        sel = t["process"] == PROCESSES[proc]
        assert np.median(t["e_hcal"][sel]) > 1.5 * np.median(t["e_hcal"][base]), proc


def test_na64e_shower_srd_and_hadrons(tmp_path):
    from na64reco.sim.beam import sample_beam
    from na64reco.sim.tracks import Recorder
    from na64reco.sim.transport import Context, Truth, follow
    from na64reco.sim.trigger import detector_sums

    setup = load_setup("na64e")
    # transport level (before the missing-energy trigger): electrons and pions
    n = 4000
    rng = np.random.default_rng(4)
    proc = np.where(np.arange(n) < n // 2, PROCESSES["beam"], PROCESSES["hadron"]).astype(np.int8)
    rec, truth = Recorder(n), Truth.new(n)
    follow(Context(rng, setup, load_sim_params(setup), rec, truth), sample_beam(rng, setup, np.arange(n), proc))
    ev, det, chan, e, _ = rec.deposits()
    e_ecal = detector_sums(setup, n, ev, det, chan, e, "ECAL") / u.GeV
    e_srd = detector_sums(setup, n, ev, det, chan, e, "SRD") / u.GeV
    e_hcal = detector_sums(setup, n, ev, det, chan, e, "HCAL") / u.GeV
    el, had = proc == PROCESSES["beam"], proc == PROCESSES["hadron"]
    srd = setup.detector("SRD")
    srd_mean = srd.n_sections * 25 * u.MeV / u.GeV  # synchrotron_mean per module
    # sum of 3 exponentials: sd = sqrt(3) x mean per module
    assert np.mean(e_srd[el]) == pytest.approx(srd_mean, abs=5 * srd_mean / np.sqrt(3 * el.sum()))
    assert np.all(e_srd[had] == 0)
    # electrons: containment, resolution 9 %/sqrt(E) (+) 1 % (+) beam spread 1 %
    expected_rel = np.sqrt((0.09 / 10) ** 2 + 0.01**2 + setup.beam.momentum_spread**2)
    med = np.median(e_ecal[el])
    assert med == pytest.approx(100.0 - srd_mean, rel=0.01)
    sigma = np.subtract(*np.percentile(e_ecal[el], [84.13, 15.87])) / 2 / med
    assert sigma == pytest.approx(expected_rel, rel=0.15)
    # pions: no SR, energy shared between ECAL and HCAL, visible fraction below 1
    assert np.median(e_hcal[had]) > 5.0 and np.median(e_ecal[had] + e_hcal[had]) < 90.0
    # file level: the written events satisfy the NA64e trigger
    path = tmp_path / "e.root"
    simulate("na64e", 4000, 4, 1, path, mixture={"hadron": 0.3})
    with open_raw(path) as f:
        t = f.truth()
    assert len(t["e_ecal"]) > 0
    (ps_term,) = [term for term in setup.trigger.terms if term.section == "preshower"]
    (ecal_term,) = [term for term in setup.trigger.terms if term.detector == "ECAL" and term.maximum]
    assert np.all(t["e_ecal"] < ecal_term.maximum / u.GeV)
    assert np.all(t["e_ecal_preshower"] > ps_term.minimum / u.GeV)
    assert np.all(np.isnan(t["p_out"]))


# ---- CLI and bad input ------------------------------------------------------------------------
def _one_line_error(capsys, argv):
    rc = cli.main(["simulate", *argv])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1 and len(err) == 1 and err[0].startswith("na64reco simulate: error:"), err
    return err[0]


def test_cli_bad_input(tmp_path, capsys):
    out = str(tmp_path / "x.root")
    assert "unknown setup" in _one_line_error(capsys, ["--setup", "na64x", "--events", "10", "--output", out])
    assert "unknown process" in _one_line_error(
        capsys, ["--setup", "na64mu", "--events", "10", "--output", out, "--process", "axion"])
    assert "n_events" in _one_line_error(capsys, ["--setup", "na64mu", "--events", "0", "--output", out])
    assert "mass" in _one_line_error(
        capsys, ["--setup", "na64mu", "--events", "10", "--output", out, "--process", "signal"])
    assert "does not exist" in _one_line_error(
        capsys, ["--setup", "na64mu", "--events", "10", "--output", str(tmp_path / "no" / "x.root")])
    broken = tmp_path / "broken.yaml"
    broken.write_text("schema_version: 1\nsetup: [unclosed\n")
    assert "malformed YAML" in _one_line_error(capsys, ["--setup", str(broken), "--events", "10", "--output", out])
    assert "calibration tag" in _one_line_error(
        capsys, ["--setup", "na64mu", "--events", "10", "--output", out, "--calib-tag", "nope"])


def test_cli_writes_a_file(tmp_path, capsys):
    out = tmp_path / "cli.root"
    rc = cli.main(["simulate", "--setup", "na64mu", "--events", "500", "--seed", "3", "--run", "7",
                   "--output", str(out), "--no-truth", "--quiet"])
    assert rc == 0
    with open_raw(out) as f:
        assert f.run == 7 and not f.has_truth and f.spills()["n_beam"].sum() == 500


def test_missing_simulation_section_is_a_config_error(tmp_path):
    text = open(load_setup("na64mu").source).read()
    cut = text.index("\nsimulation:")
    path = tmp_path / "nosim.yaml"
    path.write_text(text[:cut] + "\n")
    with pytest.raises(ConfigError, match="simulation"):
        simulate(str(path), 10, 1, 1, tmp_path / "o.root")


# ---- true conditions: dead channels and alignment --------------------------------------------
def test_dead_channels_and_alignment_from_the_calibration_tag(tmp_path, monkeypatch):
    import shutil

    from na64reco.conditions import nominal_content, publish
    from na64reco.resources import calib_dir

    root = tmp_path / "calib"
    shutil.copytree(calib_dir(), root)
    monkeypatch.setenv("NA64RECO_CALIB", str(root))
    setup = load_setup("na64mu")
    ecal = setup.detector("ECAL")
    # the beam hits the two central main-section cells (6 rows: the beam sits on a boundary)
    dead = [int(ecal.channel(1, 2, 2)), int(ecal.channel(1, 2, 3))]
    content = nominal_content(setup, 1)
    for ch in dead:
        content["calorimeter"]["detectors"]["ECAL"]["status"][ch] = 1
    shift = 2.0  # mm
    content["tracker"]["planes"]["GEM1X"]["alignment_mm"] += shift
    publish("na64mu", "sim-test-dead", (1, 10), content, base_tag="na64mu-default")
    a, b = tmp_path / "nominal.root", tmp_path / "dead.root"
    simulate("na64mu", 3000, 2, 1, a, process="beam", trigger="calibration")
    simulate("na64mu", 3000, 2, 1, b, process="beam", calib_tag="sim-test-dead", trigger="calibration")
    with open_raw(a) as fa, open_raw(b) as fb:
        ea, eb = fa.events(), fb.events()
    chans = lambda ev: ak.to_numpy(ak.flatten(ev.calo.chan[ev.calo.det == ecal.id]))  # noqa: E731
    assert np.isin(dead, chans(ea)).all()  # normally hit
    assert not np.isin(dead, chans(eb)).any()  # dead: no signal, below zero suppression
    # GEM1X (one strip per channel): clusters move by -shift/pitch strips in the plane frame
    gem = next(p for p in setup.planes if p.name == "GEM1X")

    def centroid(ev):
        sel = ev.apv.plane == gem.index
        q = ak.values_astype(ev.apv.a1[sel], np.float64)
        s = ak.values_astype(ev.apv.chan[sel], np.float64)
        num, den = ak.to_numpy(ak.sum(q * s, axis=1)), ak.to_numpy(ak.sum(q, axis=1))
        return np.divide(num, den, out=np.full(den.shape, np.nan), where=den != 0)  # NaN: no GEM1X charge

    d = centroid(eb) - centroid(ea)
    d = d[np.isfinite(d)]
    # same seed: only the shift differs (noise clusters are event-wise identical too)
    assert np.median(d) == pytest.approx(-shift / gem.pitch, abs=0.05)


def test_straw_tdc_range(beam_file):
    path, _ = beam_file
    setup = load_setup("na64mu")
    straw = next(p for p in setup.planes if p.type == "straw")
    with open_raw(path) as f:
        ev = f.events()
    tdc = ak.to_numpy(ak.flatten(ev.straw.tdc))
    tube = ak.to_numpy(ak.flatten(ev.straw.tube))
    max_drift = straw.pitch / 2 / setup.readout.straw_drift_velocity / setup.readout.straw_tdc_lsb
    assert tdc.size > 0.9 * len(ev) * straw.efficiency
    # noise hits come at random times in the TDC window (straw_noise_window), track hits within
    # the maximum drift time of the trigger
    last = (setup.readout.straw_noise_window[1] + straw.pitch / 2 / setup.readout.straw_drift_velocity)
    assert tdc.min() >= 0 and tdc.max() <= last / setup.readout.straw_tdc_lsb + 1
    assert tube.min() >= 0 and tube.max() < straw.n_strips
    # uniform illumination of a tube: the drift distance (TDC) is uniform in [0, pitch/2]
    in_time = tdc[tdc <= max_drift + 1]
    assert in_time.size > 0.9 * len(ev) * straw.efficiency
    assert stats.kstest(in_time / max_drift, "uniform").statistic < 0.05
