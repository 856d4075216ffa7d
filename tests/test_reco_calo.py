"""Per-event calorimeter quantities from synthetic MSADC digits of known deposits, and
(when the simulator is available) the energy scale against the truth tree."""

from __future__ import annotations

import dataclasses

import awkward as ak
import numpy as np
import pytest
from hepunits import GeV
from test_reco_waveform import CFG, pulses

from na64reco.conditions import load_conditions
from na64reco.errors import RawFormatError
from na64reco.geometry import load_setup
from na64reco.reco import calo as C


def make_events(setup, cond, ev, names, chans, energies_mev, dt=None, seed=0, n_events=None):
    """Awkward events (the layout of RawFile.events()) with one digit per deposit."""
    rng = np.random.default_rng(seed)
    ev = np.asarray(ev)
    det = np.array([setup.detector(nm).id for nm in names])
    chan = np.asarray(chans)
    e = np.asarray(energies_mev, float)
    dt = np.zeros(len(ev)) if dt is None else np.asarray(dt, float)
    order = np.argsort(ev, kind="stable")
    ev, det, chan, e, dt = ev[order], det[order], chan[order], e[order], dt[order]
    tab = {f: cond.calo_table(setup, f) for f in ("pedestal_even", "pedestal_odd", "noise_adc", "gain", "time_offset")}
    adc = pulses(e / tab["gain"][det, chan], CFG.signal_time + tab["time_offset"][det, chan] + dt,
                 tab["pedestal_even"][det, chan], tab["pedestal_odd"][det, chan], tab["noise_adc"][det, chan], rng)
    n = int(n_events if n_events is not None else ev.max() + 1)
    counts = np.bincount(ev, minlength=n)
    calo = ak.zip(
        {"det": ak.unflatten(det.astype(np.int16), counts), "chan": ak.unflatten(chan.astype(np.int16), counts)}
    )
    calo = ak.with_field(calo, ak.unflatten(ak.from_numpy(adc, regulararray=True), counts), "adc")
    return ak.zip({"run": np.full(n, 7, np.int32), "event": np.arange(n) + 100, "calo": calo}, depth_limit=1)


@pytest.fixture(scope="module")
def mu():
    setup = load_setup("na64mu", run=1)
    return setup, load_conditions(setup, 1)


def test_energies_of_known_deposits(mu):
    setup, cond = mu
    rng = np.random.default_rng(1)
    n = 1500
    ecal, hcal = setup.detector("ECAL"), setup.detector("HCAL")
    rows = []  # (event, detector, channel, energy MeV)
    true = {k: np.zeros(n) for k in ("ps", "main", "hcal", "veto", "S0", "Smu")}
    true_mod = np.zeros((n, hcal.n_sections))
    for i in range(n):
        ix, iy = rng.integers(1, ecal.nx - 1), rng.integers(1, ecal.ny - 1)
        for sec, key, scale in ((0, "ps", 2000.0), (1, "main", 20000.0)):
            e_tot = rng.uniform(0.2, 1.0) * scale
            frac = rng.dirichlet(np.ones(9) * 2)
            for k, (a, b) in enumerate((a, b) for a in (-1, 0, 1) for b in (-1, 0, 1)):
                e = e_tot * frac[k]
                if e / cond.calo["ECAL"].gain[ecal.channel(sec, ix + a, iy + b)] > 40:  # well above threshold
                    rows.append((i, "ECAL", ecal.channel(sec, ix + a, iy + b), e))
                    true[key][i] += e
        for m in range(hcal.n_sections):
            e = rng.uniform(1500, 30000)
            rows.append((i, "HCAL", hcal.channel(m, 1, 1), e))
            true_mod[i, m] += e
        pad = rng.integers(0, 3)
        e = rng.uniform(5, 20)
        rows += [(i, "VETO", 2 * pad, e), (i, "VETO", 2 * pad + 1, e)]
        true["veto"][i] = e
        for name in ("S0", "Smu"):
            e = setup.detector(name).mip_mpv * rng.uniform(0.8, 2)
            rows.append((i, name, 0, e))
            true[name][i] = e
    ev, names, chans, es = zip(*rows, strict=True)
    out = C.reconstruct_calo(make_events(setup, cond, ev, names, chans, es), setup, cond, source="synthetic")

    def check(reco_gev, true_mev, det, n_cells):
        # per event: within 5 sigma of the amplitude noise (~0.7 x 2.5 ADC per cell) plus 1 %
        tol = 5 * np.sqrt(n_cells) * 1.8 * cond.calo[det].gain.max() / GeV + 0.01 * true_mev / GeV
        diff = reco_gev - true_mev / GeV
        assert abs(diff.mean()) < 4 * diff.std() / np.sqrt(n) + 1e-9, (diff.mean(), diff.std())
        assert np.all(np.abs(diff) < tol)

    check(out["ecal_preshower_energy"], true["ps"], "ECAL", 9)
    check(out["ecal_main_energy"], true["main"], "ECAL", 9)
    check(out["ecal_energy"], true["ps"] + true["main"], "ECAL", 18)
    check(out["hcal_module_energy"], true_mod, "HCAL", 1)
    check(out["hcal_energy"], true_mod.sum(axis=1), "HCAL", 4)
    check(out["veto_energy"], true["veto"], "VETO", 1)
    check(out["counter_S0_energy"], true["S0"], "S0", 1)
    check(out["counter_Smu_energy"], true["Smu"], "Smu", 1)
    assert np.all(out["counter_S1_energy"] == 0) and np.all(np.isnan(out["counter_S1_time"]))
    np.testing.assert_allclose(out["counter_S0_time"], CFG.nominal_time, atol=2.0)
    np.testing.assert_allclose(out["event_time"], CFG.nominal_time, atol=1.0)
    assert np.all(out["vhcal_energy"] == 0)
    assert out["srd_module_energy"].shape == (n, C.ABSENT_SRD_MODULES)
    assert np.all(np.isnan(out["srd_module_energy"])) and np.all(np.isnan(out["srd_energy"]))
    for key, value in out.items():
        assert len(value) == n, key


def test_same_schema_for_both_setups(mu):
    setup_e = load_setup("na64e")
    cond_e = load_conditions(setup_e, 1)
    srd = setup_e.detector("SRD")
    ev = make_events(setup_e, cond_e, [0, 0, 1], ["SRD", "SRD", "ECAL"], [0, 2, 5], [20.0, 30.0, 50000.0])
    out_e = C.reconstruct_calo(ev, setup_e, cond_e)
    setup, cond = mu
    out_mu = C.reconstruct_calo(make_events(setup, cond, [0], ["ECAL"], [5], [5000.0]), setup, cond)
    drop = lambda d: {k: v.shape[1:] for k, v in d.items() if not k.startswith("counter_")}  # noqa: E731
    assert drop(out_e) == drop(out_mu)
    assert out_e["srd_module_energy"].shape == (2, srd.n_sections)
    np.testing.assert_allclose(out_e["srd_module_energy"][0], [0.020, 0.0, 0.030], rtol=0.1)


def test_timing_window_and_masked_channels(mu):
    setup, cond = mu
    ecal = setup.detector("ECAL")
    ch_a, ch_b = ecal.channel(1, 2, 3), ecal.channel(1, 2, 2)
    # event 0: b is 60 ns late (out of time); event 1: b is 10 ns late (in time)
    ev = make_events(
        setup,
        cond,
        [0, 0, 1, 1, 0, 1],
        ["ECAL", "ECAL", "ECAL", "ECAL", "S0", "S0"],
        [ch_a, ch_b, ch_a, ch_b, 0, 0],
        [5000.0, 3000.0, 5000.0, 3000.0, 3.0, 3.0],
        dt=[0.0, 60.0, 0.0, 10.0, 0.0, 0.0],
    )
    out = C.reconstruct_calo(ev, setup, cond)
    np.testing.assert_allclose(out["ecal_energy"], [5.0, 8.0], rtol=0.02)
    # mask channel b: it no longer counts anywhere
    c = cond.calo["ECAL"]
    status = c.status.copy()
    status[ch_b] = 1
    masked = dataclasses.replace(cond, calo={**cond.calo, "ECAL": dataclasses.replace(c, status=status)})
    out = C.reconstruct_calo(ev, setup, masked)
    np.testing.assert_allclose(out["ecal_energy"], [5.0, 5.0], rtol=0.02)
    # a VETO paddle with one masked PMT is measured by the other one alone
    v = cond.calo["VETO"]
    vstat = v.status.copy()
    vstat[1] = 1
    masked = dataclasses.replace(cond, calo={**cond.calo, "VETO": dataclasses.replace(v, status=vstat)})
    ev = make_events(setup, cond, [0, 0], ["VETO", "VETO"], [0, 1], [12.0, 12.0])
    out = C.reconstruct_calo(ev, setup, masked)
    np.testing.assert_allclose(out["veto_paddle_energy"][0], [0.012, 0.0, 0.0], atol=0.0005)


def test_max_cell_and_centre_of_gravity(mu):
    setup, cond = mu
    ecal = setup.detector("ECAL")
    ev = make_events(
        setup,
        cond,
        [0, 1, 1, 2],
        ["ECAL"] * 3 + ["S0"],
        [ecal.channel(1, 1, 4), ecal.channel(1, 3, 2), ecal.channel(0, 4, 2), 0],
        [8000.0, 6000.0, 6000.0, 3.0],
    )
    out = C.reconstruct_calo(ev, setup, cond)
    x0, y0 = ecal.cell_center(1, 4)
    x1, y1 = ecal.cell_center(3.5, 2)
    np.testing.assert_allclose([out["ecal_cog_x"][0], out["ecal_cog_y"][0]], [x0, y0], atol=1e-9)
    np.testing.assert_allclose([out["ecal_cog_x"][1], out["ecal_cog_y"][1]], [x1, y1], atol=1.0)
    assert (out["ecal_max_cell_ix"][0], out["ecal_max_cell_iy"][0]) == (1, 4)
    assert out["ecal_max_cell_ix"][1] in (3, 4) and out["ecal_max_cell_iy"][1] == 2
    assert (out["ecal_max_cell_ix"][2], out["ecal_max_cell_iy"][2]) == (-1, -1)
    assert np.isnan(out["ecal_cog_x"][2]) and np.isnan(out["ecal_shower_chi2"][2])


def assert_same_as_reference(fast, slow):
    """The fused fast path and the slow twin agree (sums in another order: 1e-12)."""
    assert list(fast) == list(slow)
    for key, a in fast.items():
        b = slow[key]
        assert a.shape == b.shape and a.dtype == b.dtype, key
        if a.dtype.kind in "iu":
            np.testing.assert_array_equal(a, b, err_msg=key)
        else:
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-9, equal_nan=True, err_msg=key)


def test_fast_path_matches_reference_twin(mu):
    setup, cond = mu
    ecal = setup.detector("ECAL")
    ch_a, ch_b = ecal.channel(1, 2, 3), ecal.channel(1, 2, 2)
    # out-of-time digits, counters with two digits, a masked channel, empty events
    ev = make_events(
        setup,
        cond,
        [0, 0, 1, 1, 0, 1, 1, 3, 3],
        ["ECAL", "ECAL", "ECAL", "ECAL", "S0", "S0", "S0", "HCAL", "VETO"],
        [ch_a, ch_b, ch_a, ch_b, 0, 0, 0, 5, 3],
        [5000.0, 3000.0, 5000.0, 3000.0, 3.0, 3.0, 5.0, 9000.0, 8.0],
        dt=[0.0, 60.0, 0.0, 10.0, 0.0, 0.0, 4.0, 0.0, 0.0],
        n_events=5,
    )
    c = cond.calo["ECAL"]
    status = c.status.copy()
    status[ecal.channel(1, 2, 2)] = 1
    masked = dataclasses.replace(cond, calo={**cond.calo, "ECAL": dataclasses.replace(c, status=status)})
    for conditions in (cond, masked):
        assert_same_as_reference(
            C.reconstruct_calo(ev, setup, conditions), C.reconstruct_calo_reference(ev, setup, conditions)
        )


def _showers(det, rng, n, b, energy_gev):
    """Cell energies (n, nx, ny) of showers with density exp(-r/b), sampled as 400 spots,
    with the energy fluctuation of the stochastic term spread over the spots."""
    gx, gy = rng.uniform(-0.5, 0.5, (2, n)) * np.array(det.cell_size)[:, None]
    cx, cy = det.cell_center(det.nx // 2, det.ny // 2)
    grid = np.zeros((n, det.nx, det.ny))
    n_spots = 400
    for i in range(n):
        r = rng.gamma(2.0, b, n_spots)  # radial density r exp(-r/b) in 2D for rho ~ exp(-r/b)
        phi = rng.uniform(0, 2 * np.pi, n_spots)
        ix, iy, inside = det.cell_index(cx + gx[i] + r * np.cos(phi), cy + gy[i] + r * np.sin(phi))
        np.add.at(grid[i], (ix[inside], iy[inside]), energy_gev / n_spots)
    return grid


def test_shower_chi2_separates_em_from_wide_showers_and_matches_twin(mu):
    setup, _ = mu
    det = setup.detector("ECAL")
    rng = np.random.default_rng(2)
    b = C._profile_params(det)[0]
    em = _showers(det, rng, 300, b, 50.0)
    wide = _showers(det, rng, 300, 3 * b, 50.0)
    chi_em, chi_wide = C.shower_chi2(em, det), C.shower_chi2(wide, det)
    np.testing.assert_allclose(chi_em, C.shower_chi2_reference(em, det), rtol=1e-9)
    np.testing.assert_allclose(chi_wide, C.shower_chi2_reference(wide, det), rtol=1e-9)
    # spot sampling gives fraction errors below the 2 % floor: EM chi2/ndf is O(1) or less
    assert np.median(chi_em) < 2.0
    assert np.median(chi_wide) > 10 * np.median(chi_em)
    # containment of the expected profile: the configured fraction within one Moliere radius
    rm = C._profile_params(det)[3]
    r = rng.gamma(2.0, b, 200000)
    assert abs(np.mean(r < rm) - det.params["shower_containment"]) < 0.005


def _chi2_every_point(grid, det):
    """Shower chi2/ndf of full 3x3 blocks as the minimum over EVERY impact point, each summed in
    full in the kernel's order of terms (no early stop, no skipped point): NaN where the block
    is not full."""
    b, stochastic, floor, _ = C._profile_params(det)
    table = C.profile_table(det.cell_size[0], det.cell_size[1], b)
    pvar = C._profile_variance(table, stochastic)
    out = np.full(len(grid), np.nan)
    for e, g2 in enumerate(grid):
        i, j = np.unravel_index(np.argmax(g2), g2.shape)  # the first maximum, as the kernel
        if not (0 < i < g2.shape[0] - 1 and 0 < j < g2.shape[1] - 1):
            continue
        obs = [[float(g2[i + a - 1, j + c - 1]) for c in range(3)] for a in range(3)]
        tot = 0.0
        for a in range(3):
            for c in range(3):
                tot += obs[a][c]
        if tot <= 0.0:
            continue
        inv = 1.0 / tot
        obs = [[x * inv for x in row] for row in obs]
        best = np.inf
        for g in range(len(table)):
            chi2 = 0.0
            for a in range(3):
                for c in range(3):
                    d = obs[a][c] - float(table[g, a, c])
                    chi2 += d * d / (float(pvar[g, a, c]) * inv + floor * floor)
            best = min(best, chi2)
        out[e] = best / 6
    return out


def test_shower_chi2_equals_the_minimum_over_every_impact_point(mu):
    """The kernel skips impact points by bounds (the row-wise stop; since the fifth pass the
    central cell's term alone): its chi2 must be bit for bit the minimum over every point."""
    setup, _ = mu
    det = setup.detector("ECAL")
    rng = np.random.default_rng(5)
    b = C._profile_params(det)[0]
    grid = np.concatenate([_showers(det, rng, 60, b, 50.0), _showers(det, rng, 60, 3 * b, 20.0),
                           _showers(det, rng, 30, 0.3 * b, 80.0)])
    got = C.shower_chi2(grid, det)
    want = _chi2_every_point(grid, det)
    full = ~np.isnan(want)
    assert full.sum() > 100
    assert np.array_equal(got[full], want[full])


def test_corrupt_waveform_names_file_and_event(mu):
    setup, cond = mu
    ev = make_events(setup, cond, [0, 1], ["ECAL", "ECAL"], [3, 4], [1000.0, 1000.0])
    calo = ev["calo"]
    adc = ak.to_numpy(ak.flatten(calo["adc"], axis=1)).copy()
    adc[1] = 0
    calo = ak.with_field(calo, ak.unflatten(ak.from_numpy(adc, regulararray=True), [1, 1]), "adc")
    bad = ak.with_field(ev, calo, "calo")
    with pytest.raises(RawFormatError, match=r"run42\.root: run 7 event 101 .*all-zero"):
        C.reconstruct_calo(bad, setup, cond, source="run42.root")


# ---- energy scale against the simulator's truth -------------------------------------------
def test_energy_scale_against_truth(tmp_path):
    """Reconstructed / true energy within 5 standard errors and 0.3 % where the deposits are read out.

    The truth tree sums every deposit, also those in channels the DAQ zero suppression
    never wrote (true amplitude < 8 ADC): ~9 % of the muon's 40 MeV preshower share and
    the outer tails of showers (~3 % at 100 GeV).  The scale test therefore uses the HCAL
    (MIPs of ~70 ADC per module), the ECAL main section of MIP events and the ECAL total
    of events with more than 10 GeV in it (tails below threshold < 1 %).
    """
    sim = pytest.importorskip("na64reco.sim.generate", reason="needs the simulator (na64reco.sim.generate)")
    from na64reco.io.raw import open_raw

    path = tmp_path / "mu.root"
    sim.simulate("na64mu", 12000, 21, 5, path, trigger="calibration")  # every beam muon written
    setup = load_setup("na64mu", run=5)
    with open_raw(path) as f:
        events, truth = f.events(), f.truth()
    cond = load_conditions(setup, 5)
    out = C.reconstruct_calo(events, setup, cond, source=str(path))
    assert_same_as_reference(out, C.reconstruct_calo_reference(events, setup, cond, source=str(path)))
    e_main = truth["e_ecal"] - truth["e_ecal_preshower"]
    mip = truth["e_ecal"] < 0.6
    shower = truth["e_ecal"] > 10.0
    assert mip.sum() > 6000 and shower.sum() > 30
    pairs = {
        "hcal": (out["hcal_energy"], truth["e_hcal"]),
        "ecal_main_mip": (out["ecal_main_energy"][mip], e_main[mip]),
        "ecal_showers": (out["ecal_energy"][shower], truth["e_ecal"][shower]),
        "veto": (out["veto_energy"], truth["e_veto"]),
    }
    for key, (x, y) in pairs.items():
        r = x.sum() / y.sum()
        se = np.sqrt(np.sum((x - r * y) ** 2)) / y.sum()  # the ratio estimator's standard error
        # 5 sigma and 0.3 % for what the zero suppression leaves out (measured: 1.0000-0.9956, 0.8-4.6 sigma);
        # the fixed 1 % before let a 0.9 % amplitude error pass (stop 47's mutation review)
        assert abs(r - 1) < 0.003 + 5 * se, (key, r, se)
    # per-event agreement of the HCAL (MIPs and showers) where it has a deposit (the calibration
    # trigger also writes muons that miss it): median ratio within 0.5 %
    hit = truth["e_hcal"] > 0
    assert hit.mean() > 0.9
    assert abs(np.median(out["hcal_energy"][hit] / truth["e_hcal"][hit]) - 1) < 0.005


def _random_deposits(setup, rng, n_events, names):
    """Per-digit (event, detector name, channel, energy MeV, time shift ns) of ``n_events``
    events with a few digits each, some out of time."""
    ev, det, chan, e, dt = [], [], [], [], []
    for i in range(n_events):
        for _ in range(rng.integers(0, 6)):
            name = names[rng.integers(len(names))]
            ev.append(i)
            det.append(name)
            chan.append(int(rng.integers(setup.detector(name).n_channels)))
            e.append(float(rng.uniform(20.0, 9000.0)))
            dt.append(float(rng.choice([0.0, 0.0, 0.0, 40.0])))
    return ev, det, chan, e, dt


def test_per_event_sums_equal_the_channel_table_path_bit_for_bit(mu):
    """reconstruct_calo sums each event's digits in one row and derives the ECAL quantities from
    it at once (issue 11, sixth pass): the same bits as the whole (events, channels) table of the
    counted digits fed to _ecal_quantities, and as its column sums for the other detectors."""
    setup, cond = mu
    rng = np.random.default_rng(11)
    names = ["ECAL", "ECAL", "ECAL", "HCAL", "VETO", "VHCAL", "S0", "Smu"]
    ev = make_events(setup, cond, *_random_deposits(setup, rng, 120, names), seed=3, n_events=120)
    fast = C.reconstruct_calo(ev, setup, cond)
    digits, ev_of, _ = C.digits_of_events(ev, setup, cond)
    n = len(ev)
    ecal = setup.detector("ECAL")
    table = C._ecal_quantities(setup, ecal, C.channel_sums(digits, ev_of, n, ecal), cond.calo["ECAL"])
    assert np.isfinite(table["ecal_shower_chi2"]).sum() > 20
    for key, value in table.items():
        assert fast[key].dtype == value.dtype, key
        np.testing.assert_array_equal(fast[key], value, err_msg=key)
    hcal = setup.detector("HCAL")
    modules = C.channel_sums(digits, ev_of, n, hcal).reshape(n, hcal.n_sections, -1).sum(axis=2) / GeV
    np.testing.assert_allclose(fast["hcal_module_energy"], modules, rtol=1e-12, atol=0)
    counter = np.bincount(ev_of[digits.good & (digits.det == setup.detector("S0").id)],
                          weights=digits.energy[digits.good & (digits.det == setup.detector("S0").id)], minlength=n)
    np.testing.assert_array_equal(fast["counter_S0_energy"], counter / GeV)


def test_setup_without_ecal_gives_the_absent_ecal_fields(mu):
    """Without an ECAL the fused event kernel compiles without the ECAL part: NaN energies and
    cell -1, the other detectors as with the ECAL."""
    setup, cond = mu
    rng = np.random.default_rng(12)
    ev = make_events(setup, cond, *_random_deposits(setup, rng, 40, ["HCAL", "VETO", "S0"]), seed=4, n_events=40)
    no_ecal = dataclasses.replace(setup, calorimeters={k: v for k, v in setup.calorimeters.items() if k != "ECAL"})
    out, full = C.reconstruct_calo(ev, no_ecal, cond), C.reconstruct_calo(ev, setup, cond)
    assert np.isnan(out["ecal_energy"]).all() and (out["ecal_max_cell_ix"] == -1).all()
    for key in ("hcal_module_energy", "veto_paddle_energy", "counter_S0_energy", "n_pileup"):
        np.testing.assert_array_equal(out[key], full[key], err_msg=key)


def test_ecal_kernel_with_empty_cells_and_non_finite_scales_matches_twin(mu):
    """_ecal_event skips empty cells (their +-0 terms change no sum) unless a section's response
    scale is not finite (0 * inf is NaN): both cases as the twin, with negative and empty cells."""
    from types import SimpleNamespace

    setup, _ = mu
    det = setup.detector("ECAL")
    rng = np.random.default_rng(13)
    n = 300
    chan_e = np.zeros((n, det.n_channels))
    hit = rng.random(chan_e.shape) < 0.08
    chan_e[hit] = rng.uniform(-200.0, 9000.0, hit.sum())
    fields = ("ecal_preshower_energy", "ecal_main_energy", "ecal_energy", "ecal_max_cell_ix", "ecal_max_cell_iy",
              "ecal_cog_x", "ecal_cog_y")
    for last in (1.0, np.inf):
        scale = np.ones((3, det.n_sections))
        scale[1] = 1.2
        scale[2, 0] = last
        cond = SimpleNamespace(response_energy=np.array([1000.0, 5000.0, 50000.0]), response_scale=scale)
        fast = C._ecal_quantities(setup, det, chan_e, cond)
        slow = C._ecal_quantities_reference(setup, det, chan_e, cond)
        for key in fields + (("ecal_shower_chi2",) if np.isfinite(last) else ()):
            np.testing.assert_allclose(fast[key], slow[key], rtol=1e-12, atol=1e-9, equal_nan=True, err_msg=key)
        if not np.isfinite(last):  # events above the table: NaN sums (no empty cell skipped)
            assert np.isnan(fast["ecal_energy"]).any() and np.isfinite(fast["ecal_energy"]).any()
