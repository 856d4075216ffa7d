"""Tracker calibration closure: simulate beam runs with a "true" tracker payload (misaligned
planes, field integrals off, plane efficiencies, noise, dead and hot strips), derive the
constants with the nominal tag as start (alignment -> momentum scale -> efficiency, each
on the previous one's tag) and compare with the truth."""

from __future__ import annotations

import contextlib
import io
import shutil
from pathlib import Path

import numpy as np
import pytest
from hepunits import GeV, m, tesla

from na64reco.calibration.alignment import reduced_normal_equations, reference_planes, solve_view
from na64reco.calibration.beam_tracks import design
from na64reco.calibration.publish import calibrate_files, publish_result
from na64reco.cli import main
from na64reco.conditions import load_conditions, publish, tracker_content
from na64reco.errors import ConfigError
from na64reco.geometry import load_setup
from na64reco.io.raw import open_raw
from na64reco.reco.tracking.stage import reconstruct_tracks

sim = pytest.importorskip("na64reco.sim.generate", reason="needs the simulator (na64reco.sim.generate)")

REPO_CALIB = Path(__file__).resolve().parent.parent / "calib"
RUN = 700
N_BEAM = 6000
#: true misalignments (mm) of planes that are not reference planes (those define the frame)
SHIFTS = {"MM2X": 0.5, "MM3X": -0.2, "MM3Y": 0.3, "MM5Y": -0.45, "MM6Y": 0.15, "MM6X": 0.25, "ST1X": -0.3}
FIELD = {"MS1": 4.0 * 1.007, "MS2": 1.4 * 0.994}  # T m, the setup has 4.0 and 1.4
DEAD = {"MM3X": [150, 171], "GEM1Y": [120], "ST1X": [31]}
HOT = {"MM5Y": [40], "GEM2X": [100, 200]}


def true_tracker(setup, base) -> dict:
    body = tracker_content(setup, base)
    rng = np.random.default_rng(12)
    for p in setup.planes:
        entry = body["planes"][p.name]
        entry["alignment_mm"] = round(entry["alignment_mm"] + SHIFTS.get(p.name, 0.0), 5)
        entry["efficiency"] = round(float(rng.uniform(0.80, 0.99)), 3)
        entry["noise_hits"] = round(float(p.noise_hits * rng.uniform(0.7, 1.5)), 3)
        entry["dead_strips"] = DEAD.get(p.name, [])
        if p.name in HOT:
            entry["hot_strips"] = HOT[p.name]
    body["magnets"] = {k: {"field_integral_tm": v} for k, v in FIELD.items()}
    return body


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A private calib dir with the true tag, a beam run made with it and the chain of
    derived tags: alignment (from nominal) -> momentum scale -> efficiency."""
    root = tmp_path_factory.mktemp("calib")
    shutil.copytree(REPO_CALIB, root, dirs_exist_ok=True)
    mp = pytest.MonkeyPatch()
    mp.setenv("NA64RECO_CALIB", str(root))
    setup = load_setup("na64mu", run=RUN)
    base = load_conditions(setup, RUN, root=root)
    publish("na64mu", "true-trk", (1, 999999), {"tracker": true_tracker(setup, base)}, base_tag="na64mu-default",
            comment="true tracker constants of the closure test", root=root)
    beam = root / "beam.root"
    # the nominal setup: the out-of-time beam muons in the trackers (readout.beam_pileup_window)
    # make most of the off-track occupancy, in the beam profile (docs/calibration.md)
    sim.simulate(load_setup("na64mu", run=RUN), N_BEAM, 21, RUN, beam, process="beam", calib_tag="true-trk",
                 trigger="calibration")  # every beam muon written (the physics trigger keeps ~1 %)
    results = {}
    prev = "na64mu-default"
    for kind, tag in (("alignment", "c-align"), ("momentum-scale", "c-scale"), ("efficiency", "c-eff")):
        results[kind] = calibrate_files(kind, setup, [beam], RUN, base_tag=prev, root=root)
        publish_result(results[kind], setup, tag, (1, 999999), base_tag=prev, root=root, sources=[beam])
        prev = tag
    yield setup, root, beam, load_conditions(setup, RUN, "true-trk", root=root), results
    mp.undo()


def test_weak_modes_and_exact_solution():
    """The reduced normal equations have exactly the track model's npar zero modes (g = R c);
    with exact positions the constrained solution is the true offsets (relative to the
    reference planes, which the weak modes move to zero)."""
    setup = load_setup("na64mu")
    from na64reco.reco.tracking.config import load_tracking_config
    from na64reco.reco.tracking.tracks import make_views

    rng = np.random.default_rng(1)
    for view in make_views(setup, load_tracking_config(setup)):
        R = design(view)
        npl, npar = R.shape
        q = rng.normal(size=(300, npar)) * [5.0, 1.0, 0.5][:npar]
        true_g = rng.normal(scale=0.3, size=npl)
        fixed = reference_planes(view)
        # move the truth by a weak mode so that the reference planes are at zero
        c = np.linalg.solve(R[fixed], -true_g[fixed])
        true_g = true_g + R @ c
        y = q @ R.T + true_g[None, :]
        w = np.full(y.shape, 1.0 / 0.07**2)
        w[rng.random(y.shape) < 0.1] = 0.0
        w[(w > 0).sum(axis=1) <= npar] = 1.0 / 0.07**2
        M, _ = reduced_normal_equations(R, y, w)
        np.testing.assert_allclose(M @ (R @ rng.normal(size=npar)), 0.0, atol=1e-6 * np.abs(M).max())
        eig = np.linalg.eigvalsh(M)
        assert (eig < 1e-9 * eig.max()).sum() == npar, view
        g, err = solve_view(R, y, w, fixed)
        np.testing.assert_allclose(g, true_g, atol=1e-9)
        assert np.all(err[fixed] == 0) and np.all(err[np.setdiff1d(range(npl), fixed)] > 0)


@pytest.mark.parametrize("e0,loss", [(160.0, 0.0), (160.0, 2.5), (100.0, 20.0)])
def test_expected_inverse_momentum_against_its_monte_carlo_mean(e0, loss):
    """E[1 / (e0 (1 + delta) - L)] to second order in the spread (its third order is ~3 s^4 (e0 / e)^4,
    2e-5 here): a spread of 5 % makes the second-order term 2.5e-3 and the loss 25 % (mutation review, stop
    48: removing either term passed the closure tests, whose statistics cannot see them)."""
    from na64reco.calibration.momentum_scale import expected_inverse_momentum

    spread = 0.05
    delta = np.random.default_rng(48).standard_normal(4_000_000) * spread
    mc = np.mean(1.0 / (e0 * (1.0 + delta) - loss))
    err = np.std(1.0 / (e0 * (1.0 + delta) - loss)) / np.sqrt(delta.size)
    assert expected_inverse_momentum(e0, loss, spread) == pytest.approx(mc, abs=5 * err + 5e-5 * mc)


def test_an_alignment_that_does_not_converge_is_an_error(world):
    """A base 4 mm off for one plane (twice the hits' window): the fit does not capture it.  Before stop 48
    the eighth iteration's result was published (-0.85 +- 0.01 mm for +4 mm; calibration review)."""
    from na64reco.errors import NA64Error

    setup, root, beam, _, _ = world
    body = tracker_content(setup, load_conditions(setup, RUN, root=root))
    body["planes"]["MM3X"]["alignment_mm"] = round(body["planes"]["MM3X"]["alignment_mm"] - 4.0, 5)
    publish("na64mu", "off-4mm", (1, 999999), {"tracker": body}, base_tag="na64mu-default",
            comment="MM3X 4 mm off", root=root)
    with pytest.raises(NA64Error, match="alignment did not converge in 8 iterations: plane MM3X still moved"):
        calibrate_files("alignment", setup, [beam], RUN, base_tag="off-4mm", root=root)


def test_a_range_over_two_bases_is_refused(world):
    """(the base at the range's first run was taken for all of it: a momentum scale over 800-999 on a tag
    aligned for 900-999 reconstructed run 900 unaligned, 6 sigma off, and published the unaligned planes over
    the aligned ones; calibration review, stop 48)"""
    setup, root, beam, _, _ = world
    body = tracker_content(setup, load_conditions(setup, RUN, root=root))
    publish("na64mu", "part-range", (650, 999), {"tracker": body}, base_tag="na64mu-default",
            comment="a tracker payload for part of the range", root=root)
    with pytest.raises(ConfigError, match="gives run 600 the tracker conditions .* and run 650 .*--runs 600 649 and "
                                          "--runs 650 999 apart"):
        calibrate_files("alignment", setup, [beam], RUN, base_tag="part-range", root=root, runs=(600, 999))
    calibrate_files("alignment", setup, [beam], RUN, base_tag="part-range", root=root, runs=(650, 999))
    # another payload's range inside the range is no obstacle: the new tag keeps its ranges
    calo = load_conditions(setup, RUN, root=root)
    from na64reco.calibration.publish import _base_body, _to_lists

    publish("na64mu", "part-calo", (650, 999), {"calorimeter": _to_lists(_base_body(setup, calo))},
            base_tag="na64mu-default",
            comment="a calorimeter payload for part of the range", root=root)
    calibrate_files("alignment", setup, [beam], RUN, base_tag="part-calo", root=root, runs=(600, 999))
    # ... but the momentum scale subtracts the calorimeters' upstream losses: one calorimeter base too
    with pytest.raises(ConfigError, match="gives run 600 the calorimeter conditions"):
        calibrate_files("momentum-scale", setup, [beam], RUN, base_tag="part-calo", root=root, runs=(600, 999))


def test_alignment_closure(world):
    setup, root, beam, true, results = world
    res = results["alignment"].derived["alignment"]
    assert res.iterations[-1] < 0.001  # converged (largest change < 1 um)
    assert res.iterations[0] > 0.4  # the 500 um plane was found in the first iteration
    nominal = load_conditions(setup, RUN, root=root)
    for v in res.views:
        assert v.n_zero_modes == len(v.modes), v
        for name in v.planes:
            if name in v.fixed:  # reference planes keep the base value
                assert res.alignment[name] == nominal.planes[name].alignment
                continue
            diff = res.alignment[name] - true.planes[name].alignment
            assert abs(diff) <= 0.010, (name, diff)
            assert abs(diff) < 5 * res.error[name] + 0.002, (name, diff, res.error[name])
    assert set(SHIFTS) == {n for v in res.views for n in v.planes if n not in v.fixed}
    aligned = load_conditions(setup, RUN, "c-align", root=root)
    assert aligned.planes["MM2X"].alignment == pytest.approx(true.planes["MM2X"].alignment, abs=0.01)


def _p_in_resolution(events, truth, setup, cond) -> tuple[float, float, int]:
    """(median, half the 16-84 % width) of p_in / true p_in - 1, and the number of tracks."""
    r = reconstruct_tracks(events, setup, cond)
    rel = r["p_in"] / truth["p_in"] - 1
    rel = rel[np.isfinite(rel)]
    q16, q50, q84 = np.percentile(rel, [16, 50, 84])
    return q50, 0.5 * (q84 - q16), rel.size


def test_momentum_resolution_restored_by_the_alignment(world):
    setup, root, beam, true, _ = world
    with open_raw(beam) as f:
        events, truth = f.events(), f.truth()
    # the true field integrals in every case: only the alignment differs
    fields = {k: v * tesla * m for k, v in FIELD.items()}
    perfect = _p_in_resolution(events, truth, setup, true)
    aligned_c = load_conditions(setup, RUN, "c-align", root=root)
    from dataclasses import replace

    aligned = _p_in_resolution(events, truth, setup, replace(aligned_c, field_integrals=fields))
    nominal = _p_in_resolution(events, truth, setup,
                               replace(load_conditions(setup, RUN, root=root), field_integrals=fields))
    median_error = 1.25 * perfect[1] / np.sqrt(perfect[2])
    assert abs(aligned[1] / perfect[1] - 1) < 0.05, (aligned, perfect)
    assert abs(aligned[0] - perfect[0]) < 3 * median_error and aligned[2] > 0.98 * perfect[2], (aligned, perfect)
    # the test has power: misaligned, the 2022 tracking (a hit on every plane) measures p_in ~2 % high
    # and loses a quarter of the tracks (with one plane allowed to miss, the width grew instead)
    assert abs(nominal[0] - perfect[0]) > 20 * median_error and nominal[2] < 0.9 * perfect[2], (nominal, perfect)


def test_momentum_scale_closure(world):
    setup, root, beam, true, results = world
    scales = {s.magnet: s for s in results["momentum-scale"].derived["scales"]}
    assert set(scales) == {"MS1", "MS2"}
    for name, value in FIELD.items():
        s = scales[name]
        # within 4 statistical sigma (~0.07 % for this run); the 0.1 % goal is checked at full size
        # by benchmarks/validate_detector_calibration.py
        assert abs(s.field_integral_tm - value) < 4 * s.error_tm, (name, s.field_integral_tm, s.error_tm)
        assert s.error_tm / value < 0.001, (name, s.error_tm)
    cond = load_conditions(setup, RUN, "c-scale", root=root)
    assert cond.magnet(setup, "MS1").field_integral == pytest.approx(scales["MS1"].field_integral_tm * tesla * m)
    # the alignment of the previous tag is carried over
    assert cond.planes["MM2X"].alignment == load_conditions(setup, RUN, "c-align", root=root).planes["MM2X"].alignment
    # the reconstruction uses the measured field integral: p_in centred on the beam energy
    with open_raw(beam) as f:
        p_in = reconstruct_tracks(f.events(), setup, cond)["p_in"]
    assert np.nanmedian(p_in) == pytest.approx(setup.beam.energy / GeV, rel=0.003)


def test_efficiency_closure(world):
    setup, root, beam, true, results = world
    from na64reco.sim.occupancy import expected_per_event

    res = results["efficiency"].derived["planes"]
    pileup = expected_per_event(setup)  # out-of-time beam muons per event crossing the trackers
    for p in setup.planes:
        r, t = res.planes[p.name], true.planes[p.name]
        pull = (r.efficiency - t.efficiency) / r.efficiency_error
        assert abs(pull) < 3, (p.name, r.efficiency, t.efficiency, r.efficiency_error)
        # the off-track clusters: the generated uncorrelated noise (seen ~4 % less: pulses far
        # from the sampling time fall below the APV threshold) plus the out-of-time beam muons
        # the plane sees, at most one cluster per muon
        assert r.off_track_hits > 0.9 * t.noise_hits - 4 * r.off_track_error, p.name
        assert r.off_track_hits < t.noise_hits + pileup * t.efficiency + 4 * r.off_track_error, p.name
        # noise_hits: the uncorrelated noise split from the pile-up muons (calibration/noise_split.py)
        assert abs(r.noise_hits - t.noise_hits) < 4 * r.noise_error + 0.005, (p.name, r.noise_hits, t.noise_hits)
        assert r.pileup_hits > 2 * t.noise_hits, p.name  # ~0.12-0.13 per plane: most of the off-track clusters
        # the hot- and dead-strip search against the beam profile of the pile-up muons
        assert r.dead_strips == DEAD.get(p.name, []), p.name
        assert r.hot_strips == HOT.get(p.name, []), p.name
    cond = load_conditions(setup, RUN, "c-eff", root=root)
    # the published noise_hits is the split (uncorrelated) noise: the simulator adds the pile-up
    assert cond.planes["MM1X"].noise_hits == pytest.approx(max(res.planes["MM1X"].noise_hits, 0.0), abs=1e-5)
    assert cond.planes["MM3X"].dead_strips.tolist() == DEAD["MM3X"]
    assert cond.planes["GEM2X"].hot_strips.tolist() == HOT["GEM2X"]
    assert cond.field_integrals  # the momentum scale of the previous tag is carried over


def test_cli_momentum_scale_publishes_a_tracker_version(world):
    setup, root, beam, true, _ = world
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = main(["calibrate", "--setup", "na64mu", "--kind", "momentum-scale", "--runs", "700", "710",
                   "--tag", "cli-scale", "--base-tag", "c-align", "--calib-dir", str(root), str(beam)])
    assert rc == 0
    text = out.getvalue()
    assert "MS1: field integral" in text and "published tag 'cli-scale'" in text
    cond = load_conditions(setup, 705, "cli-scale", root=root)
    assert cond.files["tracker"].endswith(".yaml") and "v00" in cond.files["tracker"]
    assert load_conditions(setup, 720, "cli-scale", root=root).field_integrals == {}  # outside the range


def test_optional_tracker_fields_need_schema_3(tmp_path):
    root = tmp_path / "calib"
    shutil.copytree(REPO_CALIB, root)
    setup = load_setup("na64mu")
    body = tracker_content(setup, load_conditions(setup, 1, root=root))
    body["planes"]["MM1X"]["efficiency"] = 0.9
    publish("na64mu", "with-eff", (1, 10), {"tracker": body}, base_tag="na64mu-default", root=root)
    path = max((root / "conditions" / "na64mu" / "tracker").glob("v*.yaml"))  # the version just published
    assert load_conditions(setup, 1, "with-eff", root=root).plane_efficiency(setup.planes[0]) == 0.9
    path.write_text(path.read_text().replace("schema_version: 3", "schema_version: 2"))
    from na64reco.conditions import _payload

    _payload.cache_clear()
    with pytest.raises(ConfigError, match="MM1X.efficiency.*schema_version 3"):
        load_conditions(setup, 1, "with-eff", root=root)


def test_hot_strip_criterion_false_rate_and_power():
    """Pure Poisson occupancy at a few hits per strip calls ~HOT_P_VALUE planes hot; a strip
    with 10x the rate is found."""
    from na64reco.calibration.plane_efficiency import HOT_P_VALUE, bad_strips

    rng = np.random.default_rng(5)
    n_planes, n_strips, lam = 500, 256, 4.0
    false = sum(bool(bad_strips(rng.poisson(lam, n_strips))[1]) for _ in range(n_planes))
    # expected <= HOT_P_VALUE * n_planes = 0.5; 4 is beyond the Poisson 99.9 % quantile of 0.5
    # (beam profiles: tests/test_strip_profile.py)
    assert false <= 4
    found = 0
    for _ in range(50):
        c = rng.poisson(lam, n_strips)
        c[100] = rng.poisson(10 * lam)
        found += bad_strips(c)[1] == [100]
    assert found >= 45
    assert HOT_P_VALUE <= 1e-2
