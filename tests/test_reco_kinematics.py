"""Muon four-vectors ``mu_in`` / ``mu_out`` (scikit-hep vector records) of the reco output.

Closed forms for the slope -> vector formula; on simulated files: the vectors agree with the
scalar fields they come from (p, slopes) and with angles computed by hand, the kink angle
of beam muons is the multiple scattering in the ECAL (Highland, the simulator's model), and
Parquet / ROOT outputs give the same vectors back.
"""

from __future__ import annotations

import awkward as ak
import numpy as np
import pytest
import uproot
import vector
from hepunits import MeV

from na64reco import constants
from na64reco.conditions import load_conditions
from na64reco.export import read_reco, reconstruct_file
from na64reco.geometry import load_setup
from na64reco.io.raw import PROCESSES, open_raw
from na64reco.material import highland
from na64reco.reco.event import attach_truth, reconstruct
from na64reco.reco.kinematics import MUON_MASS_GEV, momentum_components, momentum_vectors, restore_vectors
from na64reco.sim.generate import simulate


def _np(x):
    """A (possibly optional) awkward column as float numpy, NaN for None."""
    return ak.to_numpy(ak.fill_none(x, np.nan)).astype(float)


def _unit(tx, ty):
    n = np.sqrt(1.0 + tx**2 + ty**2)
    return np.stack([tx / n, ty / n, 1.0 / n], axis=-1)


# ---- closed forms ------------------------------------------------------------------------
def test_vectors_from_slopes_have_the_polar_angles_of_the_slopes():
    theta = np.array([0.0, 1e-4, 3e-3, 0.05, 0.3])
    phi = np.array([0.0, 0.5, -2.0, 3.0, -0.1])
    p = np.array([160.0, 80.0, 10.0, 1.0, 0.2])
    tx, ty = np.tan(theta) * np.cos(phi), np.tan(theta) * np.sin(phi)
    v = momentum_vectors(p, tx, ty)
    np.testing.assert_allclose(_np(v.p), p, rtol=1e-14)
    np.testing.assert_allclose(_np(v.theta), theta, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(_np(v.phi)[1:], phi[1:], rtol=1e-12)  # phi undefined along z
    np.testing.assert_allclose(_np(v.E), np.sqrt(p**2 + MUON_MASS_GEV**2), rtol=1e-14)
    np.testing.assert_allclose(_np(v.mass), constants.MUON_MASS / 1000.0, rtol=1e-14)
    # the formula on its own, with the array library as an argument
    px, py, pz = momentum_components(p, tx, ty, lib=np)
    np.testing.assert_allclose(px, p * np.sin(theta) * np.cos(phi), atol=1e-14)
    np.testing.assert_allclose(py, p * np.sin(theta) * np.sin(phi), atol=1e-14)
    np.testing.assert_allclose(pz, p * np.cos(theta), rtol=1e-14)


def test_a_missing_projection_gives_none_not_a_forward_muon():
    v = momentum_vectors([160.0, np.nan, 50.0, 20.0], [1e-3, 1e-3, np.nan, 2e-3], [0.0, 0.0, 0.0, np.inf])
    assert ak.is_none(v).tolist() == [False, True, True, True]
    assert v.theta.tolist()[1:] == [None, None, None]  # (a NaN vector would have theta = 0)
    other = momentum_vectors([150.0] * 4, [0.0] * 4, [0.0] * 4)
    assert ak.is_none(v.deltaangle(other)).tolist() == [False, True, True, True]


def test_momentum_vectors_rejects_mismatched_inputs():
    with pytest.raises(ValueError, match=r"three 1-D arrays of one length.*\(3,\), \(2,\)"):
        momentum_vectors(np.ones(3), np.ones(2), np.ones(3))


def test_restore_vectors_from_unnamed_records_and_flat_columns():
    v = momentum_vectors([100.0, np.nan], [1e-3, 0.0], [2e-3, 0.0])
    plain = ak.zip({"p_out": [100.0, np.nan], "mu_out": ak.without_parameters(v)}, depth_limit=1)
    assert plain.mu_out.layout.content.parameter("__record__") is None
    assert _np(restore_vectors(plain).mu_out.theta)[0] == pytest.approx(np.arctan(np.hypot(1e-3, 2e-3)))
    flat = ak.Array({"p_out": [100.0, np.nan], **{f"mu_out_{c}": _np(v[c]) for c in ("px", "py", "pz", "mass")}})
    back = restore_vectors(flat)
    assert back.fields == ["p_out", "mu_out"]
    assert ak.is_none(back.mu_out).tolist() == [False, True]
    assert _np(back.mu_out.p)[0] == pytest.approx(100.0, rel=1e-14)


# ---- simulated files ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("kinematics")
    # every beam muon written (calibration trigger): the deflected-muon trigger keeps ~1 %.
    # 2023 period (run 10001): its tracking finds ~94 % of the muons (2022: ~21 %)
    simulate("na64mu", 1200, seed=31, run=10001, output=d / "beam.root", process="beam", trigger="calibration")
    simulate("na64mu", 1000, seed=32, run=10001, output=d / "signal.root", process="signal", mass=300 * MeV)
    return d


def _reco(path):
    with open_raw(path) as raw:
        setup = load_setup(raw.setup, run=raw.run)
        reco = reconstruct(raw.events(), setup, load_conditions(setup, raw.run), source=str(path))
        return attach_truth(reco, raw.truth()), setup


@pytest.fixture(scope="module")
def signal(files):
    return _reco(files / "signal.root")[0]


@pytest.mark.parametrize("role", ["in", "out"])
def test_vectors_agree_with_the_scalar_fields(signal, role):
    mu = signal[f"mu_{role}"]
    assert ak.parameters(mu.layout.content)["__record__"] == "Momentum4D"
    p, tx, ty = (np.asarray(signal[f]) for f in (f"p_{role}", f"{role}_tx", f"{role}_ty"))
    measured = np.isfinite(p) & np.isfinite(tx) & np.isfinite(ty)
    assert measured.sum() > 100
    np.testing.assert_array_equal(~ak.to_numpy(ak.is_none(mu)), measured)  # None exactly where unmeasured
    np.testing.assert_allclose(_np(mu.p)[measured], p[measured], rtol=1e-14)
    theta = np.arctan(np.hypot(tx, ty))  # by hand from the slopes
    np.testing.assert_allclose(_np(mu.theta)[measured], theta[measured], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(_np(mu.phi)[measured], np.arctan2(ty, tx)[measured], rtol=1e-12)
    np.testing.assert_allclose(_np(mu.mass)[measured], MUON_MASS_GEV)


def test_kink_angle_and_momentum_transfer_agree_with_the_slopes(signal):
    u_in, u_out = _unit(*(np.asarray(signal[f]) for f in ("in_tx", "in_ty"))), _unit(
        *(np.asarray(signal[f]) for f in ("out_tx", "out_ty")))
    # angle between the two directions, by hand (atan2 of |cross| and dot: exact at small angles)
    kink = np.arctan2(np.linalg.norm(np.cross(u_in, u_out), axis=1), np.sum(u_in * u_out, axis=1))
    both = ~ak.to_numpy(ak.is_none(signal.mu_in) | ak.is_none(signal.mu_out))
    assert both.sum() > 100
    got = _np(signal.mu_in.deltaangle(signal.mu_out))
    np.testing.assert_allclose(got[both], kink[both], rtol=0, atol=3e-8)  # arccos inside vector: ~1e-8 rad
    assert np.median(kink[both]) > 1e-3  # the Z' emission: mrad kinks, far above that precision
    q = np.asarray(signal.p_in)[:, None] * u_in - np.asarray(signal.p_out)[:, None] * u_out
    transfer = signal.mu_in - signal.mu_out
    np.testing.assert_allclose(_np(transfer.mag)[both], np.linalg.norm(q, axis=1)[both], rtol=1e-12)
    # four-momentum transfer squared t = (E_in - E_out)^2 - |q|^2 < 0
    e_in, e_out = _np(signal.mu_in.E), _np(signal.mu_out.E)
    t = (e_in - e_out) ** 2 - np.sum(q**2, axis=1)
    np.testing.assert_allclose(_np(transfer.mass2)[both], t[both], rtol=1e-6, atol=1e-9)
    assert np.all(t[both] < 0)


def test_kink_of_beam_muons_is_multiple_scattering_in_the_ecal(files):
    """160 GeV beam muons crossing the 40 X0 ECAL: the space angle between incoming and
    outgoing direction is Rayleigh distributed with the plane-projected Highland theta0
    (the simulator's model), median theta0 sqrt(2 ln 2).  Tolerance: 4 sigma of the sample
    median plus 3 % for the track slope resolution (~0.05 mrad in quadrature) and the
    material outside the ECAL."""
    reco, setup = _reco(files / "beam.root")
    beam = (np.asarray(reco.truth_process) == PROCESSES["beam"]) & (np.asarray(reco.p_out) > 100)
    kink = _np(reco.mu_in.deltaangle(reco.mu_out))[beam]
    kink = kink[np.isfinite(kink)]
    assert kink.size > 500
    theta0 = highland(setup.beam.energy, constants.MUON_MASS, setup.detector("ECAL").x0_fraction)
    expected = theta0 * np.sqrt(2 * np.log(2))
    sigma_median = 0.849 * theta0 / np.sqrt(kink.size)  # 1 / (2 f(median) sqrt(n)) for a Rayleigh pdf
    assert abs(np.median(kink) - expected) < 4 * sigma_median + 0.03 * expected


@pytest.mark.parametrize("suffix", [".parquet", ".root"])
def test_reco_file_keeps_the_vectors(files, signal, tmp_path, suffix):
    out = tmp_path / f"signal{suffix}"
    reconstruct_file(files / "signal.root", out, chunk_size=200)  # several chunks
    if suffix == ".parquet":
        vector.register_awkward()
        back = ak.from_parquet(out)  # no na64reco needed to read, only vector's behaviour
        assert read_reco(out)[0].mu_out.type == back.mu_out.type
    else:
        with uproot.open(out) as f:
            tree = f["reco"]
            assert {"mu_out_px", "mu_out_py", "mu_out_pz", "mu_out_mass", "mu_in_px"} <= set(tree.keys())
            back = restore_vectors(tree.arrays())
    for name in ("mu_in", "mu_out"):
        assert str(back[name].type) == str(signal[name].type)
        np.testing.assert_array_equal(ak.to_numpy(ak.is_none(back[name])), ak.to_numpy(ak.is_none(signal[name])))
        for q in ("px", "py", "pz", "theta", "phi", "p"):
            np.testing.assert_array_equal(_np(getattr(back[name], q)), _np(getattr(signal[name], q)),
                                          err_msg=f"{name}.{q}")
    np.testing.assert_array_equal(_np(back.mu_in.deltaangle(back.mu_out)),
                                  _np(signal.mu_in.deltaangle(signal.mu_out)))


def test_electron_setup_has_no_muon_vectors(tmp_path):
    simulate("na64e", 150, seed=33, run=1001, output=tmp_path / "e.root", process="beam")
    with open_raw(tmp_path / "e.root") as raw:
        setup = load_setup(raw.setup)
        reco = reconstruct(raw.events(), setup, load_conditions(setup, raw.run))
    assert "p_in" in reco.fields
    assert "mu_in" not in reco.fields and "mu_out" not in reco.fields


# ---- the array built directly is what ak.zip + ak.mask gave --------------------------------
def _zipped_vectors(p, tx, ty, mass=MUON_MASS_GEV):
    """The construction before the fourth pass (``ak.zip(..., with_name=...)`` + ``ak.mask``)."""
    p, tx, ty = (np.asarray(a, dtype=np.float64) for a in (p, tx, ty))
    with np.errstate(invalid="ignore"):
        px, py, pz = momentum_components(p, tx, ty)
    measured = np.isfinite(px) & np.isfinite(py) & np.isfinite(pz)
    return ak.mask(ak.zip({"px": px, "py": py, "pz": pz, "mass": np.full(p.shape, float(mass))},
                          with_name="Momentum4D"), measured)


@pytest.mark.parametrize("n", [0, 1, 997])
def test_vectors_are_what_zip_and_mask_gave(n):
    rng = np.random.default_rng(n)
    p, tx, ty = rng.uniform(1, 200, n), rng.normal(0, 0.01, n), rng.normal(0, 0.01, n)
    p[::5], tx[1::7], ty[2::11] = np.nan, np.inf, -np.inf
    got, ref = momentum_vectors(p, tx, ty), _zipped_vectors(p, tx, ty)
    assert got.layout.form == ref.layout.form and got.type == ref.type and len(got) == n
    assert ak.array_equal(got, ref, equal_nan=True)
    assert ak.is_none(got).tolist() == ak.is_none(ref).tolist()
    other = momentum_vectors(p[::-1], ty, tx)
    for a, b in ((got.pt, ref.pt), (got.theta, ref.theta), (got.deltaphi(other), ref.deltaphi(other)),
                 ((got - other).mass2, (ref - other).mass2), (got.deltaangle(other), ref.deltaangle(other))):
        assert ak.array_equal(a, b, equal_nan=True)
    assert got.mass.tolist() == ref.mass.tolist()
    heavy = momentum_vectors(p, tx, ty, mass=0.5)
    assert ak.array_equal(heavy, _zipped_vectors(p, tx, ty, mass=0.5), equal_nan=True)
