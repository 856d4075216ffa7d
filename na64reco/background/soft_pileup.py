"""The pile-up-set term of a stratum with a near pile-up muon, measured with the muon forced soft.

In a stratum (m, k >= 1) of :mod:`na64reco.background.fake_kicks` the outgoing search may use the hits of
a near out-of-time beam muon B.  What can put such a track in the box p_out < 80 GeV is B
itself being soft: a beam muon that lost a large part of its energy in the ECAL (the active
target), ~3e-3 of them.  :func:`na64reco.background.pileup_truth.pileup_set_bound` bounds it with the
rate at which the search took B's hits in the natural sample (B hard in all but ~3e-3 of it)
times the largest mean box probability of a set of B's hits, assuming the choice does not
depend on B's momentum.  Here the experiment's way instead: biased sampling.

* **Soft sample** (:func:`simulate_soft_parts`): the stratum simulated with every near
  muon forced into R = "a radiative loss in the ECAL with v >= ``v_min``" (p_B below ~120 GeV
  for ``v_min`` 0.25; :mod:`na64reco.sim.forced_soft`, weight ``P_R`` per muon, closed form),
  reconstructed and classified on truth (:func:`na64reco.background.lone_muon_truth.classify`) with B's true
  momentum (``pu_p``) and which kept muon is the forced one (``pu_near``).
* **Direct count** (:func:`soft_summary`): fakes (tracked hard muons with every cut and the box)
  and counts with the box edge moved up; the search's choice of B's hits by number of planes in
  bins of p_B, against the hard-B rate of the natural sample (:func:`choice_table`).
* **The term** (:func:`soft_term`): ``P_R x (fakes, 90 % CL upper if none) / hard muons``, per
  tracked muon of the natural sample (``x hard / tracked`` there) so that it adds to
  :func:`na64reco.background.pileup_truth.pileup_estimate`'s bounds; the muons outside R (B hard) keep
  the set bound, with the box probabilities averaged over the natural muons whose B is not soft
  (:func:`kick_momentum` from B's true crossings: a B below ``SOFT_SPLIT_GEV`` is R's).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from na64reco.background.lone_muon_truth import SELECTION, SRC_PILEUP, load_muons
from na64reco.errors import ConfigError

#: a pile-up muon whose momentum from its true crossings (:func:`kick_momentum`) is below this (GeV)
#: is counted in the forced region R (v >= 0.25 of a 160 GeV muon: p below ~120 GeV, the beam's
#: spread and the ECAL's ionisation aside); between it and R's edge B is in both terms (conservative)
SOFT_SPLIT_GEV = 100.0
#: the forced region of the soft sample: a loss of at least this fraction of B's energy in the ECAL
DEFAULT_V_MIN = 0.25
#: bins of the soft muon's momentum (GeV) for the search's choice
P_BINS = (0.0, 40.0, 80.0, 100.0, 130.0)
#: box edges (GeV): the box and moved up, for the trend of the direct counts
EDGES = (80.0, 100.0, 120.0, 140.0)
#: per part, the fields kept besides those of :func:`na64reco.background.lone_muon_truth.classify`
SOFT_FIELDS = ("pu_p", "pu_near")
#: per hard muon, kept by parts simulated with the forced muon's deposits (2026-11-30, issue 9):
#: which of :data:`CALO_CUTS` the event passes (bit i: cut i), its reconstructed ECAL energy (GeV)
#: and master time (ns), the forced muon's time (ns) and true ECAL deposit (GeV)
CALO_FIELDS = ("calo_pass", "ecal_energy", "event_time", "b_time", "b_e_ecal")
#: the cuts of the selection after the tracking ones (the trigger bit aside), in the order of the
#: bits of ``calo_pass``: the deflected-muon counters behind the HCAL, the calorimeters and the veto
CALO_CUTS = ("s4_fired", "smu_fired", "ecal_mip", "no_veto", "no_vhcal", "hcal_mip")
#: those counted with the fakes: not S4 / Smu, which the physics trigger requires and an
#: unscattered muon misses (the strata scale the calibration-triggered muons to the muons the
#: physics trigger keeps per MOT, :func:`na64reco.background.pileup_truth.pileup_estimate`), so they are
#: already in the weight
COUNTED_CALO_CUTS = ("ecal_mip", "no_veto", "no_vhcal", "hcal_mip")


def soft_part(path: str, run: int, n: int, seed: int, v_min: float = DEFAULT_V_MIN, v_max: float = 1.0,
              count: int = 0, pileup: int = 1, setup_name: str = "na64mu", selection: str = SELECTION) -> str:
    """Simulate one part of stratum (``count``, ``pileup``) with the near muons forced soft
    (:class:`na64reco.sim.forced_soft.ForcedSoft` ``[v_min, v_max)``) unless its classification
    exists, classify it, keep ``<part>.soft.npz`` (with ``pu_p``, ``pu_near`` per hard muon and
    the weight's figures) and delete the raw and crossing files (a dask task)."""
    from na64reco.background.fake_kicks import HARD_P_OUT
    from na64reco.background.lone_muon_truth import classify, keep_part, simulate_stratum
    from na64reco.background.pileup_truth import pileup_muon_field_by_event
    from na64reco.io.raw import open_raw
    from na64reco.selection.schema import load_selection
    from na64reco.sim.forced_soft import ForcedSoft, soft_weight
    from na64reco.sim.params import load_sim_params

    out = Path(path).with_suffix(".soft.npz")
    if out.exists():
        return str(out)
    soft = ForcedSoft.of(v_min, v_max)
    setup, cond, cross = simulate_stratum(path, run, n, seed, setup_name, count, pileup, forced_soft=soft)
    res = classify(path, cross, setup, cond, load_selection(selection))
    crossings = dict(np.load(cross))
    raw = open_raw(path)
    events = raw.events()
    hard = np.asarray(raw.truth()["p_out"], float) > HARD_P_OUT
    prm = load_sim_params(setup)
    w = soft_weight(crossings, {"probability": soft.probability(prm)})
    near = pileup_muon_field_by_event(events, crossings, "pileup_muon_near") == 1
    res |= {"pu_p": pileup_muon_field_by_event(events, crossings, "pileup_muon_p")[hard].astype(np.float32),
            "pu_near": near[hard],
            **calo_fields(events, crossings, near, setup, cond, load_selection(selection), hard),
            "p_region": np.array(w["p_region"]), "near_muons": np.array(w["near_muons"]),
            "near_forced": np.array(w["forced"]), "v_min": np.array(v_min), "v_max": np.array(v_max),
            "events": np.array(n)}
    return keep_part(res, path, cross, out)


def calo_fields(events, crossings: dict, near: np.ndarray, setup, cond, selection, hard: np.ndarray) -> dict:
    """:data:`CALO_FIELDS` per hard muon: the calorimeter cuts (:data:`CALO_CUTS`) on the event's
    reconstructed calorimeters (:func:`na64reco.reco.calo.reconstruct_calo`, the forced muon's
    pulses in its waveforms) and the forced muon's time and ECAL deposit (NaN: none kept)."""
    from na64reco.background.pileup_truth import pileup_muon_field_by_event
    from na64reco.reco.calo import reconstruct_calo
    from na64reco.selection.cuts import Columns, cut_mask

    calo = reconstruct_calo(events, setup, cond)
    cols = Columns(None, {k: np.asarray(v) for k, v in calo.items()})
    cuts = {c.name: c for c in selection.cuts}
    passed = np.zeros(len(calo["ecal_energy"]), np.uint8)
    for i, name in enumerate(CALO_CUTS):
        passed |= cut_mask(cols, cuts[name]).astype(np.uint8) << i

    def of_near(key):
        v = pileup_muon_field_by_event(events, crossings, key)
        return np.where(near.any(1), v[np.arange(near.shape[0]), np.argmax(near, 1)], np.nan)

    return {"calo_pass": passed[hard], "ecal_energy": np.asarray(calo["ecal_energy"], np.float32)[hard],
            "event_time": np.asarray(calo["event_time"], np.float32)[hard],
            "b_time": of_near("pileup_muon_time")[hard].astype(np.float32),
            "b_e_ecal": of_near("pileup_muon_e_ecal")[hard].astype(np.float32)}


def calo_passes(m: dict, cuts=COUNTED_CALO_CUTS) -> np.ndarray:
    """Per hard muon: passes every cut of ``cuts`` (names of :data:`CALO_CUTS`; True for parts
    simulated without the forced muon's deposits)."""
    if "calo_pass" not in m:
        return np.ones(np.asarray(m["all_tracked"]).size, bool)
    mask = sum(1 << CALO_CUTS.index(c) for c in cuts)
    return (np.asarray(m["calo_pass"], np.uint8) & mask) == mask


def simulate_soft_parts(run: int, events: int, seed: int, workdir, *, part_events: int = 50_000, client=None,
                        stratum: tuple[int, int] = (0, 1), v_min: float = DEFAULT_V_MIN,
                        v_max: float = 1.0) -> list[str]:
    """The soft sample of ``stratum`` in parts (part j: seed ``seed x 1000 + 10^8 + 10^6 (10 m + k)
    + j``: a stream apart from the natural strata's of :func:`na64reco.background.lone_muon_truth.simulate_parts`),
    on the dask ``client`` if given; returns the part files."""
    m, k = (int(x) for x in stratum)
    if k < 1 or m < 0 or m > 9 or k > 9:
        raise ConfigError(f"soft pile-up sample: stratum {stratum!r}: need 0 <= m <= 9 and 1 <= k <= 9")
    if part_events < 1 or events < 1 or -(-events // part_events) > 1000:
        raise ConfigError(f"soft pile-up sample: {events} muons in parts of {part_events}: need 1-1000 parts")
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    sizes = [min(part_events, events - i) for i in range(0, events, part_events)]
    tag = f"v{round(v_min * 1000):03d}-{round(v_max * 1000):04d}"
    jobs = [(str(workdir / f"soft_run{run}_{seed}_s{m}{k}_{tag}_{part_events}_p{j}.root"), run, s,
             seed * 1000 + 100_000_000 + 1_000_000 * (10 * m + k) + j, v_min, v_max, m, k)
            for j, s in enumerate(sizes)]
    if client is not None:
        return client.gather(client.map(soft_part, *zip(*jobs, strict=True), pure=False))
    return [soft_part(*j) for j in jobs]


def load_soft(paths) -> dict:
    """The parts of :func:`simulate_soft_parts` concatenated (:func:`na64reco.background.lone_muon_truth.load_muons`
    plus ``pu_p``, ``pu_near`` per hard muon and the summed weight figures)."""
    m = load_muons(paths)
    parts = [dict(np.load(p)) for p in paths]
    for k in SOFT_FIELDS:
        m[k] = np.concatenate([p[k] for p in parts])
    for k in CALO_FIELDS:  # in every part or left out (parts simulated before the forced muon's deposits)
        if all(k in p for p in parts):
            m[k] = np.concatenate([p[k] for p in parts])
    for k in ("near_muons", "near_forced", "events"):
        m[k] = int(sum(int(p[k]) for p in parts))
    for k in ("p_region", "v_min", "v_max"):
        vals = {float(p[k]) for p in parts}
        if len(vals) != 1:
            raise ConfigError(f"soft pile-up sample: parts with different {k} {sorted(vals)}")
        m[k] = vals.pop()
    return m


def forced_muon(m: dict) -> np.ndarray:
    """Per hard muon, the kept index of its forced near muon (-1: none kept)."""
    near = np.asarray(m["pu_near"], bool)
    return np.where(near.any(axis=1), np.argmax(near, axis=1), -1)


def b_planes(m: dict, which: np.ndarray | None = None) -> np.ndarray:
    """Per tracked muon, the number of used planes holding B's hit: the kept muon ``which`` (per
    hard muon, -1: any) or any pile-up muon."""
    src = np.asarray(m["src"])
    on = src == SRC_PILEUP
    if which is not None:
        w = np.asarray(which)[np.asarray(m["all_tracked"], bool)]
        on &= (np.asarray(m["src_muon"]) == w[:, None]) | (w[:, None] < 0)
    return on.sum(1)


def choice_table(n_b: np.ndarray, groups: dict[str, np.ndarray], n_planes: int) -> dict:
    """The search's choice: per group of tracked muons (a mask), how many used B's hits on c
    planes, c = 1..n_planes, with the rate and its 90 % CL (classical) upper limit."""
    from na64reco.stats.limits import poisson_upper_limit

    out = {}
    for name, mask in groups.items():
        n = int(np.sum(mask))
        by = np.bincount(np.asarray(n_b)[mask], minlength=n_planes + 1)[: n_planes + 1]
        rows = {}
        for c in range(1, n_planes + 1):
            rows[str(c)] = {"using": int(by[c]), "rate": by[c] / n if n else math.nan,
                            "rate_upper_90": poisson_upper_limit(int(by[c]), cl=0.9, method="classical") / n
                            if n else math.inf}
        any_b = int(by[1:].sum())
        out[name] = {"tracked": n, "using_any": any_b, "rate_any": any_b / n if n else math.nan,
                     "rate_any_upper_90": poisson_upper_limit(any_b, cl=0.9, method="classical") / n if n else math.inf,
                     "by_planes": rows}
    return out


def edge_counts(m: dict, edges=EDGES, which: np.ndarray | None = None) -> list[dict]:
    """Tracked muons reconstructed below each box edge (``kappa >= C / edge``), all and those using
    B's hits, with B's momentum of the latter (the forced muon's)."""
    kappa = np.asarray(m["kappa"], float)
    c = float(m["c_gev_mrad"])
    n_b = b_planes(m, which)
    tracked = np.asarray(m["all_tracked"], bool)
    p_b = np.full(tracked.sum(), np.nan)
    if which is not None and "pu_p" in m:
        w = np.asarray(which)[tracked]
        p_b = np.where(w >= 0, np.asarray(m["pu_p"], float)[tracked][np.arange(w.size), np.maximum(w, 0)], np.nan)
    out = []
    for e in edges:
        hit = kappa >= c / e
        out.append({"edge_gev": float(e), "count": int(hit.sum()), "with_b_hits": int(np.sum(hit & (n_b > 0))),
                    "p_reco_gev": sorted(float(x) for x in np.asarray(m["p_reco"], float)[hit])[:20],
                    "p_b_gev_of_those_with_b_hits": sorted(float(x) for x in p_b[hit & (n_b > 0)])[:20]})
    return out


def kick_momentum(m: dict, geometry: dict, min_planes: int = 4) -> np.ndarray:
    """Per hard muon and kept pile-up muon, B's momentum (GeV) from its true crossings on the view:
    the kick fit is linear, so B's deflection is the hard muon's true one plus ``g . d`` over the
    planes where both cross (``d``: ``pu_sep``, B minus the muon; the fit of those planes); NaN
    with fewer than ``min_planes`` such planes or a deflection <= 0 (B bent the other way: far
    out of the box)."""
    from na64reco.background.pileup_truth import _fit_matrices

    sep = np.asarray(m["pu_sep"], float)  # (hard, kept, planes)
    c = float(m["c_gev_mrad"])
    k_a = c / np.asarray(m["hard_p_true"], float)
    out = np.full(sep.shape[:2], np.nan)
    fin = np.isfinite(sep)
    codes = (fin * (1 << np.arange(sep.shape[2]))).sum(-1)
    for code in np.unique(codes):
        used = ((int(code) >> np.arange(sep.shape[2])) & 1).astype(bool)
        if used.sum() < min_planes:
            continue
        g, _, _ = _fit_matrices(geometry, used)
        rows, ks = np.nonzero(codes == code)
        kappa = k_a[rows] + sep[rows, ks][:, used] @ g[used]
        out[rows, ks] = np.where(kappa > 0, c / np.where(kappa > 0, kappa, 1.0), np.nan)
    return out


def soft_summary(m: dict, natural: dict | None = None, edges=EDGES, p_bins=P_BINS) -> dict:
    """The soft sample's figures (module doc): the weight, the direct count of fakes and its
    rate per hard muon, the counts at moved box edges, and the search's choice of B's hits by
    number of planes in bins of B's momentum, beside the natural sample's (``natural``, B hard
    but for ~3e-3)."""
    from na64reco.stats.limits import poisson_upper_limit

    tracked = np.asarray(m["all_tracked"], bool)
    n_hard, n_tracked = int(tracked.size), int(tracked.sum())
    which = forced_muon(m)
    n_b = b_planes(m, which)
    npl = int(np.asarray(m["src"]).shape[1])
    w_t = which[tracked]
    p_b = np.where(w_t >= 0, np.asarray(m["pu_p"], float)[tracked][np.arange(w_t.size), np.maximum(w_t, 0)], np.nan)
    groups = {f"p_B {lo:g}-{hi:g} GeV": (p_b >= lo) & (p_b < hi) for lo, hi in zip(p_bins[:-1], p_bins[1:],
                                                                                      strict=True)}
    groups["p_B stopped or not kept"] = ~np.isfinite(p_b)
    groups["all soft"] = np.ones(n_tracked, bool)
    calo = calo_passes(m)
    fakes_tracking = int(np.sum(m["fake"]))
    fakes = int(np.sum(np.asarray(m["fake"], bool) & calo[tracked]))
    p_r = float(m["p_region"])
    frac_forced = m["near_forced"] / max(m["near_muons"], 1)
    up = poisson_upper_limit(fakes, cl=0.9, method="classical")
    out = {"events": int(m["events"]), "hard": n_hard, "tracked": n_tracked, "v_min": float(m["v_min"]),
           "v_max": float(m["v_max"]), "p_region": p_r, "near_muons": int(m["near_muons"]),
           "near_forced": int(m["near_forced"]), "p_region_effective": p_r * frac_forced,
           "p_b_quantiles_gev": [float(x) for x in np.nanquantile(np.asarray(m["pu_p"], float)[
               np.asarray(m["pu_near"], bool)], [0.1, 0.5, 0.9])],
           "fakes": fakes, "fakes_tracking_cuts_only": fakes_tracking, "calo_cuts": "calo_pass" in m,
           "fakes_upper_90": up, "fake_rate_per_hard": fakes / max(n_hard, 1),
           "fake_rate_per_hard_upper_90": up / max(n_hard, 1),
           "per_hard_natural_upper_90": p_r * frac_forced * up / max(n_hard, 1),
           "per_hard_natural": p_r * frac_forced * fakes / max(n_hard, 1),
           "edges": edge_counts(m, edges, which),
           "choice": choice_table(n_b, groups, npl)}
    if "calo_pass" in m:
        out["tracking_fakes"] = fake_calo_table(m)
    if natural is not None:
        out["choice_natural"] = choice_table(b_planes(natural), {"natural (B hard but ~3e-3)": np.ones(
            int(np.sum(natural["all_tracked"])), bool)}, npl)
        out["ratio_soft_to_natural_any"] = _ratio(out["choice"]["all soft"], out["choice_natural"][
            "natural (B hard but ~3e-3)"])
    return out


def fake_calo_table(m: dict) -> dict:
    """The fakes of the tracking cuts and the calorimeter cuts: how many fail each of
    :data:`CALO_CUTS`, how many pass the counted ones (:data:`COUNTED_CALO_CUTS`), and per fake its
    reconstructed ECAL energy, master time, the forced muon's time and true ECAL deposit, and the
    cuts it fails."""
    tracked = np.asarray(m["all_tracked"], bool)
    f = np.flatnonzero(tracked)[np.asarray(m["fake"], bool)]
    passed = np.asarray(m["calo_pass"], np.uint8)[f]
    return {"n": int(f.size),
            "failing": {name: int(np.sum(~(passed >> i) & 1)) for i, name in enumerate(CALO_CUTS)},
            "counted_cuts": list(COUNTED_CALO_CUTS), "passing_counted": int(np.sum(calo_passes(m)[f])),
            "events": [{"ecal_energy_gev": float(m["ecal_energy"][j]), "event_time_ns": float(m["event_time"][j]),
                        "b_time_ns": float(m["b_time"][j]), "b_e_ecal_gev": float(m["b_e_ecal"][j]),
                        "p_b_gev": float(np.nanmax(np.where(np.asarray(m["pu_near"])[j],
                                                            np.asarray(m["pu_p"], float)[j], np.nan),
                                                   initial=-np.inf)),
                        "failed": [name for i, name in enumerate(CALO_CUTS) if not (int(passed[k]) >> i) & 1]}
                       for k, j in enumerate(f)]}


def _ratio(soft: dict, nat: dict) -> dict:
    """Soft over natural choice rate of B's hits on any plane, with a 90 % upper of the ratio
    (soft's upper over natural's rate)."""
    r = nat["rate_any"]
    return {"rate_soft": soft["rate_any"], "rate_natural": r,
            "ratio": soft["rate_any"] / r if r else math.inf,
            "ratio_upper_90": soft["rate_any_upper_90"] / r if r else math.inf}


def soft_term(summary: dict, natural_tracked: int, natural_hard: int, key: str = "per_hard_natural_upper_90") -> float:
    """log10 of the soft part per tracked muon of the natural sample: ``P_R x (fakes, 90 % upper)
    / hard muons`` of the soft sample x the natural hard-per-tracked (the bounds of
    :func:`na64reco.background.pileup_truth.pileup_estimate` are per tracked muon); ``key``
    ``"per_hard_natural"``: the count itself (the central value)."""
    v = float(summary.get(key, 0.0)) * natural_hard / max(natural_tracked, 1)
    return math.log10(v) if v > 0 else -math.inf


def hard_b_only(m: dict, geometry: dict, split_gev: float = SOFT_SPLIT_GEV) -> tuple[dict, dict]:
    """The natural sample with the pile-up muons whose momentum from their crossings
    (:func:`kick_momentum`) is below ``split_gev`` taken out of the set bound (``pu_sep`` NaN):
    they are R's, measured by the soft sample.  Returns the muons and the counts."""
    p = kick_momentum(m, geometry)
    soft = np.isfinite(p) & (p < split_gev)
    out = dict(m)
    out["pu_sep"] = np.where(soft[:, :, None], np.nan, np.asarray(m["pu_sep"], float)).astype(np.float32)
    return out, {"split_gev": split_gev, "soft_pileup_muons_taken_out": int(soft.sum()),
                 "kept_pileup_muons": int(np.isfinite(np.asarray(m["pu_time"], float)).sum()),
                 "without_momentum": int(np.sum(~np.isfinite(p) & np.isfinite(np.asarray(m["pu_time"], float))))}
