"""Tracker alignment from beam-muon runs: a global linear least-squares fit of the track and
alignment parameters (Millepede-like), iterated with the track finding.

What is aligned
    The setup's planes each measure one coordinate (x or y) with strips parallel to the
    other one: a plane has one alignment constant, its offset along the measured
    coordinate (``alignment_mm``).  There is no plane measuring both coordinates and no
    stereo view, so a rotation about the beam axis does not enter any measurement (a
    rotation of a strip plane would only matter through the beam's spread along the
    strips times the angle, which the geometry does not model): only offsets are fitted.
Model (one view = the planes of one station measuring one coordinate)
    position on plane i of track t: ``y_ti = r_i . q_t + g_i`` with the view's track model
    ``r_i = (1, dz_i, -dz_i if downstream)`` (:mod:`na64reco.reco.tracking.tracks`), local
    parameters ``q_t`` and global ``g_i = alignment used - true alignment``.  The normal
    equations of all tracks are reduced to the globals by eliminating each track's locals
    (Schur complement): ``M = sum_t (W_t - H_t^T C_t^-1 H_t)``, ``v = sum_t (W_t y_t - H_t^T
    C_t^-1 b_t)``, with ``C_t = R^T W_t R``, ``H_t = R^T W_t``, ``b_t = R^T W_t y_t``.
Weak modes and constraints
    ``g = R c`` for any c leaves every chi2 unchanged (the tracks absorb it): per view a
    global shift and a shear, and for a bend view a kink at the magnet (which is also
    degenerate with the field integral).  They are fixed by keeping the alignment of
    the view's first and last plane and, in a bend view, of the last plane upstream of
    the magnet (:func:`reference_planes`); these planes define the frame.  M has exactly
    ``npar`` zero eigenvalues; the reduced system is regular.  Which planes are free:
    see :func:`reference_planes` (for na64mu: MM2X, MM3X, MM3Y, MM5Y, MM6Y, MM6X, ST1X).
Iteration with the track finding
    reconstruct with the current constants, take each view's best track (in events where
    the view has one candidate), add on the planes the track finder left out the hit
    nearest to the track within ``window`` (a plane 0.5 mm off loses its hits to the
    chi2 cut at first), solve with outlier rejection (hits further than 5 sigma from the
    fitted model dropped, three passes), update, repeat until the largest change is
    below ``tolerance``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from na64reco.calibration.beam_tracks import (
    BeamRun,
    design,
    nearest_hits,
    predict,
    reconstruct_views,
    trial_conditions,
)
from na64reco.conditions import RunConditions, tracker_content
from na64reco.errors import NA64Error
from na64reco.geometry import Setup

#: search window (mm) for hits on planes the track finder left out; outlier cuts of the passes
WINDOW_MM = 2.0
OUTLIER_CUTS = (1.0, 0.4, None)  # mm, mm, then 5 sigma of the plane
OUTLIER_SIGMAS = 5.0
MIN_TRACKS = 200


@dataclass
class ViewResult:
    station: str
    coord: str
    planes: list[str]
    fixed: list[str]
    modes: list[str]
    delta: np.ndarray  # mm, correction added to the alignment (free planes; 0 for fixed)
    error: np.ndarray  # mm, statistical (0 for fixed)
    n_tracks: int
    n_zero_modes: int  # zero eigenvalues of the unconstrained M (expected: len(modes))


@dataclass
class AlignmentResult:
    alignment: dict[str, float]  # plane -> mm (all planes)
    error: dict[str, float]  # plane -> mm (0 for reference planes)
    views: list[ViewResult]
    iterations: list[float] = field(default_factory=list)  # largest |change| (mm) per iteration
    n_events: int = 0

    def summary(self) -> str:
        lines = [f"alignment: {self.n_events} events, {len(self.iterations)} iterations, "
                 f"largest change per iteration (um): " + ", ".join(f"{1000 * d:.1f}" for d in self.iterations)]
        for v in self.views:
            lines.append(f"  {v.station} {v.coord}: {v.n_tracks} tracks; weak modes {', '.join(v.modes)} "
                         f"fixed by the reference planes {', '.join(v.fixed)} "
                         f"({v.n_zero_modes} zero eigenvalues)")
            for name in v.planes:
                if name in v.fixed:
                    lines.append(f"    {name:6s} {1000 * self.alignment[name]:9.1f} um  (reference)")
                else:
                    lines.append(f"    {name:6s} {1000 * self.alignment[name]:9.1f} +- "
                                 f"{1000 * self.error[name]:.1f} um")
        return "\n".join(lines)


def reference_planes(view) -> list[int]:
    """Indices (in the view) of the planes whose alignment fixes the weak modes: first and
    last plane, and for a bend view the last plane upstream of the magnet."""
    fixed = {0, len(view.planes) - 1}
    if view.bend:
        fixed.add(max(i for i, d in enumerate(view.down) if not d))
    return sorted(fixed)


def weak_modes(view) -> list[str]:
    modes = ["shift", "shear"]
    if view.bend:
        modes.append(f"kink at {view.station} (= field integral)")
    return modes


def reduced_normal_equations(R: np.ndarray, y: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(M, v) of the globals after eliminating every track's locals (module doc).

    ``R`` (npl, npar) design, ``y`` and ``w`` (T, npl) positions and weights (0: no hit).
    Every track must determine its locals (C_t regular).
    """
    C = np.einsum("ti,ia,ib->tab", w, R, R)
    b = np.einsum("ti,ti,ia->ta", w, y, R)
    Ci = np.linalg.inv(C)
    H = w[:, None, :] * R.T[None, :, :]  # (T, npar, npl)
    M = np.diag(w.sum(axis=0)) - np.einsum("tai,tab,tbj->ij", H, Ci, H)
    v = (w * y).sum(axis=0) - np.einsum("tai,tab,tb->i", H, Ci, b)
    return M, v


def solve_view(R: np.ndarray, y: np.ndarray, w: np.ndarray, fixed: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Globals g (npl) with ``g[fixed] = 0`` and their errors; see the module doc."""
    M, v = reduced_normal_equations(R, y, w)
    free = np.setdiff1d(np.arange(R.shape[0]), fixed)
    g = np.zeros(R.shape[0])
    err = np.zeros(R.shape[0])
    cov = np.linalg.inv(M[np.ix_(free, free)])
    g[free] = cov @ v[free]
    err[free] = np.sqrt(np.diag(cov))
    return g, err


def _usable(R: np.ndarray, w: np.ndarray, view) -> np.ndarray:
    """Tracks with more hits than parameters (and both sides of a bend view)."""
    has = w > 0
    ok = has.sum(axis=1) > R.shape[1]
    if view.bend:
        down = np.asarray(view.down)
        ok &= has[:, ~down].any(axis=1) & has[:, down].any(axis=1)
    return ok


def _locals(R, y, w, g):
    C = np.einsum("ti,ia,ib->tab", w, R, R)
    b = np.einsum("ti,ti,ia->ta", w, y - g[None, :], R)
    return np.linalg.solve(C, b[..., None])[..., 0]


def fit_view(view, y: np.ndarray, w: np.ndarray, sigma: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Solve one view with the outlier passes; returns (g, error, tracks used)."""
    R = design(view)
    fixed = reference_planes(view)
    w = w.copy()
    g = np.zeros(R.shape[0])
    err = g.copy()
    for cut in OUTLIER_CUTS:
        ok = _usable(R, w, view)
        if ok.sum() < MIN_TRACKS:
            raise NA64Error(f"alignment: view {view.station} {view.coord} has {int(ok.sum())} usable tracks "
                            f"(< {MIN_TRACKS}): give more beam events")
        g, err = solve_view(R, y[ok], w[ok], fixed)
        q = _locals(R, y[ok], w[ok], g)
        res = y[ok] - q @ R.T - g[None, :]
        limit = OUTLIER_SIGMAS * sigma[None, :] if cut is None else cut
        bad = np.zeros_like(w, dtype=bool)
        bad[ok] = np.abs(res) > limit
        w[bad] = 0.0
    ok = _usable(R, w, view)
    g, err = solve_view(R, y[ok], w[ok], fixed)
    return g, err, int(ok.sum())


def collect_view(hits: dict, n_planes: int, vt, setup: Setup, window: float) -> tuple[np.ndarray, np.ndarray]:
    """(y, w) (T, npl) of one view: the track's hits, plus the nearest hit within ``window``
    (mm) of the track on each plane it left out.  Only events with one candidate."""
    one = vt.n_tracks == 1
    ev, par, hit = vt.event[one], vt.par[one], vt.hit[one].copy()
    pred = predict(vt.view, par)
    for ip, plane in enumerate(vt.view.planes):
        miss = np.flatnonzero(hit[:, ip] < 0)
        best, dist = nearest_hits(hits, n_planes, ev[miss], np.full(miss.size, plane), pred[miss, ip])
        hit[miss[dist <= window], ip] = best[dist <= window]
    sig = np.array([setup.planes[p].resolution for p in vt.view.planes])
    y = np.where(hit >= 0, hits["pos"][np.maximum(hit, 0)], 0.0)
    w = np.where(hit >= 0, 1.0 / sig[None, :] ** 2, 0.0)
    return y, w


def align(runs: list[BeamRun], setup: Setup, base: RunConditions, *, max_iterations: int = 8,
          tolerance: float = 0.001, window: float = WINDOW_MM) -> AlignmentResult:
    """Align the planes of every view with the beam tracks of ``runs``, starting from ``base``.

    Iterates until no plane moves by ``tolerance`` (mm) or more.  After ``max_iterations`` a plane
    that still moved by more than 3 times its error is an error: the fit did not converge (a plane
    off by more than the ``window`` of the hits it collects is not captured; before stop 48 a plane
    moved by 4 mm was published at -0.85 +- 0.01 mm)."""
    current = {name: float(c.alignment) for name, c in base.planes.items()}
    changes: list[float] = []
    views_out: list[ViewResult] = []
    errors = dict.fromkeys(current, 0.0)
    converged = False
    worst = (0.0, 0.0, "")
    for _ in range(max_iterations):
        worst = (0.0, 0.0, "")  # this iteration's largest move: (mm, its error, plane)
        cond = trial_conditions(base, alignment=current, label="align")
        per_view: dict[int, list] = {}
        for run in runs:
            hits, vts, _ = reconstruct_views(run, setup, cond)
            for k, vt in enumerate(vts):
                per_view.setdefault(k, []).append(collect_view(hits, len(setup.planes), vt, setup, window))
        views_out = []
        largest = 0.0
        for k, parts in per_view.items():
            view = vts[k].view
            y = np.concatenate([p[0] for p in parts])
            w = np.concatenate([p[1] for p in parts])
            sigma = np.array([setup.planes[p].resolution for p in view.planes])
            g, err, n = fit_view(view, y, w, sigma)
            R = design(view)
            M, _ = reduced_normal_equations(R, y[_usable(R, w, view)], w[_usable(R, w, view)])
            eig = np.linalg.eigvalsh(M)
            names = [setup.planes[p].name for p in view.planes]
            for name, gi, ei in zip(names, g, err, strict=True):
                current[name] -= gi  # g = used - true
                errors[name] = float(ei)
                largest = max(largest, abs(gi))
                if abs(gi) >= worst[0]:
                    worst = (abs(float(gi)), float(ei), name)
            fixed = [names[i] for i in reference_planes(view)]
            views_out.append(ViewResult(view.station, view.coord, names, fixed, weak_modes(view), -g, err, n,
                                        int((eig < 1e-9 * eig.max()).sum())))
        changes.append(largest)
        if largest < tolerance:
            converged = True
            break
    if not converged and worst[0] > 3.0 * worst[1]:
        steps = ", ".join(f"{1000 * c:.1f}" for c in changes)
        raise NA64Error(f"alignment did not converge in {max_iterations} iterations: plane {worst[2]} still moved by "
                        f"{1000 * worst[0]:.1f} um (error {1000 * worst[1]:.1f} um) in the last one (largest move per "
                        f"iteration, um: {steps}); a plane off by more than the {window:g} mm window of the hits "
                        "the fit collects is not captured: start from a base tag with a rough alignment")
    return AlignmentResult(current, errors, views_out, changes, sum(len(r.events) for r in runs))


def alignment_content(setup: Setup, base: RunConditions, result: AlignmentResult) -> dict:
    """The new ``tracker`` payload body: the base's with the fitted alignment."""
    body = tracker_content(setup, base)
    for name, value in result.alignment.items():
        body["planes"][name]["alignment_mm"] = round(float(value), 5)
    return body
