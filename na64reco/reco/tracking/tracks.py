"""Track finding and fitting in 1-D projections ("views") around each magnet.

A *view* is the set of planes of one station (magnet) measuring one coordinate,
ordered in z.  Two models, linear in their parameters, with ``dz = z - z_magnet`` in
metres:

straight (the projection the magnet does not bend)
    ``u = a + b dz``  (a in mm at the magnet centre, b slope in mrad)
kick (the bend projection; thin-kick magnet at ``z_magnet``)
    ``u = a + b dz`` upstream, ``u = a + (b - kappa) dz`` downstream; the two segments
    meet at the magnet centre by construction, so the chi2 of this joint fit is the
    up/down matching chi2 plus the straightness of both segments.  ``kappa`` (mrad) is
    the deflection, positive for the beam (the magnets bend it towards negative
    coordinates) and ``p = Magnet.momentum(kappa)``.

Search (same definition for the numba kernel and its slow twin)
    every assignment of at most one hit (or none) per plane of the view with at most
    ``max_missing_planes`` planes without hit (per view: ``view_max_missing_planes``) and a hit
    on each of its ``required_planes``, a determinable fit (kick: >= 1 hit on each
    side and >= 3 hits; straight: >= 2 hits), ``chi2 <= chi2_ndf_max * ndf`` (hit errors:
    plane resolutions), ``|b - b_ref| <= slope_window`` (``b_ref`` the reference
    trajectory's slope) and, for kicks, ``kappa`` inside the station's momentum window,
    is a *candidate*.  Candidates are ranked by
    ``score = chi2 + ((b - b_ref) / slope_prior)^2 + Sum_missing pen_i``: the missing-plane
    penalty of plane i is -2 ln of the likelihood ratio of "the track missed plane i and its
    hits are noise" to "a hit of plane i is the track's" at zero residual:
    ``pen_i = 2 ln(eps_i / ((1 - eps_i) sqrt(2 pi) sigma_i rho_i))`` (efficiency eps_i clipped
    to [0.5, 0.9999], resolution sigma_i, noise density rho_i = noise clusters per event /
    plane width, at least 0.01 per event; >= 0).  A candidate with one more hit wins unless
    that hit adds more than pen_i (~17-20 for the NA64mu planes) to the chi2: with noise
    this rare, leaving out a hit that fits is the improbable explanation.  Ties (equal score) go to more hits,
    then to the search order (depth-first, "no hit" before the hits of a plane in their
    input order), so the result is deterministic.  The best candidate
    is the track; ``n_tracks`` counts candidates taken greedily in rank order that share
    no hit origin (cluster or straw digit) with an earlier one; apart from the best, only
    candidates with ndf >= 1 count (an ndf = 0 fit is not checked by any redundant hit:
    noise hits would make such "tracks" too often).

    The incoming station (beam momentum station) may rank by a prior on the deflection
    around the beam's (``momentum_prior``, relative width): with 4 planes a 3-hit kick
    fit has ndf = 0, and a noise cluster on the one downstream plane with a hit would
    otherwise win as often as the true hit.

    Vertex constraint (outgoing station): the incoming track at the ECAL front (the target)
    is a measurement of the outgoing track there.  A candidate's residual d = u_ECAL - u_in
    enters with its expected variance ``vertex_va + vertex_vb kappa^2`` (points,
    extrapolation and scattering of both tracks and of the ECAL, from
    :class:`.resolution.MatchResolution` at the beam momentum for the incoming track;
    the 1/p^2 part through the candidate's deflection kappa, for the non-bend view the
    deflection found in the bend view, or the station's p_min if none): candidates with
    ``(d/sigma)^2 > vertex_chi2_max`` are not candidates, the others add ``(d/sigma)^2`` to
    their score.  A noise hit on a plane whose true hit was lost makes otherwise good fits
    that point away from the target: they now fail instead of being ranked low.  The
    incoming track anchors the constraint only if it misses at most ``anchor_max_missing``
    planes of its view (a 3-of-4 straight fit has 1 dof: noise makes wrong incoming tracks,
    which would then veto the true outgoing one and favour a fake pointing to them);
    otherwise, or without an incoming track, the beam spot takes its place: the reference
    trajectory at the ECAL front with the spot variance added.  The vertex chi2 enters the
    score with weight ``vertex_rank_weight``.

    The kernel enumerates assignments depth-first and prunes a branch as soon as the
    chi2 of its hits exceeds the largest possible cut (a chi2 can only grow when hits
    are added), so it finds exactly the candidates of the exhaustive enumeration
    :func:`search_view_reference`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import hepunits
import numba
import numpy as np

from na64reco.reco.tracking._jit import INLINED, NO_NRT, NOT_INLINED
from na64reco.units import MM_PER_M, MRAD_PER_RAD

MAX_PLANES = 8
FLAG_OVERFLOW = 1  # more candidates than max_candidates: some were not considered
FLAG_BUSY = 2  # a plane had more than max_hits_per_plane hits: the view was not searched


@dataclass(frozen=True)
class View:
    """One projection of one station."""

    station: str
    role: str  # "in" / "out"
    coord: str  # "x" / "y"
    bend: bool
    z_magnet: float  # mm
    planes: tuple[int, ...]  # setup plane indices, increasing z
    dz: tuple[float, ...]  # m
    down: tuple[bool, ...]
    ref_slope: float  # mrad
    ref_pos: float  # reference trajectory at the magnet centre (mm)
    kappa_min: float  # mrad
    kappa_max: float  # mrad
    slope_window: float  # mrad
    kappa_prior: float = 0.0  # mrad: ranking prior on the deflection (beam momentum), 0 = none
    kappa_prior_sigma: float = 0.0  # mrad
    anchor_view: int = -1  # index of the view whose track anchors this one (vertex constraint)
    anchor_dz: float = 0.0  # m: anchor z - this magnet's z
    anchor_src_dz: float = 0.0  # m: anchor z - the source view's magnet z
    vertex_va: float = 0.0  # mm^2: constant part of the vertex residual variance
    vertex_vb: float = 0.0  # mm^2 / mrad^2: its 1/p^2 part per kappa^2
    kappa_view: int = -1  # non-bend views: the station's bend view (its kappa gives p)
    spot_pos: float = 0.0  # mm: reference trajectory at the anchor z (vertex without incoming track)
    spot_var: float = 0.0  # mm^2: beam spot variance there (0: no spot fallback)
    miss_penalty: tuple[float, ...] = ()  # per plane: missing-plane score penalty (missing_plane_penalty)
    max_missing: int = 1  # planes a candidate may miss (config max_missing_planes / view_max_missing_planes)
    required: tuple[bool, ...] = ()  # per plane: a candidate must have a hit there (config required_planes)

    @property
    def npar(self) -> int:
        return 3 if self.bend else 2


def make_views(setup, config, conditions=None) -> tuple[View, ...]:
    """The views of every configured station (bend projection first).  The missing-plane
    penalties use the plane efficiencies and noise of ``conditions`` (a run's
    :class:`~na64reco.conditions.RunConditions`: measured with ``calibrate --kind
    efficiency``), else the setup's; the deflection window and the ranking prior on the beam's
    deflection use the conditions' field integral (the setup's pulled a momentum-scale
    measurement toward the nominal field: -0.05 % at a field 2 % off, 6 sigma; calibration review,
    stop 48)."""
    views = []
    for st in config.stations:
        m = setup.magnets[st.magnet] if conditions is None else conditions.magnet(setup, st.magnet)
        other = "x" if m.bend_plane == "y" else "y"
        for coord in (m.bend_plane, other):
            planes = sorted((p for p in setup.planes_of(m.name) if p.measures == coord), key=lambda p: p.z)
            if len(planes) > MAX_PLANES:
                raise ValueError(f"station {m.name} has {len(planes)} {coord} planes; at most {MAX_PLANES}")
            ref = setup.reference_position(np.array([m.center_z - hepunits.m, m.center_z]))
            r = ref[0] if coord == "x" else ref[1]
            bend = coord == m.bend_plane
            views.append(View(
                station=m.name, role=st.role, coord=coord, bend=bend, z_magnet=m.center_z,
                planes=tuple(p.index for p in planes),
                dz=tuple((p.z - m.center_z) / MM_PER_M for p in planes),
                down=tuple(p.side == "downstream" for p in planes),
                ref_slope=float(r[1] - r[0]),  # mm per m = mrad
                ref_pos=float(r[1]),
                kappa_min=float(m.kick(st.p_max) * MRAD_PER_RAD) if bend else 0.0,
                kappa_max=float(m.kick(st.p_min) * MRAD_PER_RAD) if bend else 0.0,
                slope_window=float(st.slope_window * MRAD_PER_RAD),
                kappa_prior=float(m.kick(setup.beam.energy) * MRAD_PER_RAD) if bend and st.momentum_prior > 0 else 0.0,
                kappa_prior_sigma=float(m.kick(setup.beam.energy) * MRAD_PER_RAD * st.momentum_prior) if bend else 0.0,
                miss_penalty=tuple(
                    missing_plane_penalty(p) if conditions is None
                    else missing_plane_penalty(p, conditions.plane_efficiency(p), conditions.plane_noise_hits(p))
                    for p in planes),
                max_missing=config.max_missing_of(m.name, coord),
                required=tuple(p.name in config.required_planes for p in planes),
            ))
    # the outgoing station's views are anchored to the incoming track at the ECAL front
    z_anchor = setup.detector("ECAL").z if "ECAL" in setup.calorimeters else None
    out = []
    for v in views:
        src = [i for i, w in enumerate(views) if w.role == "in" and w.coord == v.coord]
        if v.role == "out" and src and z_anchor is not None:
            w = views[src[0]]
            va, vb = _vertex_variance(setup, w, v)
            kv = -1 if v.bend else next(i for i, u in enumerate(views) if u.station == v.station and u.bend)
            ref = setup.reference_position(z_anchor)
            b = setup.beam
            spot = (b.spot_sigma_x**2 + (b.divergence_x * (z_anchor - b.start_z)) ** 2 if v.coord == "x"
                    else b.spot_sigma_y**2 + (b.divergence_y * (z_anchor - b.start_z)) ** 2)
            v = replace(v, anchor_view=src[0], anchor_dz=(z_anchor - v.z_magnet) / MM_PER_M,
                        anchor_src_dz=(z_anchor - w.z_magnet) / MM_PER_M, vertex_va=va, vertex_vb=vb, kappa_view=kv,
                        spot_pos=float(ref[0] if v.coord == "x" else ref[1]), spot_var=float(spot))
        out.append(v)
    return tuple(out)


def missing_plane_penalty(plane, efficiency: float | None = None, noise_hits: float | None = None) -> float:
    """Score penalty of a candidate without a hit on ``plane`` (a TrackerPlane), module doc;
    ``efficiency`` and ``noise_hits`` default to the plane's nominal values."""
    efficiency = plane.efficiency if efficiency is None else efficiency
    noise_hits = plane.noise_hits if noise_hits is None else noise_hits
    eps = min(max(float(efficiency), 0.5), 0.9999)
    rho = max(float(noise_hits), 0.01) / plane.width  # noise clusters per mm
    return max(0.0, 2.0 * float(np.log(eps / ((1.0 - eps) * np.sqrt(2 * np.pi) * plane.resolution * rho))))


def _vertex_variance(setup, view_in, view_out) -> tuple[float, float]:
    """(va mm^2, vb mm^2/mrad^2) of the vertex residual variance va + vb kappa^2 (module doc)."""
    from na64reco.reco.tracking.resolution import MatchResolution

    mr = MatchResolution(setup, view_in, view_out)
    va = mr.a + mr.b_in * (mr.P_REF / setup.beam.energy) ** 2
    magnet = setup.magnets[view_out.station]
    kappa_ref = magnet.kick(mr.P_REF) * MRAD_PER_RAD  # mrad at P_REF
    return float(va), float(mr.b_out / kappa_ref**2)


class ViewTables:
    """Views as padded arrays for the kernel."""

    def __init__(self, views, config):
        nv = len(views)
        self.views = views
        self.planes = np.zeros((nv, MAX_PLANES), np.int64)
        self.dz = np.zeros((nv, MAX_PLANES))
        self.down = np.zeros((nv, MAX_PLANES), np.bool_)
        self.nplanes = np.array([len(v.planes) for v in views], np.int64)
        self.npar = np.array([v.npar for v in views], np.int64)
        self.ref_slope = np.array([v.ref_slope for v in views])
        self.kmin = np.array([v.kappa_min for v in views])
        self.kmax = np.array([v.kappa_max for v in views])
        self.kprior = np.array([v.kappa_prior for v in views])
        self.kprior_sig = np.array([v.kappa_prior_sigma for v in views])
        self.anchor = np.array([v.anchor_view for v in views], np.int64)
        self.anchor_dz = np.array([v.anchor_dz for v in views])
        self.anchor_src_dz = np.array([v.anchor_src_dz for v in views])
        self.vertex_va = np.array([v.vertex_va for v in views])
        self.vertex_vb = np.array([v.vertex_vb for v in views])
        self.kappa_view = np.array([v.kappa_view for v in views], np.int64)
        self.spot_pos = np.array([v.spot_pos for v in views])
        self.spot_var = np.array([v.spot_var for v in views])
        self.vertex_chi2max = config.vertex_chi2_max
        self.vertex_rank_weight = config.vertex_rank_weight
        self.anchor_max_missing = config.anchor_max_missing
        self.miss_pen = np.zeros((nv, MAX_PLANES))
        self.required = np.zeros((nv, MAX_PLANES), np.bool_)
        for i, v in enumerate(views):
            n = len(v.planes)
            self.planes[i, :n] = v.planes
            self.dz[i, :n] = v.dz
            self.down[i, :n] = v.down
            self.miss_pen[i, :n] = v.miss_penalty
            self.required[i, :n] = v.required or (False,) * n
        self.window = np.array([v.slope_window for v in views])  # mrad
        self.prior = config.slope_prior * MRAD_PER_RAD
        self.chi2max = config.chi2_ndf_max
        self.maxmiss = np.array([v.max_missing for v in views], np.int64)
        self.maxhits = config.max_hits_per_plane
        self.maxc = config.max_candidates


def hit_time_windows(setup, conditions, n_sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """Per setup plane, the (first, last) reconstructed hit time (ns) a track's hit may have.

    APV planes (MM, GEM): ``t0 +- n_sigma sigma_t``; straws (the TDC time is the hit time plus
    the drift time, 0 to ``pitch / 2 / drift velocity``): ``[t0 - n sigma_t, t0 + drift_max +
    n sigma_t]``.  ``t0`` and ``sigma_t`` from the run's conditions (else the setup's); a plane
    with ``sigma_t = 0`` (no time information) or ``n_sigma = 0`` accepts every time.
    """
    lo = np.full(len(setup.planes), -np.inf)
    hi = np.full(len(setup.planes), np.inf)
    if n_sigma <= 0:
        return lo, hi
    for p in setup.planes:
        t0, sig = conditions.plane_time(p) if conditions is not None else (p.time_offset, p.time_resolution)
        if sig <= 0:
            continue
        drift = 0.5 * p.pitch / setup.readout.straw_drift_velocity if p.type == "straw" else 0.0
        lo[p.index], hi[p.index] = t0 - n_sigma * sig, t0 + drift + n_sigma * sig
    return lo, hi


def select_in_time(hits: dict, lo: np.ndarray, hi: np.ndarray) -> dict:
    """``hits`` (flat, sorted by event and plane) without the hits whose ``time`` is outside
    ``[lo, hi]`` of their plane (:func:`hit_time_windows`) or unknown (NaN): the track search
    never uses them.  Returns ``hits`` itself if every hit is in time."""
    return select_hits(hits, in_time(hits, lo, hi))


def in_time(hits: dict, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Mask of the hits whose ``time`` is inside ``[lo, hi]`` of their plane (NaN is not)."""
    t = np.asarray(hits["time"])
    plane = np.asarray(hits["plane"])
    return (t >= lo[plane]) & (t <= hi[plane])


def mm_singles(hits: dict, is_mm: np.ndarray) -> np.ndarray:
    """Mask of the candidate positions of unresolved micromegas singles (see :func:`drop_mm_singles`)."""
    return np.asarray(hits["ambiguous"], bool) & is_mm[np.asarray(hits["plane"])]


def drop_mm_singles(hits: dict, is_mm: np.ndarray) -> dict:
    """``hits`` without the candidate positions of unresolved micromegas singles (one fired
    channel: its strips in every multiplexing group, ``ambiguous`` MM hits): all but one of them
    are ghosts at the true hit's time, which a wrong track can pick up.  Straw hits (ambiguous
    by their mirror) are kept.  ``is_mm``: per setup plane, True for MM planes."""
    return select_hits(hits, ~mm_singles(hits, is_mm))


def select_hits(hits: dict, keep: np.ndarray) -> dict:
    """The hits with ``keep`` (flat, sorted by event and plane), per-event ``offsets`` recomputed,
    ``plane_offsets`` dropped (:func:`find_tracks` recomputes it).  ``hits`` itself if all kept."""
    if keep.all():
        return hits
    n = keep.size
    out = {k: (v[keep] if isinstance(v, np.ndarray) and v.ndim == 1 and v.size == n else v)
           for k, v in hits.items() if k not in ("plane_offsets", "offsets")}
    if "offsets" in hits:
        out["offsets"] = np.searchsorted(out["event"], np.arange(len(hits["offsets"]))).astype(np.int64)
    return out


# ---------------------------------------------------------------------------------------
# Normal equations of a view fit are kept packed: S = (s00, s01, s02, s11, s12, s22) of the
# symmetric 3x3 matrix sum(w r r^T), B = sum(w u r), C = sum(w u^2), with the design row
# r = (1, dz, -dz if downstream else 0) (only the first npar entries are used).
@numba.njit(cache=True, **INLINED, **NO_NRT)  # inlined into _search_view: see _track_kernel
def _solve(S, B, n, x):
    """Solve S x = B (packed symmetric S, n = 2 or 3) in closed form; False if S is singular.

    S is positive semi-definite, so 0 <= det <= the product of its diagonal (Hadamard): the
    system counts as singular when det is below 1e-12 of that product.
    """
    s00 = S[0]
    s01 = S[1]
    s11 = S[3]
    if n == 2:
        det = s00 * s11 - s01 * s01
        if not abs(det) > 1e-12 * s00 * s11:
            return False
        x[0] = (s11 * B[0] - s01 * B[1]) / det
        x[1] = (s00 * B[1] - s01 * B[0]) / det
        return True
    s02 = S[2]
    s12 = S[4]
    s22 = S[5]
    c00 = s11 * s22 - s12 * s12
    c01 = s12 * s02 - s01 * s22
    c02 = s01 * s12 - s11 * s02
    det = s00 * c00 + s01 * c01 + s02 * c02
    if not abs(det) > 1e-12 * s00 * s11 * s22:
        return False
    c11 = s00 * s22 - s02 * s02
    c12 = s01 * s02 - s00 * s12
    c22 = s00 * s11 - s01 * s01
    x[0] = (c00 * B[0] + c01 * B[1] + c02 * B[2]) / det
    x[1] = (c01 * B[0] + c11 * B[1] + c12 * B[2]) / det
    x[2] = (c02 * B[0] + c12 * B[1] + c22 * B[2]) / det
    return True


@numba.njit(cache=True, **NOT_INLINED, **NO_NRT)  # not forced inline (see _track_kernel)
def _rank(L_nh, L_key, n, order, tmp):
    """``order[:n]``: candidates by lower score, ties by more hits; stable (remaining ties keep
    the search order).  Insertion sort for short lists, bottom-up merge sort otherwise."""
    if n <= 16:
        for t in range(n):
            k = t
            while k > 0 and (L_key[order[k - 1]] > L_key[t] or (L_key[order[k - 1]] == L_key[t]
                                                                and L_nh[order[k - 1]] < L_nh[t])):
                order[k] = order[k - 1]
                k -= 1
            order[k] = t
        return
    for t in range(n):
        order[t] = t
    width = 1
    while width < n:
        for lo in range(0, n, 2 * width):
            mid = lo + width if lo + width < n else n  # min(): see waveform._min
            hi = lo + 2 * width if lo + 2 * width < n else n
            i = lo
            j = mid
            k = lo
            while i < mid and j < hi:
                a = order[i]
                b = order[j]
                if L_key[b] < L_key[a] or (L_key[b] == L_key[a] and L_nh[b] > L_nh[a]):
                    tmp[k] = b
                    j += 1
                else:
                    tmp[k] = a
                    i += 1
                k += 1
            while i < mid:
                tmp[k] = order[i]
                i += 1
                k += 1
            while j < hi:
                tmp[k] = order[j]
                j += 1
                k += 1
        for t in range(n):
            order[t] = tmp[t]
        width *= 2


@numba.njit(cache=True, **INLINED, **NO_NRT)  # inlined into _track_events: see _track_kernel
def _search_view(pos, sig, origin, starts, counts, v, v_dz, v_down, cuts, v_miss_pen, v_required, L_hits, L_nh,
                 L_key, L_chi2, L_par, best_hits, best_par, S, B, C, NH, NUP, MISS, choice, x, order, tmp, base, mark):
    """Search one view of one event.  Returns (nh, chi2, n_tracks, flags); fills best_*.

    Depth-first over the planes; level ``ip + 1`` of the workspaces (S, B, C, NH, NUP, MISS)
    holds the normal equations of the hits chosen on planes 0..l.  A branch is pruned when
    its chi2 (``C - B.x``) exceeds the loosest cut any completion could have,
    ``chi2max * (npl - missed - npar)``, plus a rounding margin.  ``cuts``: the view's and
    event's scalars, in the order unpacked below.  ``v``: the view, whose rows of ``v_dz``,
    ``v_down``, ``v_miss_pen`` and ``v_required`` are taken here (a row taken by the caller, which
    is compiled with numba's reference counting, is a new array counted in and out per view).
    """
    dz = v_dz[v]
    down = v_down[v]
    miss_pen = v_miss_pen[v]
    required = v_required[v]
    npl, npar, ref, kmin, kmax, window, prior, kprior, kprior_sig, anc_ok, anc_pos, anc_dz, vtx_va, vtx_vb, \
        kap_other, vtx_chi2max, vtx_rank, chi2max, maxmiss, maxc = cuts
    for i in range(6):
        S[0, i] = 0.0
    for i in range(3):
        B[0, i] = 0.0
    C[0] = 0.0
    NH[0] = 0
    NUP[0] = 0
    MISS[0] = 0
    for ip in range(npl):
        choice[ip] = -2
    nleaf = 0
    flags = 0
    lvl = 0
    while lvl >= 0:
        choice[lvl] += 1
        if choice[lvl] >= counts[lvl]:
            choice[lvl] = -2
            lvl -= 1
            continue
        c = choice[lvl]
        nxt = lvl + 1
        solved = False
        if c < 0:
            if MISS[lvl] + 1 > maxmiss or required[lvl]:
                continue
            for i in range(6):
                S[nxt, i] = S[lvl, i]
            for i in range(3):
                B[nxt, i] = B[lvl, i]
            C[nxt] = C[lvl]
            NH[nxt] = NH[lvl]
            NUP[nxt] = NUP[lvl]
            MISS[nxt] = MISS[lvl] + 1
        else:
            h = starts[lvl] + c
            w = 1.0 / (sig[h] * sig[h])
            u = pos[h]
            d = dz[lvl]
            wd = w * d
            wdd = wd * d
            wu = w * u
            S[nxt, 0] = S[lvl, 0] + w
            S[nxt, 1] = S[lvl, 1] + wd
            S[nxt, 3] = S[lvl, 3] + wdd
            B[nxt, 0] = B[lvl, 0] + wu
            B[nxt, 1] = B[lvl, 1] + wu * d
            if down[lvl]:
                S[nxt, 2] = S[lvl, 2] - wd
                S[nxt, 4] = S[lvl, 4] - wdd
                S[nxt, 5] = S[lvl, 5] + wdd
                B[nxt, 2] = B[lvl, 2] - wu * d
                NUP[nxt] = NUP[lvl]
            else:
                S[nxt, 2] = S[lvl, 2]
                S[nxt, 4] = S[lvl, 4]
                S[nxt, 5] = S[lvl, 5]
                B[nxt, 2] = B[lvl, 2]
                NUP[nxt] = NUP[lvl] + 1
            C[nxt] = C[lvl] + wu * u
            NH[nxt] = NH[lvl] + 1
            MISS[nxt] = MISS[lvl]
            nh = NH[nxt]
            ndn = nh - NUP[nxt]
            testable = nh >= 3 if npar == 2 else (nh >= 4 and NUP[nxt] >= 1 and ndn >= 1)
            if testable and _solve(S[nxt], B[nxt], npar, x):
                solved = True
                chi2 = C[nxt]
                for i in range(npar):
                    chi2 -= B[nxt, i] * x[i]
                if chi2 > chi2max * (npl - MISS[nxt] - npar) + 1e-6 + 1e-12 * C[nxt]:
                    continue
        if nxt < npl:
            lvl = nxt
            continue
        # ---- leaf
        nh = NH[npl]
        ndn = nh - NUP[npl]
        if nh < npar or (npar == 3 and (NUP[npl] < 1 or ndn < 1)):
            continue
        if not solved and not _solve(S[npl], B[npl], npar, x):
            continue
        if abs(x[1] - ref) > window:
            continue
        if npar == 3 and (x[2] < kmin or x[2] > kmax):
            continue
        chi2 = 0.0
        for ip in range(npl):
            if choice[ip] >= 0:
                h = starts[ip] + choice[ip]
                pred = x[0] + x[1] * dz[ip]
                if npar == 3 and down[ip]:
                    pred -= x[2] * dz[ip]
                r = (pos[h] - pred) / sig[h]
                chi2 += r * r
        if chi2 > chi2max * (nh - npar) + 1e-6:
            continue
        vchi2 = 0.0
        if anc_ok:
            d = x[0] + x[1] * anc_dz - anc_pos
            kap = x[2] if npar == 3 else kap_other
            vchi2 = d * d / (vtx_va + vtx_vb * kap * kap)
            if vchi2 > vtx_chi2max:
                continue
        if nleaf >= maxc:
            flags |= FLAG_OVERFLOW
            continue
        for ip in range(npl):
            L_hits[nleaf, ip] = starts[ip] + choice[ip] if choice[ip] >= 0 else -1
        L_nh[nleaf] = nh
        d = (x[1] - ref) / prior
        L_key[nleaf] = chi2 + d * d + vtx_rank * vchi2
        for ip in range(npl):
            if choice[ip] < 0:
                L_key[nleaf] += miss_pen[ip]
        if npar == 3 and kprior_sig > 0:
            d = (x[2] - kprior) / kprior_sig
            L_key[nleaf] += d * d
        L_chi2[nleaf] = chi2
        for i in range(3):
            L_par[nleaf, i] = x[i] if i < npar else 0.0
        nleaf += 1
    if nleaf == 0:
        return 0, np.nan, 0, flags
    _rank(L_nh, L_key, nleaf, order, tmp)
    b = order[0]
    for ip in range(npl):
        best_hits[ip] = L_hits[b, ip]
    for i in range(3):
        best_par[i] = L_par[b, i]
    # distinct candidates: greedy in rank order, no shared origin.  mark[] flags the view's
    # hits (local index base[ip] + j) whose origin an accepted candidate already uses.
    nloc = 0
    for ip in range(npl):
        base[ip] = nloc
        nloc += counts[ip]
    for q in range(nloc):
        mark[q] = False
    ntr = 0
    for t in range(nleaf):
        k = order[t]
        if t > 0 and L_nh[k] <= npar:
            continue
        clash = False
        for ip in range(npl):
            h = L_hits[k, ip]
            if h >= 0 and mark[base[ip] + h - starts[ip]]:
                clash = True
                break
        if clash:
            continue
        for ip in range(npl):
            h = L_hits[k, ip]
            if h < 0:
                continue
            o = origin[h]
            for l2 in range(npl):
                for q in range(counts[l2]):
                    if origin[starts[l2] + q] == o:
                        mark[base[l2] + q] = True
        ntr += 1
    return L_nh[b], L_chi2[b], ntr, flags


@numba.njit(cache=True, **NO_NRT)  # see _track_kernel
def _track_events(n_ev, nv, bounds, n_planes_total, pos, sig, origin, v_planes, v_dz, v_down, v_npl, v_npar, v_ref,
                  v_kmin, v_kmax, window, v_kprior, v_kprior_sig, v_anchor, v_anchor_dz, v_anchor_src_dz, v_vtx_va,
                  v_vtx_vb, v_kview, v_spot_pos, v_spot_var, v_miss_pen, v_required, v_maxmiss, scalars,
                  out_nh, out_chi2, out_ntr, out_flags, out_par, out_hits, L_hits, L_nh, L_key, L_chi2, L_par,
                  starts, counts, bh, bp, S, B, C, NH, NUP, MISS, choice, x, order, tmp, base, mark):
    """The event and view loop of :func:`_track_kernel` (its arrays, outputs and workspaces)."""
    prior, vtx_chi2max, vtx_rank, anc_miss, chi2max, maxhits, maxc = scalars
    for e in range(n_ev):
        for v in range(nv):
            npl = v_npl[v]
            busy = False
            for ip in range(npl):
                k = e * n_planes_total + v_planes[v, ip]
                starts[ip] = bounds[k]
                counts[ip] = bounds[k + 1] - bounds[k]
                if counts[ip] > maxhits:
                    busy = True
            if busy:
                out_flags[e, v] = FLAG_BUSY
                out_ntr[e, v] = -1
                continue
            src = v_anchor[v]
            anc_ok = src >= 0 and out_nh[e, src] >= v_npl[src] - anc_miss
            anc_pos = 0.0
            va = v_vtx_va[v]
            if anc_ok:
                slope = out_par[e, src, 1] - (out_par[e, src, 2] if v_npar[src] == 3 else 0.0)
                anc_pos = out_par[e, src, 0] + slope * v_anchor_src_dz[v]
            elif src >= 0 and v_spot_var[v] > 0:  # no incoming track: the beam spot
                anc_ok = True
                anc_pos = v_spot_pos[v]
                va += v_spot_var[v]
            kap_other = v_kmax[v]
            kv = v_kview[v]
            if kv >= 0:
                kap_other = out_par[e, kv, 2] if out_nh[e, kv] > 0 else v_kmax[kv]
            cuts = (npl, v_npar[v], v_ref[v], v_kmin[v], v_kmax[v], window[v], prior, v_kprior[v], v_kprior_sig[v],
                    anc_ok, anc_pos, v_anchor_dz[v], va, v_vtx_vb[v], kap_other, vtx_chi2max, vtx_rank, chi2max,
                    v_maxmiss[v], maxc)
            nh, chi2, ntr, flags = _search_view(pos, sig, origin, starts, counts, v, v_dz, v_down, cuts, v_miss_pen,
                                                v_required, L_hits, L_nh, L_key, L_chi2, L_par, bh, bp, S, B, C, NH,
                                                NUP, MISS, choice, x, order, tmp, base, mark)
            out_nh[e, v] = nh
            out_ntr[e, v] = ntr
            out_flags[e, v] = flags
            if nh > 0:
                out_chi2[e, v] = chi2
                for i in range(3):
                    out_par[e, v, i] = bp[i]
                for ip in range(npl):
                    out_hits[e, v, ip] = bh[ip]


@numba.njit(cache=True)
def _track_kernel(bounds, n_planes_total, pos, sig, origin, v_planes, v_dz, v_down, v_npl, v_npar, v_ref,
                  v_kmin, v_kmax, window, prior, v_kprior, v_kprior_sig, v_anchor, v_anchor_dz, v_anchor_src_dz,
                  v_vtx_va, v_vtx_vb, v_kview, v_spot_pos, v_spot_var, vtx_chi2max, vtx_rank, anc_miss, v_miss_pen,
                  v_required, chi2max, v_maxmiss, maxhits, maxc):
    n_ev = (bounds.shape[0] - 1) // n_planes_total
    nv = v_planes.shape[0]
    out_nh = np.zeros((n_ev, nv), np.int64)
    out_chi2 = np.full((n_ev, nv), np.nan)
    out_ntr = np.zeros((n_ev, nv), np.int64)
    out_flags = np.zeros((n_ev, nv), np.int64)
    out_par = np.full((n_ev, nv, 3), np.nan)
    out_hits = np.full((n_ev, nv, MAX_PLANES), -1, np.int64)
    # workspaces, allocated once per call
    L_hits = np.empty((maxc, MAX_PLANES), np.int64)
    L_nh = np.empty(maxc, np.int64)
    L_key = np.empty(maxc)
    L_chi2 = np.empty(maxc)
    L_par = np.empty((maxc, 3))
    starts = np.empty(MAX_PLANES, np.int64)
    counts = np.empty(MAX_PLANES, np.int64)
    bh = np.empty(MAX_PLANES, np.int64)
    bp = np.empty(3)
    S = np.zeros((MAX_PLANES + 1, 6))
    B = np.zeros((MAX_PLANES + 1, 3))
    C = np.zeros(MAX_PLANES + 1)
    NH = np.zeros(MAX_PLANES + 1, np.int64)
    NUP = np.zeros(MAX_PLANES + 1, np.int64)
    MISS = np.zeros(MAX_PLANES + 1, np.int64)
    choice = np.full(MAX_PLANES, -2, np.int64)
    x = np.zeros(3)
    order = np.empty(maxc, np.int64)
    tmp = np.empty(maxc, np.int64)
    base = np.empty(MAX_PLANES, np.int64)
    mark = np.empty(MAX_PLANES * maxhits, np.bool_)
    # the event loop is _track_events, compiled without numba's reference counting (_nrt=False: it
    # allocates nothing), which _search_view and _solve are inlined into (forceinline: by LLVM, see
    # "Inlining" in _jit.py); _rank (once per view) is not forced inline (LLVM decides; forced: no
    # measurable gain, ~1 s more cold compile; NOT_INLINED, or it would inherit _search_view's forceinline).
    # A call of _search_view per view with its ~30 array arguments cost ~250 ns per view with the
    # counting (atomic operations on each array on the way in and out), its argument passing ~25 %
    # of the search without it; inlined into this function (the third pass), the counting of the
    # arrays bound to its arguments was left in the loop
    _track_events(n_ev, nv, bounds, n_planes_total, pos, sig, origin, v_planes, v_dz, v_down, v_npl, v_npar, v_ref,
                  v_kmin, v_kmax, window, v_kprior, v_kprior_sig, v_anchor, v_anchor_dz, v_anchor_src_dz, v_vtx_va,
                  v_vtx_vb, v_kview, v_spot_pos, v_spot_var, v_miss_pen, v_required, v_maxmiss,
                  (prior, vtx_chi2max, vtx_rank, anc_miss, chi2max, maxhits, maxc),
                  out_nh, out_chi2, out_ntr, out_flags, out_par, out_hits, L_hits, L_nh, L_key, L_chi2, L_par,
                  starts, counts, bh, bp, S, B, C, NH, NUP, MISS, choice, x, order, tmp, base, mark)
    return out_nh, out_chi2, out_ntr, out_flags, out_par, out_hits


def plane_bounds(hits, n_events, n_planes):
    """Flat (n_events * n_planes + 1) start indices of the hits of (event, plane)."""
    key = hits["event"] * n_planes + hits["plane"]
    return np.searchsorted(key, np.arange(n_events * n_planes + 1)).astype(np.int64)


def find_tracks(hits, n_events, n_planes, vt: ViewTables):
    """Run the kernel on flat ``hits`` (sorted by event, plane); arrays of shape (n_events, n_views, ...)."""
    bounds = hits.get("plane_offsets")
    if bounds is None or len(bounds) != n_events * n_planes + 1:
        bounds = plane_bounds(hits, n_events, n_planes)
    nh, chi2, ntr, flags, par, sel = _track_kernel(
        bounds, n_planes, hits["pos"], hits["sigma"], hits["origin"], vt.planes, vt.dz, vt.down, vt.nplanes,
        vt.npar, vt.ref_slope, vt.kmin, vt.kmax, vt.window, vt.prior, vt.kprior, vt.kprior_sig, vt.anchor, vt.anchor_dz,
        vt.anchor_src_dz, vt.vertex_va, vt.vertex_vb, vt.kappa_view, vt.spot_pos, vt.spot_var, vt.vertex_chi2max,
        vt.vertex_rank_weight, vt.anchor_max_missing, vt.miss_pen, vt.required, vt.chi2max, vt.maxmiss, vt.maxhits,
        vt.maxc)
    return {"nh": nh, "chi2": chi2, "n_tracks": ntr, "flags": flags, "par": par, "hits": sel}


# ---------------------------------------------------------------------------------------
def search_view_reference(view_hits, view: View, vt: ViewTables, anchor_pos=None, kappa_other=None):
    """Slow twin: exhaustive enumeration for one view of one event.

    ``anchor_pos``: position (mm) of the anchoring track at the anchor z, or None;
    ``kappa_other`` (non-bend views with an anchor): the deflection (mrad) giving the
    momentum of the vertex variance, default the station's p_min (:func:`anchor_of`).

    ``view_hits`` is a list (one per plane of the view) of lists of ``(index, pos, sigma,
    origin)``.  Returns ``(nh, chi2, n_tracks, params(3), chosen indices)`` or ``nh = 0``.
    """
    import itertools

    npl, npar = len(view.planes), view.npar
    if any(len(h) > vt.maxhits for h in view_hits):
        return 0, float("nan"), -1, [float("nan")] * 3, [-1] * npl
    cands = []
    options = [[None] + list(h) for h in view_hits]
    for combo in itertools.product(*options):
        if sum(c is None for c in combo) > view.max_missing:
            continue
        if any(combo[ip] is None for ip, req in enumerate(view.required) if req):
            continue
        used = [(ip, c) for ip, c in enumerate(combo) if c is not None]
        nup = sum(not view.down[ip] for ip, _ in used)
        nh = len(used)
        if nh < npar or (npar == 3 and (nup < 1 or nh - nup < 1)):
            continue
        A = np.array([[1.0, view.dz[ip], -view.dz[ip] if view.down[ip] else 0.0][:npar] for ip, _ in used])
        y = np.array([c[1] for _, c in used])
        s = np.array([c[2] for _, c in used])
        Aw, yw = A / s[:, None], y / s
        if np.linalg.matrix_rank(Aw) < npar:
            continue
        par = np.linalg.lstsq(Aw, yw, rcond=None)[0]
        chi2 = float(np.sum((yw - Aw @ par) ** 2))
        if chi2 > vt.chi2max * (nh - npar) + 1e-6 or abs(par[1] - view.ref_slope) > view.slope_window:
            continue
        if npar == 3 and not (view.kappa_min <= par[2] <= view.kappa_max):
            continue
        score = chi2 + ((par[1] - view.ref_slope) / vt.prior) ** 2
        if npar == 3 and view.kappa_prior_sigma > 0:
            score += ((par[2] - view.kappa_prior) / view.kappa_prior_sigma) ** 2
        pos0, va = anchor_pos, view.vertex_va
        if pos0 is None and view.anchor_view >= 0 and view.spot_var > 0:  # no incoming track: beam spot
            pos0, va = view.spot_pos, va + view.spot_var
        if pos0 is not None:
            kap = par[2] if npar == 3 else (view.kappa_max if kappa_other is None else kappa_other)
            vchi2 = (par[0] + par[1] * view.anchor_dz - pos0) ** 2 / (va + view.vertex_vb * kap**2)
            if vchi2 > vt.vertex_chi2max:
                continue
            score += vt.vertex_rank_weight * vchi2
        score += sum(view.miss_penalty[ip] for ip, c in enumerate(combo) if c is None)
        cands.append((-nh, score, nh, chi2, list(par) + [0.0] * (3 - npar),
                      [c[0] if c is not None else -1 for c in combo], {c[3] for _, c in used}))
    if not cands:
        return 0, float("nan"), 0, [float("nan")] * 3, [-1] * npl
    cands.sort(key=lambda c: (c[1], c[0]))  # score, then more hits; stable: search order
    taken, ntr = set(), 0
    for i, c in enumerate(cands):
        if not (c[6] & taken) and (i == 0 or c[2] > npar):
            taken |= c[6]
            ntr += 1
    best = cands[0]
    return best[2], best[3], ntr, best[4], best[5]


def anchor_of(res, e: int, v: int, vt: ViewTables):
    """(anchor position mm or None, kappa_other mrad or None) of view ``v`` in event ``e`` from
    the kernel's results ``res`` (what :func:`_track_kernel` uses; for the twin's tests)."""
    view = vt.views[v]
    if view.anchor_view < 0:
        return None, None
    anchor = None
    if res["nh"][e, view.anchor_view] >= len(vt.views[view.anchor_view].planes) - vt.anchor_max_missing:
        src = vt.views[view.anchor_view]
        ps = res["par"][e, view.anchor_view]
        anchor = ps[0] + (ps[1] - (ps[2] if src.bend else 0.0)) * view.anchor_src_dz
    kappa = None
    if view.kappa_view >= 0:
        kv = view.kappa_view
        kappa = res["par"][e, kv, 2] if res["nh"][e, kv] > 0 else vt.views[kv].kappa_max
    return anchor, kappa
