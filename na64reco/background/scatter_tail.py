"""Single large-angle scattering of the beam muon: a closed form of its mis-reconstruction rate.

The simulator's multiple scattering is Gaussian (Highland); the true angle distribution has a
single-scattering tail ~ 1 / theta^4.  A 160 GeV muon is put in the box (p_out < 80 GeV) by a
fake extra deflection of kappa(80 GeV) - kappa(p) = 2.6 mrad in the MS2 bend view (1.4 T m).

Cross sections per atom (Rutherford x form factors, incoherent nucleon part; electrons not
counted: a turn above the 2.6 mrad the box needs leaves the muon below ~85 GeV with a > 75 GeV
electron beside it, a true energy loss the HCAL MIP cut rejects,
:func:`na64reco.physics.single_scatter.electron_recoil`) are in
:mod:`na64reco.physics.single_scatter`; the material on the path (``path_elements``) in
:mod:`na64reco.sim.material_path`, as the simulator places it.

Kink algebra: a kink theta at z_s shifts every plane downstream by ``theta (z_j - z_s)``.  The
reconstruction's fits are linear in the hits (:mod:`na64reco.reco.tracking.tracks`: bend view
``[1, dz, -dz down]``, other view ``[1, dz]``), so the fitted deflection moves by ``theta g.s``
and the chi2 is ``theta^2 |W^1/2 (I - H) s|^2``, the vertex residual at the ECAL front (the
incoming track's constraint) ``theta e.s`` (module functions :func:`fit_response`).  A kink
upstream of every MS2 plane (target, VETO, air) only tilts the incoming line: ``g.s = 0``, no fake
whatever the angle.  The acceptance of an element is the set of (theta_x, theta_y) whose best
candidate (lowest chi2 + missing-plane penalties + vertex chi2, as the search ranks) passes the
fit and vertex cuts and lands in the box, and whose muon still reaches the deflected S4/Smu
counters (Gaussian beam spread there).  Each view's patterns follow its own missing-plane rule
and required planes (tracking.yaml), the bend view's best candidate must pass the selection's
``chi2_out``, and the selection requires the non-bend projection (``both_views_out``): the
kink's component across the bend plane must leave a straight track there, and the track match
has both terms.  (Before the selection required it, a muon without an MS2 y track kept its
bend-view track with a one-term match: 82 % of the forced kinks in the 2022 box.)

The probability includes the incoming track's (MS1 bend view) plane-efficiency patterns.
Simplifications: the muon's momentum is the beam's,
the hit resolution and the Gaussian multiple scattering are neglected against the kink (a
kink must exceed ~2.6 mrad, the core is ~0.1 mrad), the other cuts' efficiencies (calorimeter
MIPs, VETO) are not applied.  Materials (assumed): MM / GEM / straw planes polyimide, counters
plastic scintillator, ECAL lead, gaps air, with the setup's ``x0_fraction`` as thickness.
"""

from __future__ import annotations

import math

import hepunits as u
import numpy as np

from na64reco import constants as C
from na64reco.errors import ConfigError
from na64reco.physics.single_scatter import atoms_per_area, dsigma_d2q, probability_above_q
from na64reco.selection.signal_model import signal_model
from na64reco.sim.material_path import Slab, path_elements
from na64reco.units import MRAD_PER_RAD


def station_geometry(setup, conditions=None) -> dict:
    """The outgoing station's two views as the reconstruction fits them (bend: ``[1, dz, -dz
    down]``, other: ``[1, dz]``; dz in m), with the plane resolutions, efficiencies and
    missing-plane penalties, the vertex constraint (anchor dz, variance ``va + vb kappa^2``),
    the cuts, the magnet and the deflected trigger counters."""
    from na64reco.reco.tracking.config import load_tracking_config
    from na64reco.reco.tracking.tracks import make_views

    cfg = load_tracking_config(setup)
    views = make_views(setup, cfg, conditions)
    geo = {"chi2_ndf_max": float(cfg.chi2_ndf_max), "vertex_chi2_max": float(cfg.vertex_chi2_max)}
    geo["incoming"] = 1.0
    for v in views:
        if v.role == "in" and v.bend:  # the incoming track (n_tracks_in counts the bend view)
            eff = np.array([setup.planes[i].efficiency if conditions is None
                            else conditions.plane_efficiency(setup.planes[i]) for i in v.planes])
            geo["incoming"] = _tracked_probability(eff, v.max_missing, np.asarray(v.required, bool))
        if v.role != "out":
            continue
        planes = [setup.planes[i] for i in v.planes]
        eff = [plane.efficiency if conditions is None else conditions.plane_efficiency(plane) for plane in planes]
        geo["bend" if v.bend else "other"] = {
            "names": [p.name for p in planes], "z": np.array([p.z for p in planes]) / u.m,
            "dz": np.asarray(v.dz), "down": np.asarray(v.down, bool) if v.bend else np.zeros(len(planes), bool),
            "sigma": np.array([p.resolution for p in planes]), "eff": np.array(eff),
            "pen": np.asarray(v.miss_penalty, float), "npar": v.npar, "anchor_dz": v.anchor_dz,
            "va": v.vertex_va, "vb": v.vertex_vb, "z_magnet": v.z_magnet / u.m,
            "max_missing": v.max_missing, "required": np.array(v.required or (False,) * len(planes), bool)}
        if v.bend:
            geo["magnet"] = setup.magnets[v.station]
    counters = [d for d in setup.calorimeters.values() if d.deflected_magnet]
    geo["counters"] = [(d.name, d.z, float(_edge_offset(setup, d))) for d in counters]
    geo["counter_sigma"] = _beam_sigma_at(setup, max((d.z for d in counters), default=0.0))
    return geo


def _tracked_probability(eff: np.ndarray, max_missing: int, required=None) -> float:
    """P(at most ``max_missing`` of the planes without a hit and none of the ``required``),
    independent planes."""
    required = np.zeros(eff.size, bool) if required is None or not np.size(required) else required
    total = 0.0
    for code in range(1 << eff.size):
        used = ((code >> np.arange(eff.size)) & 1).astype(bool)
        if eff.size - used.sum() <= max_missing and not (required & ~used).any():
            total += float(np.prod(np.where(used, eff, 1 - eff)))
    return total


def _edge_offset(setup, det) -> float:
    from na64reco.geometry import deflection_offset

    return float(deflection_offset(setup.magnets[det.deflected_magnet], det.edge_momentum, det.z))


def _beam_sigma_at(setup, z: float) -> float:
    """Spread (mm) in x of unscattered-by-a-kink 160 GeV muons at ``z``: spot, divergence and the
    Highland scattering of the ECAL and of the HCAL modules (thin at their centres)."""
    from na64reco.material import highland

    b = setup.beam
    var = b.spot_sigma_x**2 + (b.divergence_x * (z - b.start_z)) ** 2
    for det in setup.calorimeters.values():
        if det.z >= z:
            continue
        if det.name == "ECAL":
            var += (highland(b.energy, C.MUON_MASS, det.x0_fraction) * (z - det.z - det.depth / 2)) ** 2
    if "HCAL" in setup.calorimeters:
        from na64reco.sim.params import load_sim_params

        h = setup.detector("HCAL")
        x0 = load_sim_params(setup).hcal_module_x0
        for k, depth in enumerate(h.section_depths):
            zc = h.z + sum(h.section_depths[:k]) + depth / 2
            if zc < z:
                var += (highland(b.energy, C.MUON_MASS, x0) * (z - zc)) ** 2
    return math.sqrt(var)


def fit_response(view: dict, used: np.ndarray, z_s: float) -> tuple[float, float, float]:
    """A unit kink (1 mrad) at ``z_s`` (m) in one view fitted on the ``used`` planes: the change of
    the deflection kappa (mrad; 0 for the non-bend view), the standardized residual norm
    ``|W^1/2 (I - H) s|`` (chi2 = theta^2 x its square) and the fitted line's shift at the anchor
    (the ECAL front, mm)."""
    s = np.clip(view["z"] - z_s, 0.0, None) * 1.0  # mm per mrad: dz in m x mrad
    npar = view["npar"]
    a = np.stack([np.ones(view["dz"].size), view["dz"], -view["dz"] * view["down"]], axis=1)[:, :npar]
    a, w, su = a[used], 1.0 / view["sigma"][used] ** 2, s[used]
    cov = np.linalg.inv(a.T @ (a * w[:, None]))
    par = cov @ (a.T @ (w * su))
    res = su - a @ par
    kappa = float(par[2]) if npar == 3 else 0.0
    anchor = float(par[0] + par[1] * view["anchor_dz"])
    return kappa, float(math.sqrt(np.sum(w * res * res))), anchor


def _patterns(view: dict):
    """(used mask, probability) of every pattern of efficient planes the search can track (the
    view's missing-plane rule and required planes)."""
    eff = view["eff"]
    npl = eff.size
    out = []
    for code in range(1 << npl):
        used = ((code >> np.arange(npl)) & 1).astype(bool)
        if npl - used.sum() > view["max_missing"] or used.sum() < view["npar"] + 1:
            continue
        if (view["required"] & ~used).any():
            continue
        if view["npar"] == 3 and not ((used & view["down"]).any() and (used & ~view["down"]).any()):
            continue
        out.append((used, float(np.prod(np.where(used, eff, 1 - eff)))))
    return out


def view_acceptance(view: dict, geo: dict, z_s: float, theta, kappa0: float, kappa_box: float,
                    chi2_best_max: float = math.inf):
    """Per signed kink angle ``theta`` (mrad, array) at ``z_s`` (m): the probability over the
    plane-efficiency patterns that the view's best candidate (search ranking: chi2 + missing-plane
    penalties + vertex chi2) passes the chi2 and vertex cuts (and, bend view, has kappa >=
    ``kappa_box``) and has chi2/ndf <= ``chi2_best_max`` (a selection cut on the track found), and
    the squared vertex pull of that candidate (for the track match)."""
    theta = np.asarray(theta, float)
    kvtx = max(kappa0, kappa_box)
    acc, pull2 = np.zeros(theta.size), np.zeros(theta.size)
    patterns = _patterns(view)
    for eff_used, prob in patterns:
        best = np.full(theta.size, np.inf)
        ok, p2 = np.zeros(theta.size, bool), np.zeros(theta.size)
        for used, _ in patterns:
            if (used & ~eff_used).any():
                continue
            dk, r, e = fit_response(view, used, z_s)
            ndf = int(used.sum()) - view["npar"]
            chi2 = (theta * r) ** 2
            vtx = (theta * e) ** 2 / (view["va"] + view["vb"] * kvtx**2)
            score = chi2 + vtx + float(view["pen"][~used].sum())
            passes = (chi2 <= geo["chi2_ndf_max"] * max(ndf, 1)) & (vtx <= geo["vertex_chi2_max"])
            take = passes & (score < best)
            best = np.where(take, score, best)
            inbox = (kappa0 + theta * dk >= kappa_box) if view["npar"] == 3 else np.ones(theta.size, bool)
            ok = np.where(take, inbox & (chi2 <= chi2_best_max * max(ndf, 1)), ok)
            p2 = np.where(take, vtx, p2)
        acc += prob * ok
        pull2 += prob * ok * p2
    return acc, np.where(acc > 0, pull2 / np.where(acc > 0, acc, 1.0), 0.0)


def _trapezoid_weights(x: np.ndarray) -> np.ndarray:
    w = np.zeros(x.size)
    w[1:] += 0.5 * np.diff(x)
    w[:-1] += 0.5 * np.diff(x)
    return w


def _trigger(geo: dict, z_s: float, theta) -> np.ndarray:
    """Probability that a muon with a kink ``theta`` (mrad) at ``z_s`` (m) fires every deflected
    counter: its shift ``theta (z_c - z_s)`` past the counter's inner edge, Gaussian spread."""
    from scipy.special import ndtr

    t = np.ones(np.shape(theta))
    for _, zc, edge in geo["counters"]:
        shift = np.asarray(theta) * (zc / u.m - z_s)  # mm
        side = (edge - shift) if edge < 0 else (shift - edge)
        t = np.minimum(t, ndtr(side / geo["counter_sigma"]))
    return t


def element_table(setup, conditions=None, p: float | None = None, track_match_max: float = 20.0,
                  chi2_out_max: float = math.inf, air_step: float = 20.0 * u.mm) -> dict:
    """Per element (:func:`path_elements`, air gaps merged per gap) the smallest kink landing in
    the box (mrad, inf if none), the natural probability of a scatter above it and the
    probability per beam muon of a box event passing the fits, the vertex / track match
    (``track_match_max``), the outgoing bend-view chi2/ndf (``chi2_out_max``) and the trigger,
    for momentum ``p`` (default the beam's), and the natural probability of a scatter above the
    extra kick the box needs (``p_above_box_kink``).  Keys ``rows`` and ``total``.  The cut values
    are the selection's (:func:`selection_cuts`)."""
    geo = station_geometry(setup, conditions)
    p = setup.beam.energy if p is None else p
    mag = geo["magnet"]
    kappa0 = float(mag.kick(p)) * MRAD_PER_RAD
    kappa_box = float(mag.kick(signal_model(setup.name).box_max)) * MRAD_PER_RAD  # the box edge p_out
    tx = np.geomspace(0.05, 200.0, 500)
    tx = np.concatenate([-tx[::-1], tx])  # mrad, signed
    ty = np.concatenate([-np.geomspace(1e-3, 200.0, 300)[::-1], [0.0], np.geomspace(1e-3, 200.0, 300)])
    wx, wy = _trapezoid_weights(tx * u.mrad), _trapezoid_weights(ty * u.mrad)  # rad
    rows = {}
    for slab in path_elements(setup, air_step):
        z_s = 0.5 * (slab.z0 + slab.z1) / u.m
        ax, px = view_acceptance(geo["bend"], geo, z_s, tx, kappa0, kappa_box, chi2_out_max)
        ay, py = view_acceptance(geo["other"], geo, z_s, ty, kappa0, kappa_box)
        trig = _trigger(geo, z_s, tx)
        fx = ax * trig
        key = slab.name if slab.material not in ("air", *C.GASES) else _gap_name(slab, setup)
        row = rows.setdefault(key, {"material": slab.material, "x_over_x0": 0.0, "z_m": [z_s, z_s],
                                    "theta_min_mrad": math.inf, "probability": 0.0, "p_above_theta_min": 0.0})
        row["x_over_x0"] += slab.x_over_x0
        row["z_m"] = [min(row["z_m"][0], slab.z0 / u.m), max(row["z_m"][1], slab.z1 / u.m)]
        if not fx.any():
            continue
        inbox = np.flatnonzero(fx > 0)
        row["theta_min_mrad"] = min(row["theta_min_mrad"], float(np.abs(tx[inbox]).min()))
        theta = np.hypot(tx[:, None], ty[None, :]) * u.mrad  # rad
        # both projections required (both_views_out): the match has both terms
        accept = fx[:, None] * ay[None, :] * ((px[:, None] + py[None, :]) <= track_match_max)
        kernel = accept * wx[:, None] * wy[None, :]
        prob = 0.0
        for z, a, n in atoms_per_area(slab.material, slab.x_over_x0):
            prob += n * float(np.sum(kernel * p * p * dsigma_d2q(p * theta, z, a)))
        row["probability"] += prob * geo["incoming"]
    q_box = p * (kappa_box - kappa0) * u.mrad  # a kink as large as the extra kick the box needs
    for row in rows.values():
        row["p_above_box_kink"] = float(probability_above_q(row["material"], row["x_over_x0"], [q_box])[0])
        if math.isfinite(row["theta_min_mrad"]):
            q = p * row["theta_min_mrad"] * u.mrad
            row["p_above_theta_min"] = float(probability_above_q(row["material"], row["x_over_x0"], [q])[0])
    return {"rows": rows, "total": float(sum(r["probability"] for r in rows.values())),
            "incoming_tracked": geo["incoming"], "kappa_beam_mrad": kappa0, "kappa_box_mrad": kappa_box,
            "counter_sigma_mm": geo["counter_sigma"],
            "counters": [(n, z / u.m, e) for n, z, e in geo["counters"]], "period": setup.period}


def selection_cuts(name: str = "na64mu_invisible") -> dict:
    """The selection's cuts the closed form applies: ``track_match_max`` and ``chi2_out_max``
    (keyword arguments of :func:`element_table`); it must require both MS2 projections."""
    from na64reco.selection.schema import load_selection

    cuts = {c.variable: c for c in load_selection(name).cuts}
    views = cuts.get("n_views_out")
    if views is None or views.type != "equal" or views.value != 2:
        raise ConfigError(f"selection {name!r}: the closed form assumes a cut n_views_out == 2 (both MS2 projections)")
    return {"track_match_max": cuts["track_match_chi2"].max, "chi2_out_max": cuts["chi2_out"].max}


def _gap_name(slab: Slab, setup) -> str:
    """The air gap a slice belongs to, named by the elements around it."""
    from na64reco.sim.transport import elements

    before = [e for e in elements(setup) if e.z <= slab.z0 and e.kind not in ("decay",)]
    after = [e for e in elements(setup) if e.z >= slab.z1 and e.kind not in ("decay",)]
    name = lambda e: e.obj.name if hasattr(e.obj, "name") else e.kind  # noqa: E731
    b = name(before[-1]) if before else "start"
    a = name(after[0]) if after else "end"
    mag = [e for e in elements(setup) if e.kind == "magnet" and slab.z0 <= e.z <= slab.z1 + 1e-9]
    if before and before[-1].kind == "magnet" or after and after[0].kind == "magnet" or mag:
        gap = any(m.obj.name != "MS1" for m in mag) or "MS2" in (b, a)
        return f"{slab.material}, MS2 gap" if gap else f"{slab.material} {b} - {a}"
    return f"{slab.material} {b} - {a}"
