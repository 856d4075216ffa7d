"""Stage function: tracker digits -> momenta, track counts and track parameters.

:func:`reconstruct_tracks` is what a processor calls; :func:`event_display` returns the
hits and fitted tracks of one event.  Output fields (one value per event):

``p_in``, ``p_out``              momentum (GeV) from the deflection in the "in" / "out" station
                                 (NaN if no track; ``p_out`` only for setups with one)
``chi2_in``, ``chi2_out``        chi2/ndf of the bend-view kick fit (0 when ndf = 0)
``ndf_in``, ``ndf_out``          its degrees of freedom
``nhits_in``, ``nhits_out``      hits on the bend-view track
``n_tracks_in``, ``n_tracks_out`` distinct good candidates: max over the two projections of
                                 the station (-1 if a plane was too busy to search)
``in_x``, ``in_y``, ``in_tx``, ``in_ty``   incoming track at the ECAL front z (mm, rad),
                                 from the segments downstream of the "in" magnet
``out_x``, ``out_y``, ``out_tx``, ``out_ty`` outgoing track (upstream segments of the "out"
                                 magnet) extrapolated back to the ECAL front z
``out_x_hcal``, ``out_y_hcal``   outgoing track (downstream segments) at the HCAL z (mm)
``track_match_chi2``             (dx/sigma_x)^2 + (dy/sigma_y)^2 of the outgoing minus the incoming
                                 track at the ECAL front (``out_x - in_x``, ``out_y - in_y``),
                                 sigma from points, extrapolation and multiple scattering at the
                                 measured p_in / p_out (:class:`.resolution.MatchResolution`);
                                 ~chi2(2 dof) for a muon without a kink.  Sum over the projections
                                 with both tracks (1 dof if one projection lacks a track: low-p
                                 muons often leave the MS2 y planes), NaN if none.  A projection
                                 with an outgoing track and no incoming track is matched to the
                                 incoming view's in-time hits instead, each carried along the beam
                                 direction to the ECAL front (the nearest in sigma; inf if that view
                                 has no hit, :func:`_hit_match_terms`); NaN still needs both
                                 tracks in neither projection
``n_views_in``, ``n_views_out``  projections of the station with a track (0, 1, 2): the outgoing
                                 muon's track in 3-D needs both
``flags_in``, ``flags_out``      bit 1: candidate overflow, bit 2: busy plane (see tracks.py), bit 4: a
                                 view track dropped for inconsistent hit times (:func:`time_consistent`)
``n_extra_planes_in``, ``n_extra_planes_out``  planes of the station with an in-time hit that no
                                 track of the event uses (twins of used hits excepted,
                                 :func:`extra_planes`): a second in-time muon (pile-up) fills
                                 most of them

Hits whose reconstructed time is off the plane's in-time window (``hit_time_sigma`` of
``tracking.yaml``, :func:`.tracks.hit_time_windows`) are dropped before the search, and so
are unresolved micromegas singles where ``use_mm_singles`` is false
(:func:`.tracks.drop_mm_singles`).

Momentum uses only the bend projection (the other projection's angle changes p by
less than 1e-6 relative at these angles).
"""

from __future__ import annotations

import dataclasses
import functools
import math

import numba
import numpy as np

from na64reco import as_loaded, units
from na64reco.io.raw import refuse_data_events
from na64reco.reco.inputs import check_belong
from na64reco.reco.tracking.clusters import PlaneTables, event_hits, search_hits
from na64reco.reco.tracking.config import load_tracking_config
from na64reco.reco.tracking.resolution import HitMatchResolution, MatchResolution
from na64reco.reco.tracking.tracks import (
    ViewTables,
    find_tracks,
    hit_time_windows,
    make_views,
)

_CACHE: dict = {}
#: columns of the hit table that :func:`find_tracks` reads (besides ``plane_offsets``)
SEARCH_COLUMNS = ("pos", "sigma", "origin")


def _tables(setup, conditions, config_path=None, overrides=None):
    key = (setup.name, setup.source, setup.period, conditions.tag, conditions.run, conditions.files.get("tracker"),
           config_path, tuple(sorted((overrides or {}).items())))
    # the key names the files: only objects still as their loaders read them may fill or use the
    # cache (an edited or in-memory setup or conditions object gets its own tables, and never
    # leaves them for the blinding's reference reconstruction: na64reco.as_loaded)
    as_read = as_loaded.unchanged(setup) and as_loaded.unchanged(conditions)
    if as_read and key in _CACHE:
        return _CACHE[key]
    cfg = load_tracking_config(setup, config_path)
    if overrides:
        cfg = dataclasses.replace(cfg, **overrides)
    views = make_views(setup, cfg, conditions)
    built = (cfg, PlaneTables(setup, conditions), ViewTables(views, cfg),
             hit_time_windows(setup, conditions, cfg.hit_time_sigma))
    if as_read:
        _CACHE[key] = built
    return built


def _search_hits(hits: dict, keep: np.ndarray) -> dict:
    """The hits with ``keep``, as :func:`find_tracks` reads them: :data:`SEARCH_COLUMNS`,
    ``plane_offsets`` and ``offsets`` (the running count of kept hits at the old offsets: the
    same as :func:`.tracks.select_hits` recomputes by a search over the event column), and
    ``index`` into ``hits``.  One selection of three columns instead of the whole table (~200 MB
    per 100k events)."""
    index = np.flatnonzero(keep)
    kept = np.zeros(keep.size + 1, np.int64)
    np.cumsum(keep, out=kept[1:])
    return _with_offsets(hits, kept, index, {k: hits[k][index] for k in SEARCH_COLUMNS})


def _with_offsets(hits, kept, index, out):
    out["offsets"] = kept[hits["offsets"]]
    out["plane_offsets"] = kept[hits["plane_offsets"]]
    out["index"] = index
    return out


@numba.njit(cache=True)
def _search_selection(time, plane, ambiguous, pos, sigma, origin, lo, hi, drop):
    """One pass of :func:`.tracks.in_time` ``& ~`` :func:`.tracks.mm_singles` (``drop``: per
    plane, True where ambiguous hits are dropped) and of :func:`_search_hits`: returns the
    running count of kept hits (n + 1), their indices and their ``pos``, ``sigma``, ``origin``."""
    n = time.shape[0]
    kept = np.empty(n + 1, np.int64)
    kept[0] = 0
    m = 0
    for i in range(n):
        p = plane[i]
        t = time[i]
        if t >= lo[p] and t <= hi[p] and not (ambiguous[i] and drop[p]):
            m += 1
        kept[i + 1] = m
    index = np.empty(m, np.int64)
    pos_k = np.empty(m, pos.dtype)
    sig_k = np.empty(m, sigma.dtype)
    org_k = np.empty(m, origin.dtype)
    j = 0
    for i in range(n):
        if kept[i + 1] > kept[i]:
            index[j] = i
            pos_k[j] = pos[i]
            sig_k[j] = sigma[i]
            org_k[j] = origin[i]
            j += 1
    return kept, index, pos_k, sig_k, org_k


def _extrapolate(par, view, z, downstream: bool):
    """Position (mm) and slope (rad) at ``z`` of fitted view parameters ``par`` (..., 3)."""
    dz = (z - view.z_magnet) / units.MM_PER_M
    slope = par[..., 1] - (par[..., 2] if (view.bend and downstream) else 0.0)
    return par[..., 0] + slope * dz, slope / units.MRAD_PER_RAD


def reconstruct_tracks(events, setup, conditions, source: str = "", *, config_path=None,
                       config_overrides: dict | None = None, return_internals: bool = False) -> dict[str, np.ndarray]:
    """Reconstruct tracks and momenta of ``events`` (awkward records with ``apv``, ``straw``).

    ``setup`` a :class:`~na64reco.geometry.Setup`, ``conditions`` the run's
    :class:`~na64reco.conditions.RunConditions`; ``source`` names the input in error
    messages.  Returns a dict of numpy arrays (see module doc), momenta in GeV.  Events of a
    data file are refused (see :func:`na64reco.reco.event.reconstruct`).  ``config_overrides``
    replaces fields of the tracking configuration (e.g. ``{"max_missing_planes": 1}`` for the
    tag-and-probe of the plane efficiencies).  With ``return_internals`` the hits are all of
    them (``_hits``), the tracks' hit indices refer to them, and ``_usable`` masks the ones the
    search may use (in time and, unless ``use_mm_singles``, not a micromegas single).
    """
    refuse_data_events(events, "reconstruct_tracks()")
    check_belong(events, setup, conditions, source, "reconstruct_tracks()")
    cfg, pt, vt, (t_lo, t_hi) = _tables(setup, conditions, config_path, config_overrides)
    n = len(events)
    # out-of-time hits are not used (hit_time_windows), nor, unless use_mm_singles, the MM
    # singles (tracks.in_time, tracks.mm_singles)
    drop = (pt.type == 0) & (not cfg.use_mm_singles)
    if return_internals:  # all the hits; one compiled pass selects and compacts the search's
        all_hits = event_hits(events, pt, threshold_sigma=cfg.apv_threshold_sigma, drift_t0=cfg.drift_t0,
                              source=source)
        kept, index, *cols = _search_selection(all_hits["time"], all_hits["plane"], all_hits["ambiguous"],
                                               *(all_hits[k] for k in SEARCH_COLUMNS), t_lo, t_hi, drop)
        hits = _with_offsets(all_hits, kept, index, dict(zip(SEARCH_COLUMNS, cols, strict=True)))
    else:  # only the search's hits, selected by the kernel as it makes them (the same values)
        hits = search_hits(events, pt, threshold_sigma=cfg.apv_threshold_sigma, drift_t0=cfg.drift_t0, lo=t_lo,
                           hi=t_hi, drop=drop, source=source)
    res = find_tracks(hits, n, pt.n_planes, vt)
    if return_internals:
        sel = res["hits"]  # the tracks' hit indices into all the hits
        if index.size:
            res["hits"] = np.where(sel >= 0, index[np.maximum(sel, 0)], -1)
        hits = all_hits
        hits["index"] = np.arange(len(hits["pos"]))
        keep = np.zeros(len(all_hits["pos"]), bool)  # the hits the search may use
        keep[index] = True
    else:  # the table is the search's: every hit usable, the tracks' indices refer to it
        keep = np.ones(len(hits["pos"]), bool)
    if cfg.track_time_prob_min > 0.0:  # a common track time: time-inconsistent view tracks are dropped
        checked = {st.magnet for st in cfg.stations if st.role in cfg.track_time_roles}
        drop_tracks = np.nonzero(~time_consistent(
            res["hits"], res["nh"], hits["time"], hits["time_error"],
            time_chi2_cuts(cfg.track_time_prob_min, res["hits"].shape[2]), cfg.track_time_outliers,
            checked=np.array([v.station in checked for v in vt.views])))  # (a few: indices, not a mask per table)
        if drop_tracks[0].size:
            res["nh"][drop_tracks] = 0
            res["par"][drop_tracks] = np.nan
            res["chi2"][drop_tracks] = np.nan
            res["hits"][drop_tracks] = -1
            res["flags"][drop_tracks] |= FLAG_TIME
    view_planes = []  # per view: mask over the setup's planes
    for v in vt.views:
        m = np.zeros(pt.n_planes, bool)
        m[list(v.planes)] = True
        view_planes.append(m)
    ecal_z = setup.detector("ECAL").z
    hcal_z = setup.detector("HCAL").z
    out: dict[str, np.ndarray] = {}
    for role in ("in", "out"):
        st = cfg.station(role)
        if st is None:
            continue
        iv = [i for i, v in enumerate(vt.views) if v.station == st.magnet]
        ib = next(i for i in iv if vt.views[i].bend)
        io = next(i for i in iv if not vt.views[i].bend)
        vb, vo = vt.views[ib], vt.views[io]
        magnet = conditions.magnet(setup, st.magnet)  # field integral of the conditions
        kappa = res["par"][:, ib, 2] / units.MRAD_PER_RAD
        ok = res["nh"][:, ib] > 0
        p = np.full(n, np.nan)
        p[ok] = magnet.momentum(kappa[ok]) / units.GeV
        ndf = np.where(ok, res["nh"][:, ib] - vb.npar, 0)
        out[f"p_{role}"] = p
        out[f"chi2_{role}"] = np.where(ok, res["chi2"][:, ib] / np.maximum(ndf, 1), np.nan)
        out[f"ndf_{role}"] = ndf
        out[f"nhits_{role}"] = res["nh"][:, ib]
        # the station's views folded column by column (no (events, views) copies, no reductions
        # along a short axis)
        has = [res["nh"][:, i] > 0 for i in iv]
        ntr_max = functools.reduce(np.maximum, [res["n_tracks"][:, i] for i in iv])
        ntr_min = functools.reduce(np.minimum, [res["n_tracks"][:, i] for i in iv])
        out[f"n_tracks_{role}"] = np.where(ntr_min < 0, -1, ntr_max)
        n_views = has[0].astype(np.int64)
        for h in has[1:]:
            n_views += h
        out[f"n_views_{role}"] = n_views
        view_of_plane = np.full(pt.n_planes, -1, np.int64)  # which of the station's views a plane is in
        for k, i in enumerate(iv):
            view_of_plane[view_planes[i]] = k
        slot_of_plane = np.full(pt.n_planes, -1, np.int64)  # a plane's slot in its view's track hits
        for i in iv:
            slot_of_plane[list(vt.views[i].planes)] = np.arange(len(vt.views[i].planes))
        out[f"n_extra_planes_{role}"] = _extra_planes(
            hits["plane_offsets"], hits["origin"], keep, res["hits"], np.asarray(iv, np.int64), np.stack(has, axis=1),
            view_of_plane, slot_of_plane)
        out[f"flags_{role}"] = functools.reduce(np.bitwise_or, [res["flags"][:, i] for i in iv])
        coords = {vb.coord: (vb, ib), vo.coord: (vo, io)}
        # at the ECAL front: downstream segments for "in", upstream segments for "out"
        for c in ("x", "y"):
            v, i = coords[c]
            pos, slope = _extrapolate(res["par"][:, i], v, ecal_z, downstream=(role == "in"))
            out[f"{role}_{c}"] = pos
            out[f"{role}_t{c}"] = slope
        if role == "out":
            for c in ("x", "y"):
                v, i = coords[c]
                out[f"out_{c}_hcal"] = _extrapolate(res["par"][:, i], v, hcal_z, downstream=True)[0]
    if "p_out" in out:
        out["track_match_chi2"] = _match_chi2(out, res, vt, setup, cfg, hits=(hits["plane_offsets"], hits["pos"], keep))
    if return_internals:
        out["_hits"] = hits
        out["_tracks"] = res
        out["_views"] = vt.views
        out["_usable"] = keep
    return out


#: ``flags_in`` / ``flags_out`` bit: a view track was dropped for inconsistent hit times
FLAG_TIME = 4


def chi2_sf(x: float, dof: int) -> float:
    """Upper tail probability of chi2 with an integer ``dof`` >= 1 at ``x`` (closed form: a
    Poisson sum for even dof, erfc plus a sum for odd; no scipy in the worker path)."""
    if x <= 0.0:
        return 1.0
    h = 0.5 * x
    if dof % 2 == 0:
        term, total = 1.0, 1.0
        for i in range(1, dof // 2):
            term *= h / i
            total += term
        return math.exp(-h) * total
    total, term = 0.0, math.sqrt(2.0 * x / math.pi) * math.exp(-h)
    for r in range(1, (dof + 1) // 2):
        total += term
        term *= x / (2 * r + 1)
    return math.erfc(math.sqrt(h)) + total


@functools.lru_cache(maxsize=16)
def _chi2_isf(prob: float, dof: int) -> float:
    lo, hi = 0.0, 1.0
    while chi2_sf(hi, dof) > prob:
        hi *= 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if chi2_sf(mid, dof) > prob:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def time_chi2_cuts(prob_min: float, max_hits: int) -> np.ndarray:
    """Per number of timed hits n (index), the chi2 of n - 1 dof whose upper tail probability is
    ``prob_min`` (inf for n < 2: one time is always consistent with itself)."""
    cut = np.full(max_hits + 1, np.inf)
    for n in range(2, max_hits + 1):
        cut[n] = _chi2_isf(float(prob_min), n - 1)
    return cut


@numba.njit(cache=True)
def _view_time_chi2(hits, e, v, time, time_error):
    """:func:`time_chi2` of one (event, view) with a track: (chi2, chi2_loo, count)."""
    k = hits.shape[2]
    sw = 0.0
    st = 0.0
    m = 0
    for j in range(k):
        h = hits[e, v, j]
        if h >= 0 and time_error[h] > 0.0 and math.isfinite(time[h]):
            w = 1.0 / (time_error[h] * time_error[h])
            sw += w
            st += w * time[h]
            m += 1
    if m < 2:
        return 0.0, 0.0, m
    mean = st / sw
    c = 0.0
    gain = 0.0
    for j in range(k):
        h = hits[e, v, j]
        if h >= 0 and time_error[h] > 0.0 and math.isfinite(time[h]):
            w = 1.0 / (time_error[h] * time_error[h])
            d2 = (time[h] - mean) ** 2
            c += w * d2
            gain = max(gain, w * sw / (sw - w) * d2)
    return c, max(c - gain, 0.0), m


@numba.njit(cache=True)
def time_chi2(hits, nh, time, time_error):
    """Per (event, view): the chi2 of the times of the track's timed hits about their weighted
    mean, the same without the one hit whose removal lowers it most (the chi2 of the others about
    their own mean: ``chi2 - w_i W / (W - w_i) (t_i - mean)^2``), and the number of timed hits.
    Timed hits: finite ``time`` and ``time_error`` > 0 (the APV hits; straws carry the drift time
    in theirs and are left out).  ``hits`` (events, views, k) index ``time`` / ``time_error``
    (-1: none); views without a track (``nh`` 0) give (0, 0, 0)."""
    n_ev, n_v, k = hits.shape
    chi2 = np.zeros((n_ev, n_v))
    chi2_loo = np.zeros((n_ev, n_v))
    count = np.zeros((n_ev, n_v), np.int64)
    for e in range(n_ev):
        for v in range(n_v):
            if nh[e, v] <= 0:
                continue
            chi2[e, v], chi2_loo[e, v], count[e, v] = _view_time_chi2(hits, e, v, time, time_error)
    return chi2, chi2_loo, count


@numba.njit(cache=True)
def _time_consistent(hits, nh, checked, time, time_error, cuts, outliers):
    """:func:`time_consistent` in one pass: no (events, views) chi2 tables."""
    n_ev, n_v, k = hits.shape
    ok = np.ones((n_ev, n_v), np.bool_)
    top = cuts.shape[0] - 1
    for e in range(n_ev):
        for v in range(n_v):
            if not checked[v] or nh[e, v] <= 0:
                continue  # no track: consistent (its chi2 0 <= cuts[0])
            c, c1, m = _view_time_chi2(hits, e, v, time, time_error)
            ok[e, v] = c <= cuts[min(m, top)] or (outliers == 1 and m >= 3 and c1 <= cuts[min(m - 1, top)])
    return ok


def time_consistent(hits, nh, time, time_error, cuts, outliers: int = 1, *, checked=None) -> np.ndarray:
    """(events, views) True where the view track's timed hits agree with one time: their
    :func:`time_chi2` is within ``cuts[n]`` (:func:`time_chi2_cuts`) for its n timed hits, or,
    with ``outliers`` = 1, that of the n - 1 hits left without the most deviant one is within
    ``cuts[n - 1]`` (n >= 3).  True where there is no track or fewer than two timed hits, and in
    the views not ``checked`` (a bool per view; default: all checked)."""
    if outliers not in (0, 1):
        raise ValueError(f"time_consistent: outliers must be 0 or 1, got {outliers}")
    if checked is None:
        checked = np.ones(hits.shape[1], np.bool_)
    return _time_consistent(hits, nh, np.asarray(checked, np.bool_), np.ascontiguousarray(time, np.float64),
                            np.ascontiguousarray(time_error, np.float64), np.asarray(cuts, np.float64),
                            int(outliers))


def extra_planes(plane_offsets, origin, usable, used, has_track, view_of_plane):
    """Per event: how many planes of the station's views that have a track hold a ``usable``
    hit (in time, searchable) that is neither a hit of the event's tracks nor a twin of one
    (same ``origin``: the mirror of a straw hit, a ghost of a micromegas single).  A second
    in-time muon adds such hits on most planes of a station; uncorrelated noise on a plane or
    two.  ``plane_offsets`` (events x planes + 1) bound the hits of (event, plane),
    ``used`` (events, k) the track hit indices (-1 none), ``has_track`` (events, views of
    the station), ``view_of_plane`` the station view of each setup plane (-1: none)."""
    used = np.ascontiguousarray(used, np.int64)
    return _extra_planes(plane_offsets, origin, usable, used[:, None, :], np.zeros(1, np.int64), has_track,
                         view_of_plane, np.full(len(view_of_plane), -1, np.int64))


@numba.njit(cache=True)
def _extra_planes(plane_offsets, origin, usable, hits, views, has_track, view_of_plane, slot_of_plane):
    """:func:`extra_planes` with the track hit indices of the station's views read in place:
    ``hits`` (events, all views, k), ``views`` the station's views in it (the stage's
    ``res["hits"]`` and the station's view indices; before, the stage copied
    ``hits[:, views]`` into an (events, views * k) array per station: ~6 MB per 50k events).
    ``slot_of_plane[p] >= 0``: a track's hit on plane p can only be ``hits[e, w, slot_of_plane[p]]``
    (w the plane's view; the search's tracks hold one slot per plane of their view), so a hit's
    twin is looked for there alone instead of among all the station's track hits (the same
    answer: hits of other slots lie on other planes, outside ``[lo, hi)``); -1: all of them."""
    n = hits.shape[0]
    n_planes = view_of_plane.shape[0]
    k = hits.shape[2]
    out = np.zeros(n, np.int64)
    for e in range(n):
        for p in range(n_planes):
            v = view_of_plane[p]
            if v < 0 or not has_track[e, v]:
                continue
            lo = plane_offsets[e * n_planes + p]
            hi = plane_offsets[e * n_planes + p + 1]
            slot = slot_of_plane[p]
            for i in range(lo, hi):
                if not usable[i]:
                    continue
                if slot >= 0:
                    u = hits[e, views[v], slot]
                    if not (u >= lo and u < hi and origin[u] == origin[i]):
                        out[e] += 1
                        break
                    continue
                twin = False
                for w in views:
                    for j in range(k):
                        u = hits[e, w, j]
                        if u >= lo and u < hi and origin[u] == origin[i]:
                            twin = True
                            break
                    if twin:
                        break
                if not twin:
                    out[e] += 1
                    break
    return out


_MATCH_CACHE: dict = {}


@numba.njit(cache=True)
def _used_codes(hits, v_in, n_in, v_out, n_out):
    """Per event, the bit patterns (int64) of the planes used by the tracks of views ``v_in`` and
    ``v_out`` (bit j: ``hits[e, v, j] >= 0``, j < ``n_in`` / ``n_out``): the codes of
    :func:`_match_chi2` in one pass over the (events, views, k) hit indices, instead of two
    boolean (events, planes) masks, their ``any`` and a shift per plane."""
    n = hits.shape[0]
    c_in = np.empty(n, np.int64)
    c_out = np.empty(n, np.int64)
    for e in range(n):
        a = 0
        for j in range(n_in):
            if hits[e, v_in, j] >= 0:
                a |= 1 << j
        b = 0
        for j in range(n_out):
            if hits[e, v_out, j] >= 0:
                b |= 1 << j
        c_in[e] = a
        c_out[e] = b
    return c_in, c_out


def _bits(code, n: int) -> np.ndarray:
    """The used-plane mask (bool, ``n``) of a pattern ``code`` of :func:`_used_codes`."""
    return (int(code) >> np.arange(n)) & 1 == 1


def _patterns(code: np.ndarray, bits: int):
    """``np.unique(code, return_index=True, return_inverse=True)`` for codes of ``bits`` bits,
    except that ``first`` is *a* row of each code, not necessarily the first (every row of a
    code has the same used planes, all the caller reads from it).  Up to 2^16 possible codes
    by a table over them (two O(n) passes) instead of numpy's sort (~1 ms per 50k events)."""
    if bits > 16 or len(code) == 0:
        return np.unique(code, return_index=True, return_inverse=True)
    present = np.zeros(1 << bits, np.bool_)
    present[code] = True
    codes = np.flatnonzero(present)
    slot = np.zeros(1 << bits, np.int64)
    slot[codes] = np.arange(len(codes))
    inverse = slot[code]
    first = np.empty(len(codes), np.int64)
    first[inverse] = np.arange(len(code))
    return codes, first, inverse


def _code_table(codes, n: int) -> np.ndarray:
    """The codes (bool mask over ``2**n`` codes, ``n`` <= 16) that occur in ``codes``, or None
    for longer codes (then :func:`_patterns`)."""
    if n > 16 or len(codes) == 0:
        return None
    present = np.zeros(1 << n, np.bool_)
    present[codes] = True
    return present


def _coefficients(code, n: int, rows: int, coef_of):
    """Per event the ``rows`` coefficients ``coef_of(code)`` (NaN where None) of its pattern
    ``code`` (``n`` bits), each pattern computed once: a table over the possible codes and one
    gather for up to 16 bits (no unique / inverse), :func:`_patterns` beyond."""
    present = _code_table(code, n)
    if present is None:
        codes, first, inverse = _patterns(code, n)
        coef = np.full((rows, len(codes)), np.nan)
        for k, i in enumerate(first):
            c = coef_of(int(code[i]))
            if c is not None:
                coef[:, k] = c
        return coef[:, inverse.reshape(-1)]
    table = np.full((rows, present.size), np.nan)
    for c in np.flatnonzero(present):
        v = coef_of(int(c))
        if v is not None:
            table[:, c] = v
    return table[:, code]


def _match_chi2(out, res, vt, setup, cfg, hits=None):
    """``track_match_chi2`` per event (see module doc); the variance depends on which planes
    each of the two tracks used (a few patterns per file, each computed once).  ``hits``
    (``plane_offsets``, ``pos``, usable mask): where a projection has an outgoing track and no
    incoming one, its term compares the outgoing track with the incoming view's usable hits
    (:func:`_hit_match_terms`; inf if that view has no usable hit); without ``hits`` such a
    projection is left out.  The match still needs a projection with both tracks (NaN
    otherwise, as without ``hits``): the hit term tightens the match of the events it had, it
    admits none that had no match."""
    chi2 = np.zeros(len(out["p_out"]))
    n_proj = np.zeros(len(chi2), np.int64)
    # the momentum factors of MatchResolution.variance, once for both projections
    f_in = (MatchResolution.P_REF / (out["p_in"] * units.GeV)) ** 2
    f_out = (MatchResolution.P_REF / (out["p_out"] * units.GeV)) ** 2
    var = np.empty(len(chi2))
    tmp = np.empty(len(chi2))
    for c in ("x", "y"):
        iv = {v.role: i for i, v in enumerate(vt.views) if v.coord == c}
        vi, vo = vt.views[iv["in"]], vt.views[iv["out"]]
        k_max = res["hits"].shape[2]
        n_in, n_out = min(len(vi.planes), k_max), min(len(vo.planes), k_max)
        code_in, code_out = _used_codes(res["hits"], iv["in"], n_in, iv["out"], n_out)
        code = code_in << n_out
        code |= code_out

        def match_of(cd, vi=vi, vo=vo, n_in=n_in, n_out=n_out):
            mi, mo = _bits(cd >> n_out, n_in), _bits(cd & ((1 << n_out) - 1), n_out)
            if not mi.any() or not mo.any():
                return None
            m = MatchResolution(setup, vi, vo, mi, mo)
            return m.a, m.b_in, m.b_out

        coef_of = _per_pattern(("track match", setup.name, setup.source, setup.period, vi, vo, n_in, n_out), match_of)

        # one (a, b_in, b_out) per pattern of used planes, then the expression of
        # MatchResolution.variance term by term, in place: a + b_in f_in + b_out f_out
        a, b_in, b_out = _coefficients(code, n_in + n_out, 3, coef_of)
        np.multiply(b_in, f_in, out=var)
        var += a
        np.multiply(b_out, f_out, out=tmp)
        var += tmp
        np.subtract(out[f"out_{c}"], out[f"in_{c}"], out=tmp)
        tmp *= tmp
        tmp /= var  # the term
        ok = np.isfinite(tmp)
        np.add(chi2, tmp, out=chi2, where=ok)
        n_proj += ok
        if hits is not None:
            todo = (code_out != 0) & (code_in == 0) & np.isfinite(out[f"out_{c}"])
            if todo.any():
                alt = _hit_match_terms(out, c, vi, vo, code_out, n_out, todo, hits, setup, f_out)
                ok = todo & ~np.isnan(alt)
                np.add(chi2, alt, out=chi2, where=ok)
    chi2[n_proj == 0] = np.nan
    return chi2


def _per_pattern(key, coefficients):
    """``coefficients(code)`` of a used-plane pattern ``code``, computed once per process for each
    pattern of the views in ``key`` (in :data:`_MATCH_CACHE`), not again for every call."""
    patterns = _MATCH_CACHE.setdefault(key, {})

    def of(code):
        if code not in patterns:
            patterns[code] = coefficients(code)
        return patterns[code]

    return of


def _hit_match_terms(out, c, vi, vo, code_out, n_out, todo, hits, setup, f_out):
    """The match term of projection ``c`` for the events ``todo`` (an outgoing track and no
    incoming track in ``c``): the smallest ``(u_out - u_hit)^2 / var`` over the usable hits of
    the incoming view's planes carried along the beam direction to the ECAL front
    (:class:`.resolution.HitMatchResolution`), ``var`` the outgoing track's part of the match
    variance at its p_out plus the hit's at p_in (the beam energy where p_in is not measured).
    inf where the incoming view has no usable hit.  Without it the outgoing bend view of a
    muon whose incoming track lacks this projection is tied to the target only by the beam
    spot, and two noise hits upstream of MS2 (one in place of a lost true hit) make a fake
    kick that the match cannot see (docs/periods.md, "The counted fakes").  ``code_out``: per
    event the planes the outgoing track used (:func:`_used_codes`, ``n_out`` bits); ``f_out``
    ``(P_REF / p_out)^2`` per event."""
    key = (setup.name, setup.source, setup.period, vi)
    if not as_loaded.unchanged(setup):  # (an edited setup: its own resolution, not cached under the file's key)
        hm = HitMatchResolution(setup, vi)
    elif key not in _MATCH_CACHE:
        hm = _MATCH_CACHE[key] = HitMatchResolution(setup, vi)
    else:
        hm = _MATCH_CACHE[key]
    p_ref = MatchResolution.P_REF

    def match_of(cd):
        mo = _bits(cd, n_out)
        if not mo.any():
            return None
        m = MatchResolution(setup, vi, vo, None, mo)
        return m.a_out, m.b_out

    coef_of = _per_pattern(("hit match", setup.name, setup.source, setup.period, vi, vo, n_out), match_of)
    a_out, b_out = _coefficients(code_out, n_out, 2, coef_of)
    p_in = np.where(np.isfinite(out["p_in"]), out["p_in"] * units.GeV, setup.beam.energy)
    var_out = b_out * f_out
    var_out += a_out
    plane_offsets, pos, usable = hits
    n_planes = len(setup.planes)
    return _nearest_hit_chi2(plane_offsets, pos, usable, n_planes, hm.planes, hm.shift, hm.c0, hm.c1,
                             out[f"out_{c}"], var_out, (p_ref / p_in) ** 2, todo)


@numba.njit(cache=True)
def _nearest_hit_chi2(plane_offsets, pos, usable, n_planes, planes, shift, c0, c1, u_out, var_out, fac_in, todo):
    """Per event with ``todo``: min over the ``usable`` hits of ``planes`` of
    ``(u_out - pos - shift)^2 / (var_out + c0 + c1 fac_in)`` (per plane ``shift``, ``c0``,
    ``c1``); inf without such a hit, NaN where not ``todo``."""
    n = u_out.shape[0]
    res = np.full(n, np.nan)
    for e in range(n):
        if not todo[e]:
            continue
        best = np.inf
        for k in range(planes.shape[0]):
            p = planes[k]
            var = var_out[e] + c0[k] + c1[k] * fac_in[e]
            for i in range(plane_offsets[e * n_planes + p], plane_offsets[e * n_planes + p + 1]):
                if not usable[i]:
                    continue
                d = u_out[e] - pos[i] - shift[k]
                q = d * d / var
                if q < best:
                    best = q
        res[e] = best
    return res


def event_display(events, index: int, setup, conditions, *, config_path=None) -> dict:
    """Hits and fitted tracks of event ``index`` of ``events`` for an event display.

    Returns ``{"hits": {...arrays...}, "tracks": [...]}``: hits with ``plane`` (name),
    ``z``, ``coord`` ("x"/"y"), ``pos`` (global, mm), ``ambiguous``, ``on_track``; and one
    entry per view with ``station``, ``coord``, ``z`` and ``pos`` sampled along the track
    (mm), ``p`` (GeV, bend views) and ``chi2``.
    """
    one = events[index: index + 1]
    r = reconstruct_tracks(one, setup, conditions, return_internals=True, config_path=config_path)
    h, t, views = r["_hits"], r["_tracks"], r["_views"]
    used = np.zeros(len(h["pos"]), bool)
    tracks = []
    for i, v in enumerate(views):
        sel = t["hits"][0, i]
        used[sel[sel >= 0]] = True
        if t["nh"][0, i] == 0:
            continue
        par = t["par"][0, i]
        zs = np.array([setup.planes[v.planes[0]].z, v.z_magnet, setup.planes[v.planes[-1]].z])
        pos = np.array([_extrapolate(par, v, z, downstream=z > v.z_magnet)[0] for z in zs])
        entry = {"station": v.station, "coord": v.coord, "z": zs, "pos": pos, "chi2": float(t["chi2"][0, i])}
        if v.bend:
            entry["p"] = float(conditions.magnet(setup, v.station).momentum(par[2] / units.MRAD_PER_RAD) / units.GeV)
        tracks.append(entry)
    hits = {
        "plane": np.array([setup.planes[p].name for p in h["plane"]]),
        "z": h["z"], "coord": np.array([setup.planes[p].measures for p in h["plane"]]),
        "pos": h["pos"], "ambiguous": h["ambiguous"], "on_track": used,
    }
    return {"hits": hits, "tracks": tracks}
