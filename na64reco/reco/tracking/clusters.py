"""Tracker digits -> hits (clusters) in global coordinates.

APV planes (MM, GEM)
    strip amplitude and time from :mod:`.apv`; strips below the threshold
    (``apv_threshold_sigma`` x ``apv_noise``) and dead strips (conditions) are dropped;
    MM channels are de-multiplexed (:mod:`.demux`); runs of adjacent strips become
    clusters with the charge-weighted centroid ``strip = sum(s a) / sum(a)``.
Straw planes
    drift distance ``d = (tdc * lsb - drift_t0) * v`` clipped to [0, pitch/2]; the two
    mirror positions ``tube centre +- d`` are both kept as hits flagged ambiguous with a
    common origin (the left/right ambiguity is resolved by the track fit, which uses at
    most one hit per origin).
Coordinates
    local ``u = plane.position_of(strip)``, global ``pos = plane.center + alignment + u``
    (mm), along the coordinate the plane measures; ``z = plane.z``.  The hit error is the
    configured plane resolution.

Hits of one event are sorted by plane.  ``origin`` identifies the cluster / straw digit
a hit came from (ambiguous candidates share it); it is unique within an event.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from na64reco.errors import ConfigError, RawFormatError
from na64reco.io.raw import collection_arrays, refuse_data_events
from na64reco.reco.tracking import apv, demux
from na64reco.reco.tracking._jit import NO_NRT, njit_cached_with
from na64reco.reco.tracking.apv import strip_time_and_error_r
from na64reco.reco.tracking.demux import (
    _isort,
    candidate_words,
    channel_words,
    check_table,
    demux_plane_mask,
    strip_channel_map,
)

TYPE_CODE = {"MM": 0, "GEM": 1, "straw": 2}
HIT_FIELDS = ("plane", "pos", "z", "sigma", "strip", "amp", "time", "time_error", "size", "origin", "ambiguous")


class PlaneTables:
    """Per-plane arrays the kernels need (built once per setup and conditions)."""

    def __init__(self, setup, conditions):
        planes = setup.planes
        self.n_planes = len(planes)
        self.type = np.array([TYPE_CODE[p.type] for p in planes], np.int64)
        self.n_strips = np.array([p.n_strips for p in planes], np.int64)
        self.pitch = np.array([p.pitch for p in planes], float)
        self.z = np.array([p.z for p in planes], float)
        self.sigma = np.array([p.resolution for p in planes], float)
        # a conditions payload that does not fit the setup is a calibration error (ConfigError, naming the
        # tracker file), never the raw file's: the runner must not skip good files for it
        where = f"conditions tag {conditions.tag!r} run {conditions.run} ({conditions.files.get('tracker', 'tracker')})"
        align = []
        for p in planes:
            if p.name not in conditions.planes:
                raise ConfigError(f"{where}: no plane {p.name!r}")
            a = conditions.planes[p.name].alignment
            if not np.isfinite(a):
                raise ConfigError(f"{where}: key alignment_mm of plane {p.name} is {a!r}; expected a finite offset")
            align.append(a)
        self.offset = np.array([p.center for p in planes], float) + np.array(align, float)
        width = int(self.n_strips.max())
        self.dead = np.zeros((self.n_planes, width), np.bool_)
        for i, p in enumerate(planes):
            dead = conditions.planes[p.name].dead_strips
            if np.any((dead < 0) | (dead >= p.n_strips)):
                raise ConfigError(f"{where}: key dead_strips of plane {p.name} is {dead.tolist()}; expected strips "
                                  f"0..{p.n_strips - 1}")
            self.dead[i, dead] = True
        ro = setup.readout
        self.table = np.ascontiguousarray(ro.mm_strips_of_channel, dtype=np.int64)
        bad = check_table(self.table)
        if bad is not None:
            raise RawFormatError(f"setup {setup.name!r}: readout.mm_strips_of_channel: {bad}; the MM "
                                 f"de-multiplexing needs every strip read by one channel")
        # per plane: the channel reading each live strip (demux.strip_channel_map; MM planes only)
        self.strip_chan = np.stack([strip_channel_map(self.table, self.dead[i]) if t == 0 else
                                    np.full(max(int(self.table.max()) + 1, width) + 2, self.table.shape[0], np.int64)
                                    for i, t in enumerate(self.type)])
        # per plane: the live strips as bits (demux.candidate_words), what the hits kernel reads
        live = np.stack([candidate_words(m) for m in self.strip_chan])
        # (zero words up to a multiple of eight: demux_plane_mask ORs the channels' words eight at a time)
        self.live_words = np.zeros((live.shape[0], -(-live.shape[1] // 8) * 8), np.uint64)
        self.live_words[:, :live.shape[1]] = live
        self.chan_words = channel_words(self.table, self.live_words.shape[1])  # each channel's strips as bits
        self.mm_channels = ro.mm_channels
        self.spacing = ro.apv_sample_spacing
        self.peaking = ro.apv_peaking_time
        self.noise = ro.apv_noise
        self.drift_velocity = ro.straw_drift_velocity
        self.tdc_lsb = ro.straw_tdc_lsb

    def apv_threshold(self, threshold_sigma: float) -> float:
        """Amplitude threshold in ADC counts."""
        return float(threshold_sigma) * self.noise


# ---------------------------------------------------------------------------------------
@numba.njit(cache=True)
def _cand(hf, hn, m, whole, plane, pos, strip, amp, s0, s1, s2, size, origin, amb):
    """Candidate APV hit ``m`` of an event (``hf`` float rows pos, strip, amp, the three samples of the
    strip that gives its time, time, time error; ``hn`` int rows plane, size, origin, ambiguous, straw;
    strip, amp, size and ambiguous only for the whole table); returns ``m + 1``.  The times are computed
    for all of an event's candidates in one loop."""
    hf[0, m] = pos
    hf[3, m] = float(s0)
    hf[4, m] = float(s1)
    hf[5, m] = float(s2)
    hn[0, m] = plane
    hn[2, m] = origin
    hn[4, m] = 0
    if whole:
        hf[1, m] = strip
        hf[2, m] = amp
        hn[1, m] = size
        hn[3, m] = amb
    return m + 1


@njit_cached_with(apv)  # (compiles apv's strip time in)
def _times(s0, s1, s2, straw, t, te, m, spacing, r1, r2, threshold):
    """``t[:m]``, ``te[:m]``: (time, time error per unit noise) of an event's candidate hits (one row
    of :func:`_cand`'s each): a straw's own time (kept in ``s0``) and NaN; the APV strip time and
    error, in a loop without branches (the compiler vectorises it)."""
    for i in range(m):
        a, b = strip_time_and_error_r(s0[i], s1[i], s2[i], spacing, r1, r2, threshold)
        st = straw[i] != 0
        t[i] = s0[i] if st else a
        te[i] = math.nan if st else b


@numba.njit(cache=True, **NO_NRT)
def _straw(hf, hn, m, d, org, s_plane, s_tube, s_tdc, dead, pitch, n_strips, offset, lsb, t0, velocity):
    """The candidate hits (:func:`_cand`) of straw digit ``d``, tube centre -+ drift distance, both
    ambiguous (one if the distance is 0), none if the tube is dead; returns the new ``m``.  A plain
    call (~1 straw digit per event)."""
    sp = s_plane[d]
    tube = s_tube[d]
    if dead[sp, tube]:
        return m
    tdc = float(s_tdc[d])
    dist = (tdc * lsb - t0) * velocity
    dist = min(max(dist, 0.0), 0.5 * pitch[sp])
    u0 = (tube + 0.5) * pitch[sp] - 0.5 * n_strips[sp] * pitch[sp]
    tt = tdc * lsb
    for side in range(1 if dist == 0.0 else 2):
        hf[0, m] = offset[sp] + u0 if dist == 0.0 else (offset[sp] + u0 - dist if side == 0 else offset[sp] + u0 + dist)
        hf[1, m] = float(tube)
        hf[2, m] = 0.0
        hf[3, m] = tt
        hn[0, m] = sp
        hn[1, m] = 1
        hn[2, m] = org
        hn[3, m] = 0 if dist == 0.0 else 1
        hn[4, m] = 1
        m += 1
    return m


@numba.njit(cache=True)
def _reserve(out_f, out_i, n, extra):
    """The output arrays with room for ``extra`` more hits after the first ``n`` (doubling)."""
    if n + extra <= out_f.shape[1]:
        return out_f, out_i
    cap = max(2 * out_f.shape[1], n + extra)
    f = np.empty((out_f.shape[0], cap), np.float64)
    i = np.empty((out_i.shape[0], cap), np.int64)
    f[:, :n] = out_f[:, :n]
    i[:, :n] = out_i[:, :n]
    return f, i


@numba.njit(cache=True)
def _digits_ok(plane, chan, allowed, limit):
    """True if every digit has a plane of an allowed type and a channel inside its range."""
    n_planes = allowed.shape[0]
    for d in range(plane.shape[0]):
        p = plane[d]
        if p < 0 or p >= n_planes or not allowed[p] or chan[d] < 0 or chan[d] >= limit[p]:
            return False
    return True


# Cached on disk with a key over the sources of this module and of apv.py / demux.py,
# whose kernels it compiles in (see _jit.py).
@njit_cached_with(apv, demux)
def _hits_kernel(offsets, plane, chan, a0, a1, a2, s_off, s_plane, s_tube, s_tdc, ptype, n_strips, pitch, offset,
                 zpl, sig, dead, table, strip_chan, chan_words, live_words, threshold, spacing, peaking, lsb, t0,
                 velocity, whole, win_lo, win_hi, drop):
    """Flat kernel: APV and straw digits of all events -> hits sorted by (event, plane).

    Returns (counts per event, hits per (event, plane) (n_events * n_planes), out_f (7, hits)
    floats, out_i (4, hits) ints).  With ``whole`` False, only the hits the track search uses
    (:func:`search_hits`): times inside the windows ``[win_lo, win_hi]`` (per plane), no MM singles
    on the planes with ``drop``; out_f (4, hits) ``pos``, ``sigma``, ``time``, ``time_error`` and
    out_i (1, hits) ``origin`` (origins numbered as in the whole table).  With ``whole`` the windows
    are not read and ``drop`` must be all False.  ``whole`` is an argument, not the windows being
    None: one specialisation serves both tables (two cost a cold start ~12 s more compiling when
    the event display or the DQM asks for the whole table).
    Digits need not be ordered: an event's APV digits are read in one pass, plane by plane, while
    they are sorted by (plane, channel), as the reader gives them; an event whose digits are not
    starts again from a stably sorted copy (insertion sort into scratch arrays of the inputs' type),
    read by the same pass.  The APV time is computed only for the strip that gives a hit its time
    (the largest strip of a cluster, or the channel of an unresolved MM single), for all of an
    event's candidate hits in one loop once the event's planes are done; the hits are then written
    in order (for the search's table only those in time).
    """
    n_ev = offsets.shape[0] - 1
    n_planes = ptype.shape[0]
    groups = table.shape[1]
    r1 = math.exp(-spacing / peaking)
    r2 = math.exp(-2.0 * spacing / peaking)
    out_f = np.empty((7 if whole else 4, plane.shape[0] + 2 * s_plane.shape[0] + 16), np.float64)
    out_i = np.empty((4 if whole else 1, out_f.shape[1]), np.int64)
    counts = np.zeros(n_ev, np.int64)
    per_plane = np.zeros(n_ev * n_planes, np.int64)
    # the channel limit of each plane for APV digits (MM channels, GEM strips; 0: a straw plane, no
    # APV digit allowed) and for straw digits (tubes; 0: an APV plane): the digits are checked by
    # the block as it reads them (_kernel_hits words the error)
    a_lim = np.zeros(n_planes, np.int64)
    s_lim = np.zeros(n_planes, np.int64)
    for p in range(n_planes):
        if ptype[p] == 0:
            a_lim[p] = table.shape[0]
        elif ptype[p] == 1:
            a_lim[p] = n_strips[p]
        else:
            s_lim[p] = n_strips[p]
    maxd = 1
    maxs = 1
    for e in range(n_ev):
        maxd = max(maxd, offsets[e + 1] - offsets[e])
        maxs = max(maxs, s_off[e + 1] - s_off[e])
    skey = np.empty(maxs, np.float64)
    sidx = np.empty(maxs, np.int64)
    key = np.empty(maxd, np.float64)
    idx = np.empty(maxd, np.int64)
    ch = np.empty(maxd, np.int64)
    am = np.empty(maxd, np.float64)
    dg = np.empty(maxd, np.int64)  # digit of each channel (its time is computed when needed)
    mg = maxd * groups + 1
    cidx = np.full(table.shape[0] + 1, -1, np.int64)  # channel -> index of its digit (demux_plane_mask)
    cand = np.zeros(live_words.shape[1], np.uint64)  # candidate strips as bits (demux_plane_mask)
    used = np.empty(maxd, np.int64)
    starts = np.empty(mg, np.int64)
    rstart = np.empty(mg, np.int64)
    rlen = np.empty(mg, np.int64)
    singles = np.empty(mg, np.int64)
    # an event's APV digits sorted by (plane, channel) when they are not (copies of the inputs' type)
    hf = np.empty((8, maxd * groups + 2 * maxs), np.float64)  # an event's candidate hits (_cand)
    hn = np.empty((5, hf.shape[1]), np.int64)
    sp_, sc_ = plane[:maxd].copy(), chan[:maxd].copy()
    s0_, s1_, s2_ = a0[:maxd].copy(), a1[:maxd].copy(), a2[:maxd].copy()
    # int64 from the start, not a literal 0 (see "Literal integers" in _jit.py: _hits_block would be
    # compiled twice, ~6 s more of a cold start)
    e = np.int64(0)
    n = np.int64(0)
    while True:  # blocks of events that fit the output arrays, which grow between blocks
        e, n = _hits_block(e, n, out_f, out_i, counts, per_plane, offsets, plane, chan, a0, a1, a2, s_off, s_plane,
                           s_tube, s_tdc, ptype, n_strips, pitch, offset, zpl, sig, dead, table, strip_chan, chan_words,
                           live_words, threshold, spacing, r1, r2, lsb, t0, velocity, whole, win_lo, win_hi, drop, skey,
                           sidx, key, idx, ch, am, dg, cidx, cand, used, starts, rstart, rlen, singles, a_lim, s_lim,
                           sp_, sc_, s0_, s1_, s2_, hf, hn)
        if e < 0:  # event -1 - e has an invalid digit
            return counts, per_plane, out_f[:, :0], out_i[:, :0], -1 - e
        if e >= n_ev:
            break
        out_f, out_i = _reserve(out_f, out_i, n, (offsets[e + 1] - offsets[e]) * groups + 2 * (s_off[e + 1] - s_off[e]))
    return counts, per_plane, out_f[:, :n], out_i[:, :n], -1


@njit_cached_with(apv, demux, **NO_NRT)  # compiles in the de-multiplexer and the APV time, as above
def _hits_block(e0, n, out_f, out_i, counts, per_plane, offsets, plane, chan, a0, a1, a2, s_off, s_plane, s_tube,
                s_tdc, ptype, n_strips, pitch, offset, zpl, sig, dead, table, strip_chan, chan_words, live_words,
                threshold, spacing, r1, r2, lsb, t0, velocity, whole, win_lo, win_hi, drop, skey, sidx, key, idx, ch,
                am, dg, cidx, cand, used, starts, rstart, rlen, singles, a_lim, s_lim, sp_, sc_, s0_, s1_, s2_, hf, hn):
    """Hits of events ``e0...`` appended at ``out_*[:, n:]`` until an event might not fit
    (at most ``groups`` hits per APV digit, 2 per straw digit); returns (next event, n), or
    (-1 - e, n) if event ``e`` has a digit whose plane is not one of the setup's or whose channel
    is not below its plane's limit (``a_lim`` APV, ``s_lim`` straw; 0 for a plane of the other
    read-out): checked as the digits are read, before they index a table."""
    n_ev = offsets.shape[0] - 1
    n_planes = ptype.shape[0]
    groups = table.shape[1]
    cap = out_f.shape[1]
    # an integer amplitude is above the threshold if and only if it is above this integer
    big = 1 << 40
    ithr = big if not threshold < big else (-big if threshold < -big else int(math.floor(threshold)))
    for e in range(e0, n_ev):
        lo, hi = offsets[e], offsets[e + 1]
        if n + (hi - lo) * groups + 2 * (s_off[e + 1] - s_off[e]) > cap:
            return e, n
        slo = s_off[e]
        ms = s_off[e + 1] - slo
        ordered = True
        for q in range(ms):
            p = s_plane[slo + q]
            if p < 0 or p >= n_planes or s_tube[slo + q] < 0 or s_tube[slo + q] >= s_lim[p]:
                return -1 - e, n
            skey[q] = s_plane[slo + q] * 65536 + s_tube[slo + q]
            sidx[q] = q
            if q > 0 and skey[q - 1] > skey[q]:
                ordered = False
        if not ordered:
            _isort(skey, sidx, ms)
        start_n = n
        # the APV digits in one pass, plane by plane, when they are ordered by (plane, channel) as the
        # reader gives them; otherwise (seen as the pass meets a decrease) the event starts again from
        # a stably sorted copy in the scratch arrays (x*), read by the same pass
        xp, xc, x0, x1, x2 = plane, chan, a0, a1, a2
        dd = lo
        d_end = hi
        sort_done = False
        while True:
            js = 0
            # the counters and _cand's flags int64 from the start, not literal integers (see "Literal
            # integers" in _jit.py)
            origin = np.int64(0)
            m = np.int64(0)  # candidate hits of the event (hf, hn), written once their times are known
            prev_p = -1
            unordered = False
            while dd < d_end:
                p = xp[dd]
                if p < 0 or p >= n_planes:
                    return -1 - e, n
                if p <= prev_p:
                    unordered = True
                    break
                prev_p = p
                lim = a_lim[p]
                k = 0
                last = -1
                kept = -1  # the channel of the last digit kept
                while True:
                    c = xc[dd]
                    if c < 0 or c >= lim:
                        return -1 - e, n
                    if c < last:
                        unordered = True
                        break
                    last = c
                    # kept if above the threshold and not a repeated channel (the first is kept): written
                    # always, counted only then (no branch on the data)
                    amp = max(x0[dd], max(x1[dd], x2[dd]))
                    keep = (amp > ithr) & (c != kept)
                    ch[k] = c
                    am[k] = float(amp)
                    dg[k] = dd
                    k += keep
                    kept = c if keep else kept
                    dd += 1
                    if dd >= d_end or xp[dd] != p:
                        break
                if unordered:
                    break
                if k == 0:
                    continue
                while js < ms and s_plane[slo + sidx[js]] < p:
                    m = _straw(hf, hn, m, slo + sidx[js], (1 << 20) + sidx[js], s_plane, s_tube, s_tdc, dead, pitch,
                               n_strips, offset, lsb, t0, velocity)
                    js += 1
                u_a = pitch[p]  # strip s -> local u = (s + 0.5) * pitch - 0.5 * n_strips * pitch
                u_b = 0.5 * n_strips[p] * pitch[p]
                if ptype[p] == 0:  # MM
                    sc = strip_chan[p]  # strip s -> channel index cidx[sc[s + 1]] (demux_plane_mask)
                    nruns, nsing = demux_plane_mask(ch, am, k, chan_words, sc, live_words[p], cand, cidx, used, starts,
                                                    rstart, rlen, singles)
                    for r in range(nruns):
                        sw = 0.0
                        sa = 0.0
                        best = -1.0
                        jb = -1
                        for s in range(rstart[r], rstart[r] + rlen[r]):
                            jr = cidx[sc[s + 1]]  # (not js: the straw digits' counter)
                            a = am[jr]
                            sw += s * a
                            sa += a
                            if a > best:
                                best = a
                                jb = jr
                        d = dg[jb]
                        st = sw / sa
                        m = _cand(hf, hn, m, whole, p, offset[p] + ((st + 0.5) * u_a - u_b), st, sa, x0[d], x1[d],
                                  x2[d], rlen[r], origin, np.int64(0))
                        origin += 1
                    if drop[p]:  # the search's table: no MM singles here (their origins still counted)
                        origin += nsing
                        nsing = 0
                    for q in range(nsing):
                        j = singles[q]
                        d = dg[j]
                        for g in range(groups):
                            s = table[ch[j], g]
                            if dead[p, s]:
                                continue
                            m = _cand(hf, hn, m, whole, p, offset[p] + ((float(s) + 0.5) * u_a - u_b), float(s), am[j],
                                      x0[d], x1[d], x2[d], np.int64(1), origin, np.int64(1))
                        origin += 1
                    for q in range(k):
                        cidx[ch[q]] = -1
                else:  # GEM: channel = strip
                    q = 0
                    while q < k:
                        if dead[p, ch[q]]:
                            q += 1
                            continue
                        r = q
                        while r + 1 < k and ch[r + 1] == ch[r] + 1 and not dead[p, ch[r + 1]]:
                            r += 1
                        sw = 0.0
                        sa = 0.0
                        best = -1.0
                        jb = q
                        for w in range(q, r + 1):
                            sw += ch[w] * am[w]
                            sa += am[w]
                            if am[w] > best:
                                best = am[w]
                                jb = w
                        d = dg[jb]
                        st = sw / sa
                        m = _cand(hf, hn, m, whole, p, offset[p] + ((st + 0.5) * u_a - u_b), st, sa, x0[d], x1[d],
                                  x2[d], r - q + 1, origin, np.int64(0))
                        origin += 1
                        q = r + 1
            if not unordered:
                break
            if sort_done:  # (not reached: the sorted copy is ordered)
                return -1 - e, n
            # start the event again from its digits stably sorted by (plane, channel)
            for q in range(hi - lo):
                key[q] = plane[lo + q] * 65536 + chan[lo + q]
                idx[q] = q
            _isort(key, idx, hi - lo)
            for q in range(hi - lo):
                sp_[q] = plane[lo + idx[q]]
                sc_[q] = chan[lo + idx[q]]
                s0_[q] = a0[lo + idx[q]]
                s1_[q] = a1[lo + idx[q]]
                s2_[q] = a2[lo + idx[q]]
            xp, xc, x0, x1, x2 = sp_, sc_, s0_, s1_, s2_
            dd = 0
            d_end = hi - lo
            sort_done = True
        while js < ms:
            m = _straw(hf, hn, m, slo + sidx[js], (1 << 20) + sidx[js], s_plane, s_tube, s_tdc, dead, pitch, n_strips,
                       offset, lsb, t0, velocity)
            js += 1
        # the APV times of the event's candidate hits in one loop without branches (the straws' times
        # are their own), then the hits written in order, for the search's table only those in time
        _times(hf[3], hf[4], hf[5], hn[4], hf[6], hf[7], m, spacing, r1, r2, threshold)
        for i in range(m):
            p = hn[0, i]
            t = hf[6, i]
            if whole or (t >= win_lo[p] and t <= win_hi[p]):
                if whole:
                    out_f[0, n] = hf[0, i]
                    out_f[1, n] = zpl[p]
                    out_f[2, n] = sig[p]
                    out_f[3, n] = hf[1, i]
                    out_f[4, n] = hf[2, i]
                    out_f[5, n] = t
                    out_f[6, n] = hf[7, i]
                    out_i[0, n] = p
                    out_i[1, n] = hn[1, i]
                    out_i[2, n] = hn[2, i]
                    out_i[3, n] = hn[3, i]
                else:
                    out_f[0, n] = hf[0, i]
                    out_f[1, n] = sig[p]
                    out_f[2, n] = t
                    out_f[3, n] = hf[7, i]
                    out_i[0, n] = hn[2, i]
                n += 1
                per_plane[e * n_planes + p] += 1
        counts[e] = n - start_n
    return n_ev, n


# ---------------------------------------------------------------------------------------
def _native(a):
    """``a`` as a native-byte-order, contiguous, writeable array (what the kernels accept: the hits
    kernel's scratch copies of an event's digits have the inputs' type); no copy if it is one."""
    if not a.dtype.isnative:
        return a.astype(a.dtype.newbyteorder("="))
    return a if a.flags.c_contiguous and a.flags.writeable else np.array(a)


def _jagged(coll, names, what, source):
    """(offsets, {name: flat numpy array}) of a jagged record collection
    (:func:`na64reco.io.raw.collection_arrays`: views of the reader's buffers), native and
    contiguous for the kernels."""
    try:
        off, flat = collection_arrays(coll, names)
        return off, {n: _native(np.asarray(a)) for n, a in flat.items()}
    except Exception as exc:
        raise RawFormatError(f"{source}: cannot read the {what} digits ({', '.join(names)}): {exc}") from None


def _check_digits(what, plane, chan, allowed_types, tables, limit, source):
    if plane.size == 0:
        return
    bad = (plane < 0) | (plane >= tables.n_planes)
    if bad.any():
        raise RawFormatError(f"{source}: {what}.plane has value {int(plane[bad][0])}; expected a plane index "
                             f"0..{tables.n_planes - 1} of the setup")
    wrong = ~np.isin(tables.type[plane], allowed_types)
    if wrong.any():
        raise RawFormatError(f"{source}: {what} digit on plane {int(plane[wrong][0])}, which is not read by {what}")
    lim = limit[plane]
    bad = (chan < 0) | (chan >= lim)
    if bad.any():
        i = np.flatnonzero(bad)[0]
        raise RawFormatError(f"{source}: {what} channel {int(chan[i])} on plane {int(plane[i])}; expected "
                             f"0..{int(lim[i]) - 1}")


def _validate(what, plane, chan, allowed_types, tables, limit, source):
    """One compiled pass over the digits; the numpy checks only to word the error."""
    if not _digits_ok(plane, chan, np.isin(tables.type, allowed_types), limit):
        _check_digits(what, plane.astype(np.int64), chan.astype(np.int64), allowed_types, tables, limit, source)
        raise RawFormatError(f"{source}: invalid {what} digits")


def _kernel_hits(events, tables, threshold_sigma, drift_t0, source, lo=None, hi=None, drop=None):
    """(counts per event, hits per (event, plane), float rows, int rows) of :func:`_hits_kernel`
    on the digits of ``events``, which the kernel checks as it reads them (a separate pass before,
    until the seventh pass of issue 11); an invalid digit is described by :func:`_validate`.
    Events of a data file are refused (blinding: :func:`na64reco.io.raw.refuse_data_events`)."""
    refuse_data_events(events, "the tracker hits")
    source = source or "<events>"
    a_off, a = _jagged(events["apv"], ("plane", "chan", "a0", "a1", "a2"), "apv", source)
    s_off, s = _jagged(events["straw"], ("plane", "tube", "tdc"), "straw", source)
    whole = lo is None  # the whole table: the windows are not read, nothing is dropped
    if whole:
        lo = hi = np.zeros(tables.n_planes)
        drop = np.zeros(tables.n_planes, np.bool_)
    *res, bad = _hits_kernel(
        a_off, a["plane"], a["chan"], a["a0"], a["a1"], a["a2"], s_off, s["plane"], s["tube"], s["tdc"],
        tables.type, tables.n_strips, tables.pitch, tables.offset, tables.z, tables.sigma, tables.dead, tables.table,
        tables.strip_chan, tables.chan_words, tables.live_words, tables.apv_threshold(threshold_sigma), tables.spacing,
        tables.peaking, tables.tdc_lsb, drift_t0, tables.drift_velocity, whole, lo, hi, drop)
    if bad >= 0:  # the numpy checks word the error
        limit = np.where(tables.type == 0, tables.mm_channels, tables.n_strips)
        _validate("apv", a["plane"], a["chan"], (0, 1), tables, limit, source)
        _validate("straw", s["plane"], s["tube"], (2,), tables, tables.n_strips, source)
        raise RawFormatError(f"{source}: invalid tracker digit in entry {bad}")  # (not reached)
    return tuple(res)


def _offsets(counts, per_plane):
    offsets = np.zeros(counts.size + 1, np.int64)
    np.cumsum(counts, out=offsets[1:])
    plane_offsets = np.zeros(per_plane.size + 1, np.int64)
    np.cumsum(per_plane, out=plane_offsets[1:])
    return offsets, plane_offsets


def event_hits(events, tables: PlaneTables, *, threshold_sigma: float, drift_t0: float = 0.0,
               source: str = "") -> dict[str, np.ndarray]:
    """All hits of ``events`` (awkward records with ``apv`` and ``straw``) as flat arrays.

    Returns a dict of flat arrays with :data:`HIT_FIELDS` plus ``event`` (index of the
    event in ``events``), ``offsets`` (n_events + 1) and ``plane_offsets``
    (n_events * n_planes + 1: hits of event e, plane p start at ``plane_offsets[e * n_planes
    + p]``) -- hits sorted by (event, plane).
    """
    counts, per_plane, f, i = _kernel_hits(events, tables, threshold_sigma, drift_t0, source)
    ev = np.repeat(np.arange(len(events)), counts)
    offsets, plane_offsets = _offsets(counts, per_plane)
    return {"event": ev, "offsets": offsets, "plane_offsets": plane_offsets, "plane": i[0], "pos": f[0],
            "z": f[1], "sigma": f[2], "strip": f[3], "amp": f[4], "time": f[5], "time_error": f[6] * tables.noise,
            "size": i[1], "origin": i[2],
            "ambiguous": i[3].astype(bool)}


def search_hits(events, tables: PlaneTables, *, threshold_sigma: float, drift_t0: float = 0.0, lo: np.ndarray,
                hi: np.ndarray, drop: np.ndarray, source: str = "") -> dict[str, np.ndarray]:
    """The hits of ``events`` the track search uses, made directly by the kernel: those of
    :func:`event_hits` whose ``time`` is inside ``[lo, hi]`` of their plane (NaN is not) and
    that are not MM singles (``ambiguous``) on a plane with ``drop`` -- only their ``pos``,
    ``sigma``, ``origin`` (the same values as in :func:`event_hits`), with ``offsets`` and
    ``plane_offsets`` counting these hits.  The clusters and de-multiplexing are the same;
    what is saved is writing, then selecting, the hits and columns the search never reads."""
    lo = np.ascontiguousarray(lo, np.float64)
    hi = np.ascontiguousarray(hi, np.float64)
    drop = np.ascontiguousarray(drop, np.bool_)
    if not (lo.shape == hi.shape == drop.shape == (tables.n_planes,)):
        raise ValueError(f"search_hits: lo, hi, drop need one value per plane ({tables.n_planes}); got "
                         f"{lo.shape}, {hi.shape}, {drop.shape}")
    counts, per_plane, f, i = _kernel_hits(events, tables, threshold_sigma, drift_t0, source, lo, hi, drop)
    offsets, plane_offsets = _offsets(counts, per_plane)
    return {"offsets": offsets, "plane_offsets": plane_offsets, "pos": f[0], "sigma": f[1], "time": f[2],
            "time_error": f[3] * tables.noise, "origin": i[0]}


# ---------------------------------------------------------------------------------------
def event_hits_reference(event, setup, conditions, *, threshold_sigma, drift_t0=0.0):
    """Slow twin of :func:`event_hits` for ONE event (a python dict/awkward record).

    Returns a list of hit tuples ``(plane, pos, strip, size, ambiguous)`` sorted like the
    fast path (plane, then emission order).  An event of a data file is refused.
    """
    from na64reco.reco.tracking.demux import demux_plane_reference

    refuse_data_events(event, "event_hits_reference()")
    ro = setup.readout
    thr = threshold_sigma * ro.apv_noise
    table = ro.mm_strips_of_channel
    digits = {}
    for d in event["apv"]:
        amp = max(float(d["a0"]), float(d["a1"]), float(d["a2"]))
        if amp > thr:
            digits.setdefault(int(d["plane"]), {}).setdefault(int(d["chan"]), amp)
    hits = []

    def glob(p, s):
        pl = setup.planes[p]
        return pl.center + conditions.planes[pl.name].alignment + float(pl.position_of(s))

    for p in sorted(digits):
        pl = setup.planes[p]
        dead = np.zeros(pl.n_strips, bool)
        dead[conditions.planes[pl.name].dead_strips] = True
        chans = sorted(digits[p])
        amps = [digits[p][c] for c in chans]
        if pl.type == "MM":
            clusters, singles = demux_plane_reference(chans, amps, table, dead)
            for cl in clusters:
                s = sum(st * amps[j] for st, j in cl) / sum(amps[j] for _, j in cl)
                hits.append((p, glob(p, s), s, len(cl), False))
            for j in singles:
                for g in range(table.shape[1]):
                    st = int(table[chans[j], g])
                    if not dead[st]:
                        hits.append((p, glob(p, st), float(st), 1, True))
        else:
            live = [c for c in chans if not dead[c]]
            runs = []
            for c in live:
                if runs and c == runs[-1][-1] + 1:
                    runs[-1].append(c)
                else:
                    runs.append([c])
            for r in runs:
                s = sum(c * digits[p][c] for c in r) / sum(digits[p][c] for c in r)
                hits.append((p, glob(p, s), s, len(r), False))
    for d in sorted(event["straw"], key=lambda d: (int(d["plane"]), int(d["tube"]))):
        p, t = int(d["plane"]), int(d["tube"])
        pl = setup.planes[p]
        if t in set(conditions.planes[pl.name].dead_strips.tolist()):
            continue
        dist = min(max((float(d["tdc"]) * ro.straw_tdc_lsb - drift_t0) * ro.straw_drift_velocity, 0.0), pl.pitch / 2)
        if dist == 0.0:
            hits.append((p, glob(p, t), float(t), 1, False))
        else:
            hits.append((p, glob(p, t) - dist, float(t), 1, True))
            hits.append((p, glob(p, t) + dist, float(t), 1, True))
    return sorted(hits, key=lambda h: h[0])  # stable: keeps emission order inside a plane
