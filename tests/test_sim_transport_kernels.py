"""numba kernels of the beam transport (multiple scattering, straight flight) against their
numpy reference: the same numbers bit for bit and the same random-number consumption."""

from __future__ import annotations

import numpy as np
import pytest

from na64reco import constants
from na64reco.material import highland
from na64reco.sim import interactions as phys
from na64reco.sim.randoms import standard_normal, standard_normals
from na64reco.sim.tracks import MASSES, Tracks, scatter_thick, scatter_thin


def _tracks(seed: int, n: int) -> Tracks:
    rng = np.random.default_rng(seed)
    p = np.exp(rng.uniform(np.log(50.0), np.log(2e5), n))  # 50 MeV .. 200 GeV
    p[: n // 10] = rng.uniform(0.0, 1.0, n // 10)  # very slow ones too (and p = 0: NaN / inf angles)
    if n:
        p[0] = 0.0
    return Tracks(ev=np.arange(n, dtype=np.int64), x=rng.normal(0, 10, n), y=rng.normal(0, 10, n),
                  tx=rng.normal(0, 1e-3, n), ty=rng.normal(0, 1e-3, n), p=p, q=np.ones(n, np.int8),
                  kind=rng.integers(0, len(MASSES), n).astype(np.int8), role=np.zeros(n, np.int8),
                  flag=np.zeros(n, np.int8), t=np.zeros(n), alive=rng.random(n) < 0.8)


def _reference_thin(rng, tr, x, mask, drift):
    """The numpy steps of the simulation before the kernels (issue 11, third pass)."""
    x_new, y_new = tr.x + tr.tx * drift, tr.y + tr.ty * drift
    th = np.where(mask, highland(tr.p, tr.mass, x), 0.0)
    z = rng.standard_normal((2, tr.n))
    return x_new, y_new, tr.tx + th * z[0], tr.ty + th * z[1]


def _reference_thick(rng, tr, x, length, mask):
    th = np.where(mask, highland(tr.p, tr.mass, x), 0.0)
    z = rng.standard_normal((4, tr.n))
    return (tr.x + length * th * (z[0] / np.sqrt(12.0) + z[1] / 2.0), tr.y + length * th * (z[2] / np.sqrt(12.0)
            + z[3] / 2.0), tr.tx + th * z[1], tr.ty + th * z[3])


def _same(a, b):
    np.testing.assert_array_equal(np.asarray(a).view(np.uint64), np.asarray(b).view(np.uint64))  # bits, NaN too


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the reference's p = 0 track: 0 / 0
@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("x", [0.0, 1e-6, 3.2e-3, 0.5, 40.0])
@pytest.mark.parametrize("drift", [0.0, 1234.5])
def test_scatter_thin_kernel_matches_numpy_bit_for_bit(seed, x, drift):
    tr, ref = _tracks(seed, 3000), _tracks(seed, 3000)
    rng_a, rng_b = np.random.default_rng(seed + 100), np.random.default_rng(seed + 100)
    scatter_thin(rng_a, tr, x, tr.alive, drift=drift)
    expected = _reference_thin(rng_b, ref, x, ref.alive, drift)
    for got, want in zip((tr.x, tr.y, tr.tx, tr.ty), expected, strict=True):
        _same(got, want)
    assert rng_a.random() == rng_b.random()  # the same random numbers consumed


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("seed", [4, 5])
@pytest.mark.parametrize("x", [0.0, 2.5, 180.0])
def test_scatter_thick_kernel_matches_numpy_bit_for_bit(seed, x):
    tr, ref = _tracks(seed, 3000), _tracks(seed, 3000)
    rng_a, rng_b = np.random.default_rng(seed), np.random.default_rng(seed)
    scatter_thick(rng_a, tr, x, 450.0, tr.alive)
    expected = _reference_thick(rng_b, ref, x, 450.0, ref.alive)
    for got, want in zip((tr.x, tr.y, tr.tx, tr.ty), expected, strict=True):
        _same(got, want)
    assert rng_a.random() == rng_b.random()


def test_scatter_without_mask_and_array_material_agree():
    """``mask=None`` scatters every track; an array of material (the numpy path) gives the same."""
    a, b = _tracks(7, 500), _tracks(7, 500)
    a.p, b.p = a.p + 100.0, b.p + 100.0
    scatter_thin(np.random.default_rng(1), a, 0.01)
    scatter_thin(np.random.default_rng(1), b, np.full(500, 0.01))
    _same(a.tx, b.tx)
    _same(a.ty, b.ty)


def test_scattered_angles_follow_highland():
    """Closed form: 160 GeV muons through 1 X0 get kicks of RMS theta0 (Highland) per projection."""
    n = 200_000
    tr = Tracks(ev=np.arange(n, dtype=np.int64), x=np.zeros(n), y=np.zeros(n), tx=np.zeros(n), ty=np.zeros(n),
                p=np.full(n, 160e3), q=np.ones(n, np.int8), kind=np.zeros(n, np.int8), role=np.zeros(n, np.int8),
                flag=np.zeros(n, np.int8), t=np.zeros(n), alive=np.ones(n, bool))
    scatter_thin(np.random.default_rng(3), tr, 1.0, tr.alive, drift=100.0)
    theta0 = highland(160e3, constants.MUON_MASS, 1.0)
    for slopes in (tr.tx, tr.ty):
        assert np.std(slopes) == pytest.approx(theta0, rel=5 / np.sqrt(2 * n))  # 5 sigma of the RMS estimate
    np.testing.assert_array_equal(tr.x, 0.0)  # drift with the slopes *before* the kick (zero)


def test_empty_tracks():
    tr = _tracks(1, 0)
    scatter_thin(np.random.default_rng(1), tr, 0.1, tr.alive, drift=5.0)
    scatter_thick(np.random.default_rng(1), tr, 0.1, 5.0, tr.alive)
    assert tr.n == 0


@pytest.mark.parametrize(("rows", "n"), [(1, 0), (1, 1), (2, 10_500), (5, 333), (4, 7)])
def test_numba_normals_are_numpys_normals(rows, n):
    """The normals drawn in numba are numpy's, from the same stream, leaving the same state."""
    a, b = np.random.default_rng(rows * 1000 + n), np.random.default_rng(rows * 1000 + n)
    _same(standard_normals(a, rows, n), b.standard_normal((rows, n)))
    _same(standard_normal(a, n), b.standard_normal(n))
    assert a.bit_generator.state == b.bit_generator.state


def test_moyal_draws_as_before():
    """interactions.moyal with a count: numpy's formula on numpy's normals, bit for bit."""
    a, b = np.random.default_rng(9), np.random.default_rng(9)
    z = b.standard_normal(1000)
    _same(phys.moyal(a, 1.5, 0.3, 1000), 1.5 - 0.3 * np.log(np.maximum(z * z, 1e-300)))
    assert a.random() == b.random()


def _one_by_one(rng, tr, drift, x, record, mask):
    """The steps of :func:`thin_steps` as the transport made them before (issue 11, fourth
    pass): one ``scatter_thin`` per step, the coordinate recorded after the flight."""
    coords = []
    for d, xs, r in zip(drift, x, record, strict=True):
        if d:
            tr.drift(d)
        if r >= 0:
            coords.append((tr.x if r == 0 else tr.y).copy())
        scatter_thin(rng, tr, xs, mask)
    return coords


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the p = 0 track: 0 / 0
@pytest.mark.parametrize("seed", [1, 2])
def test_thin_steps_match_scatter_thin_one_by_one(seed):
    """A tracker station (air gap, plane, air gap, plane, ...), with material-free steps and
    flights of zero length: the same positions, slopes and recorded coordinates bit for bit
    (p = 0 and slow tracks, masked tracks) and the same random numbers consumed."""
    from na64reco.sim.tracks import thin_steps

    drift = [1000.0, 0.0, 10.0, 0.0, 0.0, 1990.0, 0.0, 0.0]
    x = [3e-3, 5e-3, 0.0, 4e-3, 2e-3, 6e-3, 0.0, 1e-6]
    record = [-1, 0, -1, 1, 0, -1, 1, -1]
    tr, ref = _tracks(seed, 2000), _tracks(seed, 2000)
    rng_a, rng_b = np.random.default_rng(seed + 7), np.random.default_rng(seed + 7)
    coords = thin_steps(rng_a, tr, drift, x, record, tr.alive)
    expected = _one_by_one(rng_b, ref, drift, x, record, ref.alive)
    assert coords.shape == (4, 2000)
    for got, want in zip(coords, expected, strict=True):
        _same(got, want)
    for got, want in zip((tr.x, tr.y, tr.tx, tr.ty), (ref.x, ref.y, ref.tx, ref.ty), strict=True):
        _same(got, want)
    assert rng_a.random() == rng_b.random()


def test_thin_steps_of_no_tracks_draw_nothing():
    from na64reco.sim.tracks import thin_steps

    tr = Tracks.empty()
    rng_a, rng_b = np.random.default_rng(3), np.random.default_rng(3)
    coords = thin_steps(rng_a, tr, [5.0, 0.0], [1e-3, 1e-3], [-1, 0], tr.alive)
    assert coords.shape == (1, 0)
    assert rng_a.random() == rng_b.random()


def test_follow_with_stations_equals_the_element_by_element_loop():
    """The transport with each tracker station in one kernel (issue 11, fourth pass) against
    the element-by-element loop it replaced (every plane through its handler): the same hits,
    deposits, surviving tracks and random numbers consumed, for a mixture of processes."""
    from na64reco.geometry import load_setup
    from na64reco.io.raw import PROCESSES
    from na64reco.sim import transport as tp
    from na64reco.sim.beam import sample_beam
    from na64reco.sim.params import load_sim_params
    from na64reco.sim.tracks import Recorder

    def loop(ctx, tr):
        z = ctx.setup.beam.start_z
        for el in tp.elements(ctx.setup):
            dz = el.z - z
            if dz > 0 and el.kind != "decay":  # air or gas (the MS2 helium bag); the decays' start is no material
                scatter_thin(ctx.rng, tr, ctx.setup.readout.x0_between(z, el.z), tr.alive, drift=dz)
                z = el.z
            tr = tp._HANDLERS[el.kind](ctx, el, tr)
            if el.kind in ("ecal", "vhcal", "hcal", "srd"):
                z = el.z + el.obj.depth
                tr = tr.take(tr.alive)
        return tr

    setup = load_setup("na64mu", run=1)
    params = load_sim_params(setup)
    n = 3000
    codes = np.array([PROCESSES[k] for k in ("beam", "dimuon", "punchthrough", "hadron")], np.int8)
    results = []
    for transport in (tp.follow, loop):
        rng = np.random.default_rng(21)
        proc = codes[rng.integers(0, codes.size, n)]
        rec = Recorder(n)
        ctx = tp.Context(rng, setup, params, rec, tp.Truth.new(n), biased=True)
        out = transport(ctx, sample_beam(rng, setup, np.arange(n, dtype=np.int64), proc))
        results.append((rec.hits(), rec.deposits(), out, rng.random()))
    (h1, d1, o1, r1), (h2, d2, o2, r2) = results
    assert h1[0].size > 10 * n and r1 == r2
    for a, b in zip((*h1, *d1), (*h2, *d2), strict=True):
        _same(a.astype(float), b.astype(float))
    for name in ("ev", "x", "y", "tx", "ty", "p", "alive"):
        _same(getattr(o1, name).astype(float), getattr(o2, name).astype(float))


def test_cell_index_kernel_equals_the_numpy_expression():
    """``na64reco.sim.cells.cell_index`` of float64 arrays (its numba pass) gives the cells of
    ``Calorimeter.cell_index`` (numpy), bit for bit: every calorimeter of both setups (holes
    included), cell edges, signed zeros, infinities, NaN and huge values."""
    import warnings

    from na64reco.geometry import load_setup
    from na64reco.sim.cells import cell_index

    rng = np.random.default_rng(4)
    for name in ("na64mu", "na64e"):
        for det in load_setup(name).calorimeters.values():
            n = 5000
            x, y = rng.normal(det.center[0], 400, n), rng.normal(det.center[1] + det.offset_y, 400, n)
            k = rng.integers(-12, 12, (2, 300))  # on cell edges and hole edges
            x[:300] = det.center[0] + k[0] * det.cell_size[0] / 2
            y[:300] = det.center[1] + det.offset_y + k[1] * det.cell_size[1] / 2
            x[300:308] = [-0.0, 0.0, np.inf, -np.inf, np.nan, 1e30, -1e30, det.center[0] + det.hole[0] / 2]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # numpy's cast of NaN / inf
                want = det.cell_index(x, y)
            got = cell_index(det, x, y)
            for a, b in zip(got, want, strict=True):
                assert a.dtype == b.dtype
                np.testing.assert_array_equal(a, b)


def test_highland_base_equals_the_gathered_masses():
    """``tracks._highland_base`` (the mass by a select over the four kinds, issue 11 ninth pass):
    ``13.6 MeV / (beta p)`` and ``beta^2`` of the masses gathered by kind, bit for bit, for every
    kind, p = 0 and slow tracks."""
    from na64reco.material import HIGHLAND_MEV
    from na64reco.sim.tracks import _highland_base

    tr = _tracks(12, 4000)
    m = MASSES[tr.kind]
    with np.errstate(divide="ignore", invalid="ignore"):
        beta = tr.p / np.sqrt(tr.p * tr.p + m * m)
        ref = (HIGHLAND_MEV / (beta * tr.p), beta * beta)
    got = _highland_base(tr.p, tr.kind, MASSES, HIGHLAND_MEV)
    assert set(np.unique(tr.kind)) == {0, 1, 2, 3}
    for a, b in zip(got, ref, strict=True):
        _same(a, b)
