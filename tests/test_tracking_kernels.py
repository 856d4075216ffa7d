"""Tracking kernels: closed forms, de-multiplexing, and fast kernels vs their slow twins."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_tracking_synthetic import make_events

from na64reco.conditions import load_conditions
from na64reco.errors import ConfigError, RawFormatError
from na64reco.geometry import load_setup
from na64reco.pulse import apv_shape
from na64reco.reco.tracking import reconstruct_tracks
from na64reco.reco.tracking.apv import strip_time
from na64reco.reco.tracking.clusters import event_hits, event_hits_reference
from na64reco.reco.tracking.config import load_tracking_config
from na64reco.reco.tracking.demux import (
    candidate_words,
    channel_words,
    demux_plane,
    demux_plane_mask,
    demux_plane_reference,
    strip_channel_map,
)
from na64reco.reco.tracking.stage import _tables
from na64reco.reco.tracking.tracks import anchor_of, find_tracks, search_view_reference

SETUP = load_setup("na64mu")
COND = load_conditions(SETUP, 1)
RO = SETUP.readout
TABLE = RO.mm_strips_of_channel


def as_read(events):
    """``events`` (apv and straw digits built from python lists: int64) with the dtypes of
    RawFile.events() (na64reco.io.raw.COLLECTIONS), checked lossless.  The kernels are then
    run on the types a file gives, which the rest of the suite has compiled already: each
    other dtype is another compilation of the hits kernel (~1 min of CPU on a cold cache)."""
    import awkward as ak

    from na64reco.io.raw import COLLECTIONS

    out = events
    for name in ("apv", "straw"):
        coll = events[name]
        cast = ak.zip({f: ak.values_astype(coll[f], dtype) for f, dtype in COLLECTIONS[name].items()})
        for f in COLLECTIONS[name]:
            assert ak.all(ak.flatten(cast[f]) == ak.flatten(coll[f])), f"{name}.{f} does not fit its dtype"
        out = ak.with_field(out, cast, name)
    return out


@settings(deadline=None)
@given(st.floats(0.5, 120.0))
def test_apv_time_inverts_the_cr_rc_shape(t_s):
    a = 300.0 * apv_shape(t_s + np.arange(3) * RO.apv_sample_spacing, RO.apv_peaking_time)
    assert strip_time(a[0], a[1], a[2], RO.apv_sample_spacing, RO.apv_peaking_time, 1e-9) == pytest.approx(
        -t_s, abs=1e-6
    )


@settings(deadline=None)
@given(st.floats(-24.0, -0.5))
def test_apv_time_when_the_pulse_starts_after_the_first_sample(t_s):
    a = 300.0 * apv_shape(t_s + np.arange(3) * RO.apv_sample_spacing, RO.apv_peaking_time)
    assert a[0] == 0.0
    assert strip_time(a[0], a[1], a[2], RO.apv_sample_spacing, RO.apv_peaking_time, 1.0) == pytest.approx(
        -t_s, abs=1e-6
    )


def test_every_real_mm_cluster_is_resolved_uniquely():
    dead = np.zeros(320, bool)
    for size in (2, 3, 4, 5):
        for first in range(0, 320 - size + 1):
            strips = np.arange(first, first + size)
            chans = RO.mm_channel_of_strip(strips)
            order = np.argsort(chans)
            clusters, singles = demux_plane(chans[order], np.full(size, 100.0), TABLE, dead)
            assert singles == [] and len(clusters) == 1
            found = [s for s, _ in clusters[0]]
            if found != strips.tolist():  # allowed only if the found run reads the very same channels
                assert sorted(RO.mm_channel_of_strip(np.array(found)).tolist()) == sorted(chans.tolist())
                assert abs(found[0] - first) == 1 and 250 < first < 262


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.integers(0, 63), min_size=1, max_size=24, unique=True),
    st.randoms(use_true_random=False),
    st.lists(st.integers(0, 319), max_size=6),
)
def test_demux_kernel_equals_reference(chans, rnd, dead_list):
    chans = sorted(chans)
    amps = [float(rnd.randint(20, 600)) for _ in chans]
    dead = np.zeros(320, bool)
    dead[dead_list] = True
    assert demux_plane(chans, amps, TABLE, dead) == demux_plane_reference(chans, amps, TABLE, dead)


def test_demux_channel_map_tables():
    """strip_channel_map: the channel of each live strip, sentinels at dead strips and at both ends."""
    dead = np.zeros(320, bool)
    dead[[5, 100]] = True
    sc = strip_channel_map(TABLE, dead)
    nch = TABLE.shape[0]
    assert sc[0] == nch and sc[-1] == nch and sc[6] == nch and sc[101] == nch
    for s in (0, 4, 6, 99, 101, 319):
        assert sc[s + 1] == RO.mm_channel_of_strip(np.array([s]))[0]


def _demux_mask(chans, amps, table, dead):
    """demux_plane_mask (the hits kernel's de-multiplexer) in demux_plane's return format, with
    workspaces of the hits kernel's sizes; checks that it leaves the channel index map as the
    kernel expects it."""
    chans = np.asarray(chans, np.int64)
    amps = np.asarray(amps, np.float64)
    table = np.asarray(table, np.int64)
    sc = strip_channel_map(table, dead)
    live = candidate_words(sc)
    words = channel_words(table, len(live))
    n, g = len(chans), table.shape[1]
    cidx = np.full(table.shape[0] + 1, -1, np.int64)
    cand = np.zeros(len(live), np.uint64)
    used, starts, rstart, rlen, singles = (np.zeros(n * g + 1, np.int64) for _ in range(5))
    nr, ns = demux_plane_mask(chans, amps, n, words, sc, live, cand, cidx, used, starts, rstart, rlen, singles)
    clusters = [[(int(s), int(cidx[sc[s + 1]])) for s in range(rstart[r], rstart[r] + rlen[r])] for r in range(nr)]
    assert (cidx[chans] == np.arange(n)).all()
    cidx[chans] = -1
    assert (cidx == -1).all()
    return clusters, [int(j) for j in singles[:ns]]


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.integers(0, 63), min_size=1, max_size=24, unique=True),
    st.randoms(use_true_random=False),
    st.lists(st.integers(0, 319), max_size=6),
    st.booleans(),
    st.integers(-1, 316),
)
def test_demux_bit_words_equal_reference(chans, rnd, dead_list, beam, cluster):
    """The bit-word de-multiplexer, as the hits kernel calls it, against the slow twin:
    random fired channels, dead strips (some at word ends: 63, 64, 127, ...), the beam cluster's
    channels that read channel 51 twice (the greedy search), a real cluster of 2-5 strips
    (``cluster`` its first strip, -1 none) and amplitude ties."""
    chans = set(chans)
    if beam:
        chans |= {0, 17, 34, 51}
    if cluster >= 0:
        chans |= set(RO.mm_channel_of_strip(np.arange(cluster, min(cluster + rnd.randint(2, 5), 320))).tolist())
    chans = sorted(chans)
    amps = [float(rnd.choice([100, 100, rnd.randint(20, 600)])) for _ in chans]
    dead = np.zeros(320, bool)
    dead[dead_list] = True
    if rnd.random() < 0.3:
        dead[[63, 64, 191, 192, 319]] = True
    assert _demux_mask(chans, amps, TABLE, dead) == demux_plane_reference(chans, amps, TABLE, dead)


@pytest.mark.parametrize("n_chan, steps", [(8, (1, 3, 5)), (20, (1, 3, 7, 9, 11)), (64, (1, 13, 29, 7, 19)),
                                           (96, (1, 5, 7))])
def test_demux_bit_words_on_other_tables(n_chan, steps):
    """Tables whose strips do not fill whole 64-bit words (24 and 100 strips) or do (320), and one
    of 96 channels (planes of more than 64 fired channels take the greedy search's general code,
    ``_greedy_segments_any``): the bit-word de-multiplexer equals the slow twin on random fired
    channels and dead strips."""
    table = np.array([[g * n_chan + (c * st_) % n_chan for g, st_ in enumerate(steps)] for c in range(n_chan)])
    rng = np.random.default_rng(n_chan)
    for _ in range(300):
        chans = np.sort(rng.choice(n_chan, rng.integers(1, n_chan + 1), replace=False))
        amps = rng.choice([50.0, 100.0, 100.0, 300.0], len(chans))
        dead = rng.random(table.size) < 0.05
        assert _demux_mask(chans, amps, table, dead) == demux_plane_reference(chans, amps, table, dead)


def test_demux_bit_word_tables():
    """candidate_words: a bit per live strip and one zero word past the last strip;
    channel_words: the bits of each channel's strips."""
    dead = np.zeros(320, bool)
    dead[[5, 64, 319]] = True
    live = candidate_words(strip_channel_map(TABLE, dead))
    assert live.dtype == np.uint64 and len(live) == 6 and live[5] == 0
    bits = np.unpackbits(live.view(np.uint8), bitorder="little")
    assert (bits[:320] == ~dead).all() and not bits[320:].any()
    words = channel_words(TABLE, len(live))
    for c in range(TABLE.shape[0]):
        on = np.flatnonzero(np.unpackbits(words[c].view(np.uint8), bitorder="little"))
        assert on.tolist() == sorted(TABLE[c].tolist())
    small = np.array([[0, 2], [1, 3]])  # 4 strips: one word and the zero word
    assert candidate_words(strip_channel_map(small, np.zeros(4, bool))).tolist() == [15, 0]



def test_branch_free_apv_time_is_bit_for_bit_the_branching_one():
    """apv.strip_time_and_error_r (the hits kernel's loop over an event's candidate hits) equals
    strip_time_r and strip_time_error_r bit for bit, NaN where they are NaN: both sample ratios, the
    threshold's edge, non-positive samples and ratios at or beyond the shape's range."""
    from na64reco.reco.tracking.apv import strip_time_and_error_r, strip_time_error_r, strip_time_r

    rng = np.random.default_rng(7)
    samples = rng.integers(-40, 900, size=(20000, 3)).astype(float)
    samples[:500, 0] = 16.0  # at the threshold
    samples[500:1000, 2] = 0.0
    samples[1000:1500, 1] = samples[1000:1500, 2] * 3  # a1 / a2 beyond the shape's range
    spacing, peaking, thr = RO.apv_sample_spacing, RO.apv_peaking_time, 16.0
    r1, r2 = np.exp(-spacing / peaking), np.exp(-2.0 * spacing / peaking)
    for a0, a1, a2 in samples:
        t, te = strip_time_and_error_r(a0, a1, a2, spacing, r1, r2, thr)
        want = (strip_time_r(a0, a1, a2, spacing, r1, r2, thr), strip_time_error_r(a0, a1, a2, spacing, r1, r2, thr))
        assert np.array_equal([t, te], want, equal_nan=True), (a0, a1, a2)

@pytest.fixture(scope="module")
def noisy():
    events, truth = make_events(100, seed=21, pileup=0.3, noise="strip")
    cfg, pt, vt, _ = _tables(SETUP, COND)
    hits = event_hits(events, pt, threshold_sigma=cfg.apv_threshold_sigma, drift_t0=cfg.drift_t0)
    return events, truth, cfg, pt, vt, hits


def test_hits_kernel_equals_reference(noisy):
    events, _, cfg, _, _, hits = noisy
    for e in range(len(events)):
        ref = event_hits_reference(
            events[e], SETUP, COND, threshold_sigma=cfg.apv_threshold_sigma, drift_t0=cfg.drift_t0
        )
        lo, hi = hits["offsets"][e], hits["offsets"][e + 1]
        got = [
            (int(p), float(x), float(s), int(n), bool(a))
            for p, x, s, n, a in zip(
                hits["plane"][lo:hi],
                hits["pos"][lo:hi],
                hits["strip"][lo:hi],
                hits["size"][lo:hi],
                hits["ambiguous"][lo:hi],
                strict=True,
            )
        ]
        assert [(g[0], g[3], g[4]) for g in got] == [(r[0], r[3], r[4]) for r in ref], f"event {e}"
        np.testing.assert_allclose([g[1] for g in got], [r[1] for r in ref], rtol=0, atol=1e-9)
        np.testing.assert_allclose([g[2] for g in got], [r[2] for r in ref], rtol=0, atol=1e-9)


#: per-view missing-plane rules and required planes (tracking.yaml view_max_missing_planes,
#: required_planes): the kernel and the twin must agree on them too
VIEW_RULES = {"view_max_missing_planes": (("MS1 x", 2), ("MS2 y", 0)), "required_planes": ("MM6X", "MM1Y")}


@pytest.mark.parametrize("rules", [False, True])
def test_track_kernel_equals_exhaustive_reference(noisy, rules):
    events, _, cfg, pt, vt, hits = noisy
    if rules:
        vt = _tables(SETUP, COND, None, VIEW_RULES)[2]
        views = {(v.station, v.coord): v for v in vt.views}
        assert views["MS1", "x"].max_missing == 2 and views["MS2", "y"].max_missing == 0
        assert views["MS2", "x"].max_missing == 1 and sum(views["MS2", "x"].required) == 1
    res = find_tracks(hits, len(events), pt.n_planes, vt)
    n_compared = 0
    for e in range(len(events)):
        lo, hi = hits["offsets"][e], hits["offsets"][e + 1]
        for v, view in enumerate(vt.views):
            view_hits = [
                [
                    (i, hits["pos"][i], hits["sigma"][i], hits["origin"][i])
                    for i in range(lo, hi)
                    if hits["plane"][i] == p
                ]
                for p in view.planes
            ]
            anchor, kappa_other = anchor_of(res, e, v, vt)
            nh, chi2, ntr, par, chosen = search_view_reference(view_hits, view, vt, anchor, kappa_other)
            assert res["nh"][e, v] == nh, (e, v)
            assert res["n_tracks"][e, v] == ntr, (e, v)
            if nh:
                assert list(res["hits"][e, v, : len(view.planes)]) == chosen, (e, v)
                np.testing.assert_allclose(res["par"][e, v, : view.npar], par[: view.npar], rtol=1e-9, atol=1e-9)
                assert res["chi2"][e, v] == pytest.approx(chi2, rel=1e-6, abs=1e-9)
                n_compared += 1
    assert n_compared > (0.75 if rules else 0.9) * len(events) * len(vt.views)


def test_momenta_from_the_stage_match_the_magnet_formula(noisy):
    events, _, _, _, vt, _ = noisy
    out = reconstruct_tracks(events, SETUP, COND, return_internals=True)
    kappa = out["_tracks"]["par"][:, 0, 2] / 1000.0
    ok = np.isfinite(out["p_in"])
    np.testing.assert_allclose(out["p_in"][ok], SETUP.magnets["MS1"].momentum(kappa[ok]) / 1000.0, rtol=1e-12)
    assert set(out) >= {
        "p_in",
        "p_out",
        "n_tracks_in",
        "n_tracks_out",
        "chi2_in",
        "chi2_out",
        "in_x",
        "in_y",
        "out_x",
        "out_y",
        "out_x_hcal",
    }


def test_na64e_has_no_outgoing_momentum():
    s = load_setup("na64e")
    events, truth = make_events(60, setup="na64e", seed=4, p_in=100e3)
    out = reconstruct_tracks(events, s, load_conditions(s, 1))
    assert "p_out" not in out
    ok = np.isfinite(out["p_in"])
    assert ok.mean() > 0.8
    assert np.median(np.abs(out["p_in"][ok] / truth["p_in"][ok] - 1)) < 0.02


def test_bad_digits_raise_clear_errors():
    import awkward as ak

    events, _ = make_events(3, seed=2)
    bad = ak.with_field(events, ak.with_field(events["apv"], events["apv"]["plane"] + 40, "plane"), "apv")
    with pytest.raises(RawFormatError, match=r"run1\.root: apv\.plane has value 4\d"):
        reconstruct_tracks(bad, SETUP, COND, source="run1.root")


@pytest.mark.parametrize("what, field, value, message", [
    ("apv", "plane", 14, r"apv digit on plane 14, which is not read by apv"),  # the straw plane
    ("apv", "plane", -1, r"apv\.plane has value -1"),
    ("apv", "chan", 300, r"apv channel 300 on plane \d+; expected 0\.\.(63|255)"),
    ("apv", "chan", -3, r"apv channel -3 on plane"),
    ("straw", "plane", 0, r"straw digit on plane 0, which is not read by straw"),
    ("straw", "tube", 64, r"straw channel 64 on plane 14; expected 0\.\.63"),
])
def test_bad_digit_of_a_later_event_is_found_by_the_kernel(what, field, value, message):
    """The hits kernel checks the digits as it reads them (seventh pass): one bad digit in the
    last event of three (plane of the other read-out, plane or channel out of range) raises the
    worded error, for the whole hit table and the search's."""
    import awkward as ak

    events, _ = make_events(3, seed=2)
    coll = events[what]
    flat = np.asarray(ak.flatten(coll[field])).copy()
    if what == "straw" and len(flat) == 0:
        pytest.skip("no straw digit")
    flat[-1] = value  # the last digit of the last event that has one
    bad = ak.with_field(events, ak.with_field(coll, ak.unflatten(flat, ak.num(coll)), field), what)
    with pytest.raises(RawFormatError, match=message):
        reconstruct_tracks(bad, SETUP, COND, source="run1.root")
    with pytest.raises(RawFormatError, match=message):
        reconstruct_tracks(bad, SETUP, COND, source="run1.root", return_internals=True)


def test_bad_tracking_config_names_file_and_key(tmp_path):
    text = (load_tracking_config.__globals__["CONFIG_PATH"]).read_text().replace("MS2: {role: out", "MSX: {role: out")
    path = tmp_path / "tracking.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=r"tracking\.yaml.*MSX.*not a magnet"):
        load_tracking_config(SETUP, path)


def test_hits_kernel_cache_is_keyed_on_every_module_it_compiles_in(tmp_path):
    from na64reco.reco.tracking import _jit, apv, clusters, demux

    digest = _jit.source_digest(clusters.__file__, apv.__file__, demux.__file__)
    for kernel in (clusters._hits_kernel, clusters._hits_block):  # both compile in demux and apv kernels
        assert f"na64reco-{digest}" in str(kernel._cache._cache_path)
    edited = tmp_path / "demux.py"
    edited.write_text(open(demux.__file__).read() + "\n# an edit\n")
    assert _jit.source_digest(clusters.__file__, apv.__file__, edited) != digest


def test_hits_kernel_grows_its_output_for_events_of_many_ambiguous_hits():
    """Isolated MM channels give one hit per strip group (5 per digit), more hits than the
    kernel's first guess of the output size: the output grows between blocks of events and
    every event still equals the slow twin."""
    import awkward as ak

    cfg, pt, _, _ = _tables(SETUP, COND)
    chans = [0, 10, 20, 30, 40, 50]
    n_ev = 40
    apv = [[{"plane": p, "chan": c, "a0": 100, "a1": 300, "a2": 200} for p in (0, 2, 4) for c in chans]
           for _ in range(n_ev)]
    straw = [[] if e % 2 else [{"plane": 14, "tube": 7, "tdc": 40}] for e in range(n_ev)]
    events = as_read(ak.zip({"apv": ak.Array(apv), "straw": ak.Array(straw)}, depth_limit=1))
    hits = event_hits(events, pt, threshold_sigma=cfg.apv_threshold_sigma, drift_t0=cfg.drift_t0)
    assert len(hits["pos"]) > 3 * len(chans) * n_ev  # more hits than digits
    for e in range(n_ev):
        ref = event_hits_reference(events[e], SETUP, COND, threshold_sigma=cfg.apv_threshold_sigma,
                                   drift_t0=cfg.drift_t0)
        lo, hi = hits["offsets"][e], hits["offsets"][e + 1]
        assert [(int(p), int(n), bool(a)) for p, n, a in zip(hits["plane"][lo:hi], hits["size"][lo:hi],
                                                           hits["ambiguous"][lo:hi], strict=True)] == \
            [(r[0], r[3], r[4]) for r in ref], f"event {e}"
        np.testing.assert_allclose(hits["pos"][lo:hi], [r[1] for r in ref], rtol=0, atol=1e-9)



def test_hits_kernel_on_unordered_and_repeated_digits():
    """The kernel reads an event's APV digits in one pass when they are ordered by (plane, channel),
    as the reader gives them, and from a sorted copy otherwise: digits shuffled within each event give
    the same whole hit table and search's table bit for bit; repeated digits (the first of them below
    the threshold, or not) give the slow twin's hits (it keeps the first digit above the threshold)."""
    import awkward as ak

    from na64reco.reco.tracking.clusters import search_hits

    events, _ = make_events(60, seed=5, pileup=0.3, noise="strip")
    cfg, pt, _, windows = _tables(SETUP, COND)
    kw = {"threshold_sigma": cfg.apv_threshold_sigma, "drift_t0": cfg.drift_t0}
    rng = np.random.default_rng(3)
    apv = ak.to_list(events["apv"])
    shuffled = [[ev[i] for i in rng.permutation(len(ev))] if e % 3 else ev for e, ev in enumerate(apv)]
    other = as_read(ak.with_field(events, ak.Array(shuffled), "apv"))
    drop = pt.type == 0
    for make in (lambda ev: event_hits(ev, pt, **kw),
                 lambda ev: search_hits(ev, pt, lo=windows[0], hi=windows[1], drop=drop, **kw)):
        a, b = make(events), make(other)
        assert a.keys() == b.keys()
        for k in a:
            assert np.array_equal(a[k], b[k], equal_nan=a[k].dtype.kind == "f"), k
    thr = cfg.apv_threshold_sigma * RO.apv_noise
    repeated = []
    for e, ev in enumerate(shuffled):
        ev = list(ev)
        for d in ev[: 4 if e % 2 else 0]:  # a copy of a digit, below the threshold or with other samples
            low = int(thr) - 1 if e % 4 == 1 else 3 * int(thr)
            ev.insert(rng.integers(len(ev) + 1), {**d, "a0": low, "a1": low, "a2": low})
        repeated.append(ev)
    events = as_read(ak.with_field(events, ak.Array(repeated), "apv"))
    hits = event_hits(events, pt, **kw)
    for e in range(len(events)):
        ref = event_hits_reference(events[e], SETUP, COND, **kw)
        lo, hi = hits["offsets"][e], hits["offsets"][e + 1]
        got = list(zip(hits["plane"][lo:hi].tolist(), hits["size"][lo:hi].tolist(),
                       hits["ambiguous"][lo:hi].tolist(), strict=True))
        assert got == [(r[0], r[3], r[4]) for r in ref], f"event {e}"
        np.testing.assert_allclose(hits["pos"][lo:hi], [r[1] for r in ref], rtol=0, atol=1e-9)


def test_demux_equals_reference_on_crowded_planes_with_tied_amplitudes():
    """The de-multiplexer (whole segments when their channels are distinct, the greedy search
    otherwise) against the slow twin: many fired channels, amplitudes from three values (ties
    decided by the lowest strip), a few dead strips."""
    rng = np.random.default_rng(11)
    for _ in range(1500):
        n = int(rng.integers(1, 28))
        chans = np.sort(rng.choice(64, n, replace=False))
        amps = rng.choice([50.0, 100.0, 150.0], n)
        dead = np.zeros(320, bool)
        dead[rng.integers(0, 320, int(rng.integers(0, 4)))] = True
        assert demux_plane(chans, amps, TABLE, dead) == demux_plane_reference(chans, amps, TABLE, dead)


def test_plane_tables_refuse_a_multiplexing_table_with_a_strip_read_twice():
    from na64reco.reco.tracking.clusters import PlaneTables

    class Readout:
        def __getattr__(self, name):
            return getattr(RO, name)

    table = TABLE.copy()
    table[5, 2] = table[6, 2]
    ro = Readout()
    ro.mm_strips_of_channel = table

    class Setup:
        def __getattr__(self, name):
            return getattr(SETUP, name)

    setup = Setup()
    setup.readout = ro
    with pytest.raises(RawFormatError, match=f"strip {int(table[6, 2])} is read by channels \\[5, 6\\]"):
        PlaneTables(setup, COND)


@pytest.fixture(scope="module")
def simulated_mixture(tmp_path_factory):
    """1500 beam particles of the na64mu mixture (beam pile-up muons: out-of-time tracker hits)."""
    from na64reco.io.raw import open_raw
    from na64reco.sim.generate import simulate

    setup = load_setup("na64mu", run=1)
    path = tmp_path_factory.mktemp("mix") / "mix.root"
    simulate(setup, 1500, 3, 1, path, trigger="calibration")
    return open_raw(path).events(), setup, load_conditions(setup, 1)


@pytest.mark.parametrize("overrides", [None, {"use_mm_singles": True, "max_missing_planes": 1},
                                       {"hit_time_sigma": 0}])
def test_search_hits_are_the_selected_columns_of_the_whole_table(simulated_mixture, overrides):
    """The kernel's search table (time windows and MM-singles drop applied as hits are made,
    three columns) equals the whole hit table with the search's selection (tracks.in_time,
    tracks.mm_singles) applied afterwards: same hits, values, origins, dtypes and offsets."""
    from na64reco.reco.tracking.clusters import search_hits
    from na64reco.reco.tracking.tracks import in_time, mm_singles

    events, setup, cond = simulated_mixture
    cfg, pt, _, (lo, hi) = _tables(setup, cond, None, overrides)
    drop = (pt.type == 0) & (not cfg.use_mm_singles)
    whole = event_hits(events, pt, threshold_sigma=cfg.apv_threshold_sigma, drift_t0=cfg.drift_t0)
    keep = in_time(whole, lo, hi) & ~(mm_singles(whole, pt.type == 0) & drop[whole["plane"]])
    if overrides is None:  # the mixture has hits off time and MM singles: the selection matters
        assert 0 < keep.sum() < 0.9 * keep.size
    got = search_hits(events, pt, threshold_sigma=cfg.apv_threshold_sigma, drift_t0=cfg.drift_t0, lo=lo, hi=hi,
                      drop=drop)
    kept = np.concatenate([[0], np.cumsum(keep)])
    for k in ("pos", "sigma", "origin"):
        assert got[k].dtype == whole[k].dtype
        np.testing.assert_array_equal(got[k], whole[k][keep])
    np.testing.assert_array_equal(got["offsets"], kept[whole["offsets"]])
    np.testing.assert_array_equal(got["plane_offsets"], kept[whole["plane_offsets"]])


@pytest.mark.parametrize("overrides", [None, {"use_mm_singles": True, "max_missing_planes": 1}])
def test_stage_outputs_equal_with_and_without_the_whole_hit_table(simulated_mixture, overrides):
    """reconstruct_tracks on the search table (the default) and on the whole table
    (``return_internals``) give the same outputs, value for value."""
    events, setup, cond = simulated_mixture
    plain = reconstruct_tracks(events, setup, cond, config_overrides=overrides)
    full = reconstruct_tracks(events, setup, cond, config_overrides=overrides, return_internals=True)
    assert set(plain) == {k for k in full if not k.startswith("_")}
    for k, v in plain.items():
        assert v.dtype == full[k].dtype, k
        np.testing.assert_array_equal(v, full[k], err_msg=k)


def test_required_planes_and_per_view_missing_rules_act(noisy):
    """With MM6X required every MS2 bend-view track has its MM6X hit, and tracks that missed it
    without the rule are gone; with the MS2 y view at 0 missing planes its tracks use every plane."""
    events, _, _, pt, vt, hits = noisy
    base = find_tracks(hits, len(events), pt.n_planes, vt)
    vt2 = _tables(SETUP, COND, None, VIEW_RULES)[2]
    res = find_tracks(hits, len(events), pt.n_planes, vt2)
    idx = {(v.station, v.coord): i for i, v in enumerate(vt2.views)}
    bx, y = idx["MS2", "x"], idx["MS2", "y"]
    k = vt2.views[bx].required.index(True)
    assert SETUP.planes[vt2.views[bx].planes[k]].name == "MM6X"
    found = res["nh"][:, bx] > 0
    assert found.sum() > 0.5 * len(events)
    assert (res["hits"][found, bx, k] >= 0).all()
    missed_before = (base["nh"][:, bx] > 0) & (base["hits"][:, bx, k] < 0)
    assert missed_before.any() and not (found & missed_before & (res["hits"][:, bx, k] < 0)).any()
    ny = len(vt2.views[y].planes)
    assert (res["nh"][res["nh"][:, y] > 0, y] == ny).all()


def test_n_views_counts_the_projections_with_a_track(noisy):
    events, _, _, _, vt, _ = noisy
    out = reconstruct_tracks(events, SETUP, COND, return_internals=True)
    nh = out["_tracks"]["nh"]
    for role in ("in", "out"):
        iv = [i for i, v in enumerate(vt.views) if v.role == role]
        np.testing.assert_array_equal(out[f"n_views_{role}"], (nh[:, iv] > 0).sum(axis=1))
        assert out[f"n_views_{role}"].dtype == np.int64
    # a y track of the outgoing station is what makes out_y finite
    assert np.array_equal(np.isfinite(out["out_y"]), nh[:, [i for i, v in enumerate(vt.views)
                                                         if v.role == "out" and v.coord == "y"][0]] > 0)
    assert set(np.unique(out["n_views_out"])) >= {1, 2}
