"""numba kernels of the simulator's digitization against their numpy reference twins."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from na64reco.geometry import load_setup
from na64reco.pulse import apv_shape, msadc_shape
from na64reco.sim import digitize as dg


def _msadc_inputs(rng, n):
    counts = rng.integers(0, 4, n)
    first = np.concatenate([[0], np.cumsum(counts)])
    m = first[-1]
    return (first, rng.uniform(0, 5000, m), rng.uniform(-20, 20, m), rng.uniform(80, 160, n),
            rng.uniform(200, 400, n), rng.uniform(200, 400, n), rng.uniform(1, 4, n),
            rng.standard_normal((n, 32)), 12.5, 10.0, 20.0, 4095)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), n=st.integers(0, 40))
def test_msadc_kernel_matches_reference(seed, n):
    args = _msadc_inputs(np.random.default_rng(seed), n)
    fast = dg.msadc_waveforms(*args)
    slow = dg.msadc_waveforms(*args, reference=True)
    # identical up to a rare rounding tie (float summation order): at most 1 count apart
    assert fast.shape == slow.shape == (n, 32)
    assert np.abs(fast.astype(int) - slow.astype(int)).max(initial=0) <= 1
    assert np.mean(fast == slow) > 0.999 if n else True


def test_msadc_single_pulse_closed_form():
    # one component, no noise: peak = pedestal + amplitude at t0 + 2 decay, saturation at 4095
    first = np.array([0, 1, 2])
    amp = np.array([1000.0, 10000.0])
    t0 = np.array([100.0, 100.0])
    out = dg.msadc_waveforms(first, amp, np.zeros(2), t0, np.full(2, 300.0), np.full(2, 310.0), np.zeros(2),
                             np.zeros((2, 32)), 12.5, 10.0, 20.0, 4095)
    ts = np.arange(32) * 12.5
    expected = np.rint(np.where(np.arange(32) % 2, 310.0, 300.0) + 1000.0 * msadc_shape(ts - 100.0, 10.0, 20.0))
    np.testing.assert_array_equal(out[0], expected)
    assert out[1].max() == 4095 and out[0].max() == pytest.approx(300 + 1000, abs=20)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), n=st.integers(0, 40))
def test_msadc_kernel_with_a_noise_pool_matches_reference(seed, n):
    """Noise read from windows of a flat pool (overlapping, random offsets) as in the simulation."""
    rng = np.random.default_rng(seed)
    args = _msadc_inputs(rng, n)
    pool = rng.standard_normal(100).astype(np.float32)
    start = rng.integers(0, 100 - 32 + 1, n)
    kw = {"noise_start": start, "n_samples": 32}
    fast = dg.msadc_waveforms(*args[:7], pool, *args[8:], **kw)
    slow = dg.msadc_waveforms(*args[:7], pool, *args[8:], reference=True, **kw)
    assert np.abs(fast.astype(int) - slow.astype(int)).max(initial=0) <= 1
    # the same as the (n, 32) noise made of the windows
    windows = pool[start[:, None] + np.arange(32)[None, :]]
    np.testing.assert_array_equal(fast, dg.msadc_waveforms(*args[:7], windows, *args[8:]))


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), n=st.integers(0, 60), pool=st.booleans())
def test_apv_kernel_matches_reference(seed, n, pool):
    setup = load_setup("na64mu")
    ro = setup.readout
    rng = np.random.default_rng(seed)
    n_planes = len(setup.planes)
    n_strips = np.array([p.n_strips for p in setup.planes])
    is_mm = np.array([p.type == "MM" for p in setup.planes])
    dead = np.zeros((n_planes, n_strips.max() + 1), bool)
    dead[rng.integers(0, n_planes, 20), rng.integers(0, 256, 20)] = True
    ev = np.sort(rng.integers(0, 5, n))
    plane = rng.integers(0, n_planes, n)
    order = np.argsort(ev * 64 + plane, kind="stable")
    ev, plane = ev[order], plane[order]
    c = rng.uniform(-2, n_strips[plane] + 1)
    amp = rng.uniform(10, 1000, n)
    shape3 = rng.uniform(0, 1, (n, 3))
    mm_chan = ro.mm_channel_of_strip(np.arange(dead.shape[1]) % 320).astype(np.int64)
    if pool:  # a small pool read from random offsets (windows overlap and wrap around its end)
        noise, start = rng.standard_normal(50).astype(np.float32), rng.integers(0, 50, n)
    else:
        noise, start = dg._apv_noise(rng, n, 2, pool=False)
    args = (ev, plane, c, amp, shape3, n_strips, is_mm, dead, mm_chan, 0.6, 2, noise, start, 4.0, 12.0)
    f = dg._apv_kernel(*args)
    s = dg._apv_reference(*args)
    for a, b in zip(f[:3], s[:3], strict=True):
        np.testing.assert_array_equal(a, b)
    assert np.abs(f[3].astype(int) - s[3].astype(int)).max(initial=0) <= 1  # rounding ties only
    # without noise and threshold, the summed charge is at most the deposited charge
    quiet = dg._apv_kernel(*args[:-4], np.zeros_like(noise), start, 0.0, -1.0)
    assert quiet[3].astype(float).sum() <= (amp[:, None] * shape3).sum() + 3 * len(quiet[3]) * 0.5 + 1e-9


def test_apv_mm_multiplexing_and_gem_strips():
    """One noiseless cluster: MM channels follow the multiplexing map, GEM channels are strips."""
    setup = load_setup("na64mu")
    ro = setup.readout
    planes = setup.planes
    mm = next(p for p in planes if p.type == "MM")
    gem = next(p for p in planes if p.type == "GEM")
    n_strips = np.array([p.n_strips for p in planes])
    is_mm = np.array([p.type == "MM" for p in planes])
    dead = np.zeros((len(planes), n_strips.max() + 1), bool)
    mm_chan = ro.mm_channel_of_strip(np.arange(dead.shape[1]) % 320).astype(np.int64)
    for plane, c in ((mm, 200.3), (gem, 100.6)):
        args = (np.array([0]), np.array([plane.index]), np.array([c]), np.array([600.0]),
                np.ones((1, 3)), n_strips, is_mm, dead, mm_chan, 0.6, 2,
                np.zeros(15, np.float32), np.zeros(1, np.int64), 0.0, -1.0)
        _, _, ch, a = dg._apv_kernel(*args)
        strips = np.rint(c).astype(int) + np.arange(-2, 3)
        expected = ro.mm_channel_of_strip(strips) if plane.type == "MM" else strips
        np.testing.assert_array_equal(np.sort(ch), np.sort(expected))
        # charge centroid of the strips reproduces the cluster position
        order = np.argsort(ch) if plane.type == "GEM" else None
        if order is not None:
            q = a[order, 0].astype(float)
            assert (q * strips).sum() / q.sum() == pytest.approx(c, abs=0.02)


def test_apv_cluster_inputs_match_the_pulse_shape():
    setup = load_setup("na64mu")
    rng = np.random.default_rng(2)
    n, n_planes = 500, len(setup.planes)
    n_strips = np.array([p.n_strips for p in setup.planes])
    pitch = np.array([p.pitch for p in setup.planes], float)
    ev, plane = rng.integers(0, 20, n), rng.integers(0, n_planes, n)
    u, t, q, phase = rng.uniform(-50, 50, n), rng.uniform(-30, 30, n), rng.uniform(0, 900, n), rng.uniform(0, 25, 20)
    order = np.argsort(ev * 64 + plane, kind="stable")
    dest = dg._group_positions(ev, plane, 20, n_planes)
    np.testing.assert_array_equal(order[dest], np.arange(n))  # the inverse of the stable argsort
    rows = dg._apv_cluster_inputs(dest, ev, plane, u, t, q, phase, n_strips, pitch, 2.0, 60.0, 25.0, 50.0)
    assert rows.shape == (n, len(dg._APV_ROW))
    e_s, p_s, c, amp, shape3 = dg._apv_columns(rows)
    ev, plane, u, t, q = ev[order], plane[order], u[order], t[order], q[order]
    np.testing.assert_array_equal(e_s, ev)
    np.testing.assert_array_equal(p_s, plane)
    np.testing.assert_allclose(c, (u + 0.5 * n_strips[plane] * pitch[plane]) / pitch[plane] - 0.5, rtol=1e-14)
    np.testing.assert_allclose(amp, 2.0 * q, rtol=1e-15)
    tt = 60.0 - phase[ev] - t
    np.testing.assert_allclose(shape3, apv_shape(tt[:, None] + 25.0 * np.arange(3)[None, :], 50.0), rtol=1e-13,
                               atol=1e-15)


@pytest.mark.parametrize("n_events", [40, 1])
@pytest.mark.parametrize("pool", [True, False, "small"])
def test_apv_points_kernel_equals_the_rows_route(pool, n_events):
    """The APV digits made from all tracker points in one kernel (straw planes skipped inside,
    the clusters read through a counting-sort permutation, no rows) are those of the rows of
    the masked points sorted by :func:`_group_positions` and :func:`_apv_rows_kernel`, bit for
    bit (with dead strips, MM and GEM planes, several clusters per (event, plane), the pool's,
    fresh and a small wrapped-around noise); an event or plane out of range gives ``ok`` False and no digits
    (apv_digits then takes the rows route).  One event of 3000 points: more clusters than the
    kernel's block (its buffers grow to the event)."""
    setup = load_setup("na64mu")
    ro = setup.readout
    rng = np.random.default_rng(3)
    n, n_planes = 3000, len(setup.planes)
    assert n > dg._APV_BLOCK
    n_strips = np.array([p.n_strips for p in setup.planes])
    pitch = np.array([p.pitch for p in setup.planes], float)
    is_apv = np.array([p.type != "straw" for p in setup.planes])
    is_mm = np.array([p.type == "MM" for p in setup.planes])
    assert is_apv.any() and not is_apv.all() and is_mm.any()
    dead = np.zeros((n_planes, n_strips.max() + 1), bool)
    dead[rng.integers(0, n_planes, 200), rng.integers(0, 256, 200)] = True
    mm_chan = ro.mm_channel_of_strip(np.arange(dead.shape[1]) % 320).astype(np.int64)
    ev, plane = rng.integers(0, n_events, n), rng.integers(0, n_planes, n)
    u = rng.uniform(-0.3, 0.3, n) * n_strips[plane] * pitch[plane]  # several clusters on the strips of a group
    t, phase = rng.uniform(-30, 30, n), rng.uniform(0, 25, n_events)
    m = is_apv[plane]
    nc = int(m.sum())
    q = rng.uniform(0, 900, nc)
    pulse = (2.0, 60.0, 25.0, 50.0)
    if pool == "small":  # 50 numbers read from random offsets: the windows wrap around the end
        noise, start = rng.standard_normal(50).astype(np.float32), rng.integers(0, 50, nc)
    else:
        noise, start = dg._apv_noise(rng, nc, 2, pool)
    readout = (is_mm, dead, mm_chan, 0.6, 2, dg._readonly(noise), start, 4.0, 12.0, dg._ERF_TABLE)
    *got, ok = dg._apv_points_kernel(ev, plane, u, t, is_apv, q, phase, n_events, n_strips, pitch, *pulse, *readout)
    dest = dg._group_positions(ev[m], plane[m], n_events, n_planes)
    rows = dg._apv_cluster_inputs(dest, ev[m], plane[m], u[m], t[m], q, phase, n_strips, pitch, *pulse)
    want = dg._apv_rows_kernel(rows, n_strips, *readout)
    assert ok and want[0].size > (nc if n_events > 1 else 1000)  # several digits per cluster (one event: saturated)
    assert np.diff(want[0]).min() >= 0 and (np.diff(want[0] * 64 + want[1]) == 0).sum() > 100  # shared groups
    got[3] = got[3].T  # the samples as (3, digits)
    for a, b in zip(got, want, strict=True):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)
    for bad_ev, bad_plane in ((n_events, 0), (-1, 0), (0, n_planes)):
        e2, p2 = ev.copy(), plane.copy()
        e2[7], p2[7] = bad_ev, bad_plane
        *got, ok = dg._apv_points_kernel(e2, p2, u, t, is_apv, q, phase, n_events, n_strips, pitch, *pulse, *readout)
        assert not ok and all(a.size == 0 for a in got)
    empty = np.zeros(0, np.int64)
    *got, ok = dg._apv_points_kernel(empty, empty, np.zeros(0), np.zeros(0), is_apv, np.zeros(0), phase, n_events,
                                     n_strips, pitch, *pulse, *readout)
    assert ok and all(a.size == 0 for a in got)


@pytest.mark.parametrize("n_events", [1, 7, 300])
def test_group_positions_invert_the_stable_argsort(n_events):
    """The counting sort of the APV clusters by (event, plane): the same permutation as the
    stable argsort it replaced, for clusters in any order with many ties; keys out of the
    declared range fall back to the argsort."""
    rng = np.random.default_rng(n_events)
    n_planes = 21
    for n in (0, 1, 50, 5000):
        ev, plane = rng.integers(0, n_events, n), rng.integers(0, n_planes, n)
        dest = dg._group_positions(ev, plane, n_events, n_planes)
        order = np.argsort(ev * n_planes + plane, kind="stable")
        np.testing.assert_array_equal(dest[order], np.arange(n))
    ev[0] = n_events  # out of range
    order = np.argsort(ev * n_planes + plane, kind="stable")
    np.testing.assert_array_equal(dg._group_positions(ev, plane, n_events, n_planes)[order], np.arange(n))


def test_event_lexsort_is_np_lexsort():
    """The counting + insertion sort of the deposits and straw digits: the permutation of
    ``np.lexsort`` (stable, ties in input order), for int and float keys with many ties and
    signed zeros; NaN keys and events too large for the insertion sort fall back to it."""
    rng = np.random.default_rng(11)
    for n, n_events in ((0, 1), (1, 1), (50, 3), (4000, 150), (4000, 2000), (2000, 8)):  # (2000, 8): ~250 per event
        ev = rng.integers(0, n_events, n)
        k0 = rng.integers(0, 6, n)
        k1 = rng.integers(-3, 3, n).astype(float)
        k1[rng.random(n) < 0.2] = -0.0
        k2 = rng.integers(0, 2, n).astype(np.int32)
        for keys in ((k0,), (k0, k1), (k0, k1, k2), (k1, k0), (k2, k2, k1)):
            np.testing.assert_array_equal(dg.event_lexsort(ev, keys), np.lexsort((*reversed(keys), ev)))
    ev = rng.integers(0, 5, 100)
    t = rng.random(100)
    t[3] = np.nan
    np.testing.assert_array_equal(dg.event_lexsort(ev, (t,)), np.lexsort((t, ev)))
    ev = np.repeat(np.arange(3), dg._INSERTION_MAX + 5)  # events larger than the insertion sort takes
    key = rng.integers(0, 4, ev.size)
    np.testing.assert_array_equal(dg.event_lexsort(ev, (key,)), np.lexsort((key, ev)))


def test_efficient_points_draw_numpys_numbers():
    """Plane efficiency and resolution smearing in one numba pass: the numbers of the numpy
    steps it replaced (``rng.random(n) < eff``, then the normals of the kept crossings) and
    the same generator state after."""
    rng = np.random.default_rng(5)
    n, n_planes = 5000, 12
    ev, plane = rng.integers(0, 300, n), rng.integers(0, n_planes, n)
    coord, t = rng.uniform(-50, 50, n), rng.uniform(-20, 20, n)
    eff, center, align, res = (rng.uniform(0.5, 1.0, n_planes), rng.uniform(-5, 5, n_planes),
                               rng.normal(0, 0.1, n_planes), rng.uniform(0.05, 0.2, n_planes))
    a, b = np.random.default_rng(9), np.random.default_rng(9)
    got = dg._efficient_points(a, ev, plane, coord, t, eff, center, align, res)
    keep = b.random(n) < eff[plane]
    e, p, c, tt = ev[keep], plane[keep], coord[keep], t[keep]
    u = c - center[p] - align[p] + res[p] * b.standard_normal(e.size)
    for x, y in zip(got, (e, p, u, tt), strict=True):
        np.testing.assert_array_equal(x, y)
    assert 0 < keep.sum() < n
    assert a.random() == b.random()


def test_apv_digits_kernel_and_reference_agree():
    """``apv_digits`` end to end (cluster rows, sort, kernel) against its numpy reference
    (``reference=True``) on crossings of a simulated-like spill, the same random numbers."""
    from na64reco.conditions import load_conditions
    from na64reco.sim.params import load_sim_params

    setup = load_setup("na64mu", run=1)
    tables = dg.PlaneTables.of(setup, load_conditions(setup, 1))
    params = load_sim_params(setup)
    rng = np.random.default_rng(4)
    n_events, n = 300, 6000
    apv_planes = np.flatnonzero(tables.type != 2)
    ev, plane = rng.integers(0, n_events, n), rng.choice(apv_planes, n)
    u = rng.uniform(-0.45, 0.45, n) * tables.n_strips[plane] * tables.pitch[plane]
    t = rng.uniform(-30, 30, n)
    fast = dg.apv_digits(np.random.default_rng(8), setup, params, tables, n_events, ev, plane, u, t)
    slow = dg.apv_digits(np.random.default_rng(8), setup, params, tables, n_events, ev, plane, u, t, reference=True)
    assert fast[0].size > n
    for a, b in zip(fast[:3], slow[:3], strict=True):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(fast[3:], slow[3:], strict=True):
        assert np.abs(a.astype(int) - b.astype(int)).max() <= 1  # rounding ties only


def test_written_hits_is_the_mask_gather_and_concatenation():
    from na64reco.sim.tracks import written_hits

    rng = np.random.default_rng(4)
    n, n_events = 500, 60
    hits = (rng.integers(0, n_events, n), rng.integers(0, 40, n).astype(np.int16), rng.normal(0, 50, n),
            rng.normal(0, 20, n))
    fired = rng.random(n_events) < 0.7
    new_index = np.full(n_events, -1, np.int64)
    new_index[fired] = np.arange(fired.sum())
    for n_extra in (0, 37):
        extra = (rng.integers(0, fired.sum(), n_extra), rng.integers(0, 40, n_extra).astype(np.int16),
                 rng.normal(0, 50, n_extra), rng.normal(0, 20, n_extra))
        m = fired[hits[0]]
        want = (np.concatenate([new_index[hits[0][m]], extra[0]]),
                np.concatenate([hits[1][m], extra[1]]).astype(np.int64),
                np.concatenate([hits[2][m], extra[2]]), np.concatenate([hits[3][m], extra[3]]))
        got = written_hits(new_index, hits, extra)
        for a, b in zip(got, want, strict=True):
            assert a.dtype == b.dtype
            np.testing.assert_array_equal(a, b)
    empty = written_hits(new_index, tuple(h[:0] for h in hits), tuple(h[:0] for h in hits))
    assert all(a.size == 0 for a in empty) and empty[1].dtype == np.int64


def test_kernels_compile_once_for_pool_fresh_noise_and_key_types():
    """The noise pool (read-only) and fresh noise (writable), integer and float sort keys reach
    the same compiled specialisation of each kernel: no second compilation (issue 11, cold
    compile time)."""
    from na64reco.conditions import load_conditions
    from na64reco.sim.params import load_sim_params

    setup = load_setup("na64mu", run=1)
    tables = dg.PlaneTables.of(setup, load_conditions(setup, 1))
    params = load_sim_params(setup)
    rng = np.random.default_rng(2)
    n_events, n = 20, 200
    apv_planes = np.flatnonzero(tables.type != 2)
    ev, plane = rng.integers(0, n_events, n), rng.choice(apv_planes, n)
    u = rng.uniform(-0.45, 0.45, n) * tables.n_strips[plane] * tables.pitch[plane]
    t = rng.uniform(-30, 30, n)
    dg.apv_digits(rng, setup, params, tables, n_events, ev, plane, u, t)
    apv = set(dg._apv_points_kernel.signatures)
    dg.apv_digits(rng, setup, params, tables, n_events, ev, plane, u, t, pool=False)
    assert set(dg._apv_points_kernel.signatures) == apv
    args = _msadc_inputs(rng, 10)
    dg.msadc_waveforms(*args[:7], rng.standard_normal(64 * 32).astype(np.float32), *args[8:],
                       noise_start=np.arange(10) * 32, n_samples=32)
    msadc = set(dg._msadc_kernel.signatures)
    dg.msadc_waveforms(*args)  # fresh (n, 32) noise, writable
    assert set(dg._msadc_kernel.signatures) == msadc
    dg.event_lexsort(ev, (plane, t))
    lexsort = set(dg._event_insertion_sort.signatures)
    dg.event_lexsort(ev, (plane.astype(np.int16), ev, plane))
    dg.event_lexsort(ev, (t,))
    assert set(dg._event_insertion_sort.signatures) == lexsort


def test_event_counts_equal_bincount():
    """``event_counts`` (runs of equal event indices) is ``np.bincount(ev, minlength=n)``, sorted or
    not, empty, with empty events at the end, and for other types (the fall-back)."""
    rng = np.random.default_rng(11)
    for n, n_events in ((0, 0), (0, 5), (1, 1), (1000, 30), (5000, 4000)):
        ev = rng.integers(0, max(n_events, 1), n) if n_events else np.zeros(0, np.int64)
        for e in (np.sort(ev), ev, ev.astype(np.int32)):
            got = dg.event_counts(e, n_events + 3)
            want = np.bincount(e, minlength=n_events + 3)
            assert got.dtype == want.dtype
            np.testing.assert_array_equal(got, want)
    with pytest.raises(ValueError):  # a negative index: np.bincount's error
        dg.event_counts(np.array([0, -1, 2]), 3)
