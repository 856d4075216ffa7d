"""The lone beam muon on truth: every used hit of the outgoing bend-view track classified
against the simulator's true crossings, and the samples of classified muons.

:func:`classify` labels each tracked muon's used hits (``src``: own right hit, own wrong twin,
far, pile-up muon; :data:`SOURCE_NAMES`) and keeps the fit's figures per muon
(:data:`MUON_FIELDS`); :func:`simulate_parts` makes a stratum's sample in parts (one dask task
each, the classification kept, the raw file deleted) and :func:`load_muons` joins them;
:func:`view_geometry` gives the bend view's planes as the reconstruction fits them.  The
estimates made from these samples are in :mod:`na64reco.background.lone_muon` (the classes of used hits
are described there).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from na64reco import units
from na64reco.background.fake_kicks import HARD_P_OUT, tracking_cuts_and_box
from na64reco.errors import ConfigError
from na64reco.io.raw import open_raw
from na64reco.reco.tracking import reconstruct_tracks
from na64reco.selection.cuts import Columns

#: a used hit within this many plane resolutions of the true crossing is the muon's own
#: (nearest of its twin group); a plane with no usable hit that close is "missing"
CORRECT_SIGMAS = 5.0


#: twins of a hit (same origin) sit next to it in the hit table: a straw hit and its mirror,
#: a micromegas single and its 4 ghosts (5 multiplexing groups)
MAX_TWIN_OFFSET = 5


#: the selection whose signal box (p_out below its upper edge) the estimates are made for
SELECTION = "na64mu_invisible"


#: fields saved per tracked muon (:func:`classify`)
MUON_FIELDS = ("p_true", "p_reco", "kappa", "kappa_true", "sigma_kappa", "dk_wrong", "used", "missing", "wrong",
               "far", "fake", "dev", "gain")


#: per tracked muon, kept when every classified part has them (``src``, ``src_muon``: the
#: source of each used hit, :func:`classify`; parts classified before they existed lack them)
OPTIONAL_FIELDS = ("htime", "htime_err", "src", "src_muon")


#: per hard muon (tracked or not), kept when every part has them: the out-of-time beam muons of the
#: event on truth (:func:`classify`)
OPTIONAL_HARD_FIELDS = ("pu_sep", "pu_time", "hard_p_true")


#: source codes of a used hit (``src`` of :func:`classify`): 0 no hit used on the plane
SRC_RIGHT, SRC_TWIN, SRC_FAR, SRC_PILEUP = 1, 2, 3, 4


SOURCE_NAMES = {SRC_RIGHT: "own right", SRC_TWIN: "own wrong twin", SRC_FAR: "far (no truth within 5 resolutions)",
                SRC_PILEUP: "pile-up muon"}


def _true_coordinates(events, crossings: dict, n_planes: int) -> np.ndarray:
    """(events, planes) true measured coordinate of the event's own particle (NaN: none)."""
    ev = np.asarray(events["event"], np.int64)
    order = np.argsort(ev)
    u = np.full((ev.size, n_planes), np.nan)
    row = order[np.clip(np.searchsorted(ev, crossings["event"], sorter=order), 0, max(ev.size - 1, 0))]
    ok = ev[row] == crossings["event"] if ev.size else np.zeros(0, bool)
    u[row[ok], np.asarray(crossings["plane"], np.int64)[ok]] = crossings["u"][ok]
    return u


def kick_gain(dz: np.ndarray, down: np.ndarray, sigma: np.ndarray, used: np.ndarray):
    """Weighted least-squares kick fit of :mod:`.reco.tracking.tracks` (rows ``[1, dz, -dz
    down]``, weights 1/sigma^2 of the used planes), batched over muons: returns the sigma of
    kappa from the fit's covariance (mrad) and the gains ``g`` (muons, planes) with
    ``kappa = sum_j g_j u_j``.  ``dz`` (planes,) in m, ``down`` (planes,), ``sigma`` and
    ``used`` (muons, planes)."""
    a = np.stack(np.broadcast_arrays(np.ones_like(dz), dz, -dz * down), axis=-1)  # (planes, 3)
    w = np.where(used, 1.0 / np.where(used, sigma, 1.0) ** 2, 0.0)  # (muons, planes)
    m = np.einsum("pi,np,pj->nij", a, w, a)
    cov = np.linalg.inv(m)
    gain = np.einsum("nj,pj,np->np", cov[:, 2, :], a, w)
    return np.sqrt(cov[:, 2, 2]), gain


def classify(path, crossings_path, setup, conditions, selection) -> dict[str, np.ndarray]:
    """Tracked hard beam muons of a simulated (0, 0) file, classified on truth (module doc).

    ``crossings_path``: the ``.npz`` of ``simulate(..., true_crossings=)`` for ``path``.
    Returns :data:`MUON_FIELDS` per tracked muon (bit masks over the planes of the MS2 bend
    view, in z order) plus, per hard muon, ``all_missing`` and ``all_tracked`` (the missing
    planes whether tracked or not) and ``view_planes`` (the view's plane names)."""
    raw = open_raw(path)
    events = raw.events()
    crossings = dict(np.load(crossings_path))
    r = reconstruct_tracks(events, setup, conditions, source=str(path), return_internals=True)
    hits, res, views = r["_hits"], r["_tracks"], r["_views"]
    station = next((v for v in views if v.role == "out" and v.bend), None)
    if station is None:
        raise ConfigError(f"{path}: setup {setup.name!r} has no outgoing bend view to classify")
    ib = views.index(station)
    planes = np.asarray(station.planes)
    npl = planes.size
    cols = Columns(None, {k: np.asarray(v) for k, v in r.items() if not k.startswith("_")})
    truth = raw.truth()
    p_true = np.asarray(truth["p_out"], float)
    hard = p_true > HARD_P_OUT
    ok, box = tracking_cuts_and_box(cols, selection)
    tracked = hard & ok
    fake = tracked & box
    n_setup = len(setup.planes)
    u_true = _true_coordinates(events, crossings, n_setup)[:, planes]
    pos, sig, origin, hplane = hits["pos"], hits["sigma"], hits["origin"], np.asarray(hits["plane"], np.int64)
    usable = r["_usable"]
    plane_off = np.asarray(hits["plane_offsets"], np.int64)
    n = p_true.size
    ev_of = np.searchsorted(plane_off[::n_setup], np.arange(pos.size), side="right") - 1
    # missing: no usable hit of the plane within CORRECT_SIGMAS of the truth
    col = np.full(n_setup, -1)
    col[planes] = np.arange(npl)
    j_of = col[hplane]
    on = (j_of >= 0) & usable
    close = on.copy()
    close[on] = np.abs(pos[on] - u_true[ev_of[on], j_of[on]]) < CORRECT_SIGMAS * sig[on]
    near = np.zeros((n, npl), bool)
    near[ev_of[close], j_of[close]] = True
    missing = ~near
    sel = np.asarray(res["hits"][:, ib, :npl])[tracked]  # used hit index per plane, -1 none
    used = sel >= 0
    t = np.flatnonzero(tracked)
    ut = u_true[t]
    h = np.maximum(sel, 0)
    best = h.copy()  # nearest twin of the used hit to the truth
    dbest = np.abs(pos[h] - ut)
    for off in range(-MAX_TWIN_OFFSET, MAX_TWIN_OFFSET + 1):
        if off == 0:
            continue
        k = np.clip(h + off, 0, pos.size - 1)
        same = (origin[k] == origin[h]) & (hits["plane"][k] == hits["plane"][h]) & (np.abs(k - h) == abs(off))
        same &= ev_of[k] == ev_of[h]
        d = np.abs(pos[k] - ut)
        better = same & (d < dbest)
        best = np.where(better, k, best)
        dbest = np.where(better, d, dbest)
    wrong = used & (best != h)
    far = used & ~(dbest < CORRECT_SIGMAS * sig[best])
    wrong &= ~far
    # the source of each used hit: the muon's own (right, wrong twin), an out-of-time beam muon's, or none
    from na64reco.background.pileup_truth import pileup_sources, pileup_truth_by_event

    pu_u, pu_t = pileup_truth_by_event(events, crossings, n_setup)
    pu_u = pu_u[:, :, planes]
    src, src_muon = pileup_sources(used, wrong, far, h, hits, ev_of, pu_u[t])
    dz = np.asarray(station.dz, float)
    down = np.asarray(station.down, float)
    sigma_k, gain = kick_gain(dz, down, np.where(used, sig[h], 1.0), used)
    delta = np.where(wrong, pos[h] - pos[best], 0.0)
    kappa = np.asarray(res["par"][:, ib, 2])[tracked]
    c = conditions.magnet(setup, station.station).momentum(1e-3) / units.GeV  # p (GeV) at 1 mrad
    bits = 1 << np.arange(npl)
    return {
        "p_true": p_true[t], "p_reco": np.asarray(cols["p_out"])[t], "kappa": kappa, "kappa_true": c / p_true[t],
        "sigma_kappa": sigma_k, "dk_wrong": np.sum(gain * delta, axis=1),
        "used": (used * bits).sum(1), "missing": (missing[t] * bits).sum(1), "wrong": (wrong * bits).sum(1),
        "far": (far * bits).sum(1), "fake": fake[t],
        "dev": np.where(used, pos[h] - ut, np.nan).astype(np.float32), "gain": gain.astype(np.float32),
        "all_missing": (missing[hard] * bits).sum(1), "all_tracked": tracked[hard],
        "view_planes": np.array([setup.planes[p].name for p in planes]), "c_gev_mrad": np.array(c),
        "beam_energy_gev": np.array(setup.beam.energy / units.GeV),
        "view_straw_pitch": np.array([setup.planes[p].pitch if setup.planes[p].type == "straw" else 0.0
                                      for p in planes]),
        "max_missing": np.array(_max_missing(setup)),
        # reconstructed time (ns) and its error of each used hit (NaN: none; straws hold the drift time)
        "htime": np.where(used, np.asarray(hits["time"], float)[h], np.nan).astype(np.float32),
        "htime_err": np.where(used, np.asarray(hits["time_error"], float)[h], np.nan).astype(np.float32),
        # per used hit its source (SRC_*) and, for a pile-up muon's hit, which kept muon (-1: none)
        "src": src, "src_muon": src_muon,
        # per hard muon: the kept out-of-time beam muons' true crossings minus the muon's own (mm;
        # NaN: no such muon or crossing) and their times (ns)
        "pu_sep": (pu_u[hard] - u_true[hard][:, None, :]).astype(np.float32),
        "pu_time": pu_t[hard].astype(np.float32), "hard_p_true": p_true[hard].astype(np.float32),
    }


def view_geometry(setup, conditions) -> dict:
    """The outgoing bend view's fit geometry: ``dz`` (m), ``down``, ``sigma`` (mm, the plane
    resolutions the fit weights with) per plane in z order and the chi2/ndf cut; the track-time
    settings and ``near_dt_min_ns``, the smallest |time| of a pile-up muon in the near times
    (:func:`na64reco.background.fake_kicks.near_times`)."""
    from na64reco.background.fake_kicks import near_times
    from na64reco.reco.tracking.config import load_tracking_config
    from na64reco.reco.tracking.tracks import make_views

    cfg = load_tracking_config(setup)
    near = near_times(setup, conditions)
    view = next(v for v in make_views(setup, cfg, conditions) if v.role == "out" and v.bend)
    return {"dz": np.asarray(view.dz, float), "down": np.asarray(view.down, float),
            "sigma": np.array([setup.planes[p].resolution for p in view.planes], float),
            "chi2_ndf_max": float(cfg.chi2_ndf_max), "planes": [setup.planes[p].name for p in view.planes],
            # the planes in the common track time (APV: GEM, MM; straws hold the drift time)
            "timed": np.array([setup.planes[p].type != "straw" for p in view.planes], bool),
            "track_time_prob_min": float(cfg.track_time_prob_min), "track_time_outliers": int(cfg.track_time_outliers),
            # the smallest |time| (ns) of an out-of-time beam muon in the near times N (2022: 15)
            "near_dt_min_ns": float(min(min(abs(a), abs(b)) for a, b in near)) if near else float("inf")}


def set_reach(geometry: dict, used: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For one pattern of used planes: the gains ``g`` (kappa = g . u), and for every set S of
    planes (bit code 0..2^planes-1) the largest deflection change outliers on S can make per unit
    of the fit's standardized residual norm, ``R_S = max g_S . d`` over ``d`` supported on S with
    ``|W^1/2 (I - H) d| <= 1`` (inf if some d on S leaves no residual: the other used planes do
    not fix the three parameters); with the chi2 cut, ``|W^1/2 (I - H) d| <= sqrt(chi2) +``
    the right hits' residual norm."""
    dz, down, sig = geometry["dz"], geometry["down"], geometry["sigma"]
    npl = dz.size
    a = np.stack([np.ones(npl), dz, -dz * down], axis=1)[used]
    w = 1.0 / sig[used] ** 2
    cov = np.linalg.inv(a.T @ (a * w[:, None]))
    g_used = (cov @ (a * w[:, None]).T)[2]
    h = (a @ cov @ a.T) * w[None, :]  # hat matrix (rows: fitted value of plane i per u_j)
    v = np.sqrt(w)[:, None] * (np.eye(used.sum()) - h)  # W^1/2 (I - H): residual per unit deviation
    idx = np.flatnonzero(used)
    reach = np.full(1 << npl, np.inf)
    reach[0] = 0.0
    for code in range(1, 1 << npl):
        in_s = ((code >> np.arange(npl)) & 1).astype(bool)
        if not used[in_s].all():
            continue
        cols = np.flatnonzero(np.isin(idx, np.flatnonzero(in_s)))
        vs = v[:, cols]
        m = vs.T @ vs
        if np.linalg.matrix_rank(m, tol=1e-9 * max(np.trace(m), 1e-300)) < cols.size:
            continue
        gs = g_used[cols]
        reach[code] = float(np.sqrt(gs @ np.linalg.solve(m, gs)))
    g = np.zeros(npl)
    g[idx] = g_used
    return g, reach


def _max_missing(setup) -> int:
    """Planes the outgoing station's bend-view candidates may miss (the view's own rule).  Its
    ``required_planes`` are not imposed on the patterns built from it
    (:func:`na64reco.background.pileup_truth.patterns`): a superset of the search's, so bounds stay upper ones."""
    from na64reco.reco.tracking.config import load_tracking_config
    from na64reco.sim.transport import outgoing_magnet

    m = outgoing_magnet(setup)
    return int(load_tracking_config(setup).max_missing_of(m.name, m.bend_plane))


def load_muons(paths) -> dict[str, np.ndarray]:
    """Concatenate the per-file outputs of :func:`classify` saved as ``.npz``."""
    parts = [dict(np.load(p)) for p in paths]
    if not parts:
        raise ConfigError("lone muon study: no classified file given")
    out = {k: np.concatenate([p[k] for p in parts]) for k in (*MUON_FIELDS, "all_missing", "all_tracked")}
    for k in (*OPTIONAL_FIELDS, *OPTIONAL_HARD_FIELDS):  # in every part or left out (classified before they existed)
        if all(k in p for p in parts):
            arrays = [p[k] for p in parts]
            if k in ("pu_sep", "pu_time"):  # parts keeping fewer pile-up muons: padded with none (NaN)
                kept = max(a.shape[1] for a in arrays)
                arrays = [np.pad(a, [(0, 0), (0, kept - a.shape[1])] + [(0, 0)] * (a.ndim - 2), constant_values=np.nan)
                          for a in arrays]
            out[k] = np.concatenate(arrays)
    for k in ("view_planes", "c_gev_mrad", "max_missing", "view_straw_pitch", "beam_energy_gev"):
        out[k] = parts[0][k]
    return out


def popcount(bits: np.ndarray) -> np.ndarray:
    b = np.asarray(bits, np.int64)
    return sum(((b >> j) & 1) for j in range(16))


def simulate_stratum(path: str, run: int, n: int, seed: int, setup_name: str = "na64mu", count: int = 0,
                     pileup: int = 0, **forcing):
    """Simulate ``n`` beam muons of stratum (``count`` noise clusters in R, ``pileup`` beam muons in
    N) of ``run`` into ``path`` with the calibration trigger and the true crossings beside it
    (``<path stem>.crossings.npz``); ``forcing``: further ``simulate`` options (e.g.
    ``forced_soft``).  Returns the setup, the conditions and the crossings' path."""
    from na64reco.background.fake_kicks import bend_region, near_times
    from na64reco.conditions import load_conditions
    from na64reco.geometry import load_setup
    from na64reco.sim.forced_noise import ForcedNoise
    from na64reco.sim.generate import simulate
    from na64reco.sim.occupancy import ForcedPileup

    setup = load_setup(setup_name, run=run)
    cond = load_conditions(setup, run)
    cross = Path(path).with_suffix(".crossings.npz")
    simulate(setup, n, seed, run, path, process="beam", trigger="calibration",
             forced_noise=ForcedNoise.of(bend_region(setup, cond), count),
             forced_pileup=ForcedPileup.of(near_times(setup, cond), pileup), true_crossings=cross, **forcing)
    return setup, cond, cross


def _part(path: str, run: int, n: int, seed: int, setup_name: str = "na64mu",
          selection: str = "na64mu_invisible", count: int = 0, pileup: int = 0) -> str:
    """Simulate one part of the stratum (``count`` noise clusters in R, ``pileup`` beam muons in
    N; default the (0, 0) stratum) unless its classification exists, classify its tracked muons,
    keep ``<part>.muons.npz`` and delete the raw file (a dask task)."""
    from na64reco.selection.schema import load_selection

    out = Path(path).with_suffix(".muons.npz")
    if out.exists():
        return str(out)
    setup, cond, cross = simulate_stratum(path, run, n, seed, setup_name, count, pileup)
    return keep_part(classify(path, cross, setup, cond, load_selection(selection)), path, cross, out)


def keep_part(fields: dict, path, cross: Path, out: Path) -> str:
    """Write a part's classification ``fields`` to ``out`` (through a temporary file, so a killed
    task leaves no half-written part that a rerun would take as done), then delete the part's raw
    file ``path`` and its crossings ``cross``; returns ``out``."""
    tmp = Path(path).with_suffix(".part.npz")
    np.savez(tmp, **fields)
    tmp.rename(out)
    Path(path).unlink()
    cross.unlink()
    return str(out)


def simulate_parts(run: int, events: int, seed: int, workdir, *, part_events: int = 100_000, client=None,
                   stratum: tuple[int, int] = (0, 0)) -> list[str]:
    """The sample of ``stratum`` (m noise clusters in R, k beam muons in N; default (0, 0)) of
    ``run`` in parts of at most ``part_events`` muons (part j: seed ``seed x 1000 + j``, so a
    larger sample contains a smaller one; another stratum adds ``10^6 x (10 m + k)`` to it, a
    stream of its own), simulated and classified (:func:`_part`) on the dask ``client`` if given;
    returns the classification files."""
    if part_events < 1 or events < 1 or -(-events // part_events) > 1000:
        raise ConfigError(f"lone muon study: {events} muons in parts of {part_events}: need 1-1000 parts")
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    sizes = [min(part_events, events - i) for i in range(0, events, part_events)]
    # part j has seed seed x 1000 + j whatever the total: a larger sample reuses the smaller one's parts
    m, k = (int(x) for x in stratum)
    if m < 0 or k < 0 or m > 9 or k > 9:
        raise ConfigError(f"lone muon study: stratum {stratum!r}: need 0 <= m, k <= 9")
    tag = "" if (m, k) == (0, 0) else f"_s{m}{k}"  # the (0, 0) names of the lone-muon cache unchanged
    offset = 0 if (m, k) == (0, 0) else 1_000_000 * (10 * m + k)
    jobs = [(str(workdir / f"lone_run{run}_{seed}{tag}_{part_events}_p{j}.root"), run, s, seed * 1000 + offset + j,
             "na64mu", "na64mu_invisible", m, k)
            for j, s in enumerate(sizes)]
    if client is not None:
        return client.gather(client.map(_part, *zip(*jobs, strict=True), pure=False))
    return [_part(*j) for j in jobs]


def box_p_out(selection=SELECTION) -> float:
    """The upper edge (GeV) of the signal box ``p_out < max`` of ``selection`` (a name or a
    :class:`~na64reco.selection.schema.Selection`)."""
    from na64reco.selection.schema import load_selection

    sel = load_selection(selection) if isinstance(selection, str) else selection
    box = sel.signal_box
    if box.variable != "p_out" or box.max is None or box.min is not None:
        raise ConfigError(f"selection {sel.name!r}: the lone-muon estimate needs a signal box p_out < max, "
                          f"got {box.text or box}")
    return float(box.max)


def _box_sigmas(m: dict, box: float | None = None) -> np.ndarray:
    """Distance of each muon's true deflection to the box edge, ``C / box - kappa_true`` (mrad);
    ``box`` (GeV) by default that of :data:`SELECTION`."""
    return float(m["c_gev_mrad"]) / (box_p_out() if box is None else box) - m["kappa_true"]
