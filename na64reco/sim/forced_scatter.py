"""Forced single large-angle scattering of the beam muon (biased sampling, issue 9).

Each beam muon gets exactly one scatter with momentum transfer ``q > q_min = p_beam x
theta_min`` somewhere between ``z_first`` (default: the ECAL back face) and ``z_last``
(default: the last plane of the outgoing station), on top of the Gaussian (Highland)
multiple scattering.  The material is :func:`na64reco.sim.material_path.path_elements` (planes,
counters, air in 20 mm slices); a piece is drawn with probability proportional to its
natural P(q > q_min), q from its differential cross section (:func:`na64reco.physics.single_scatter.
dsigma_d2q`: Rutherford x Helm + incoherent nucleons), azimuth uniform, angle ``q / p`` of the
muon there.  The event weight is multiplied by the natural probability of one such scatter in
the whole region, ``W = sum_i P_i(q > q_min)`` (W << 1, so "exactly one" and "at least one"
agree to O(W)).  The kink is applied at the piece's centre (thin pieces: just after the plane's
hit); a muon that scatters in the region above q_min in nature is a muon of this sample, so
per MOT = W x (fraction in the box) when q_min is below every kink that can reach it
(:func:`na64reco.background.scatter_tail.element_table`).

Only the primary muon is kicked (not pile-up muons); the truth's ``vertex_z`` is the z of its
kink.  Without ``forced_scatter`` the transport
is untouched (no element is added, no random number drawn).
"""

from __future__ import annotations

from dataclasses import dataclass

import hepunits as u
import numpy as np

from na64reco.errors import ConfigError
from na64reco.physics.single_scatter import probability_above_q
from na64reco.sim.material_path import path_elements

_Q_POINTS = 400


@dataclass(frozen=True)
class ForcedScatter:
    """The forcing: ``theta_min`` (rad, at the beam momentum), region ``[z_first, z_last]`` (mm,
    None: the defaults of the module doc)."""

    theta_min: float = 1.5e-3
    z_first: float | None = None
    z_last: float | None = None

    def __post_init__(self):
        if not (self.theta_min > 0):
            raise ConfigError(f"forced scatter: theta_min must be > 0 rad, got {self.theta_min!r}")

    def to_dict(self) -> dict:
        return {"theta_min": self.theta_min, "z_first": self.z_first, "z_last": self.z_last}


@dataclass(frozen=True)
class _Plan:
    z: np.ndarray  # kink z per piece (mm)
    names: tuple[str, ...]
    prob: np.ndarray  # natural P(q > q_min) per piece
    q: np.ndarray  # (pieces, _Q_POINTS) q grid (MeV)
    cdf: np.ndarray  # (pieces, _Q_POINTS) P(q' < q | q' > q_min)

    @property
    def weight(self) -> float:
        return float(self.prob.sum())


_PLANS: dict = {}


def plan(setup, forced: ForcedScatter) -> _Plan:
    """The pieces of the region, their probabilities and q distributions (cached per setup)."""
    hit = _PLANS.get((id(setup), forced))
    if hit is not None and hit[0] is setup:
        return hit[1]
    result = _plan(setup, forced)
    _PLANS[(id(setup), forced)] = (setup, result)
    return result


def _plan(setup, forced: ForcedScatter) -> _Plan:
    q_min = setup.beam.energy * forced.theta_min
    z0 = setup.detector("ECAL").z + setup.detector("ECAL").depth if forced.z_first is None else forced.z_first
    slabs = [s for s in path_elements(setup) if s.z0 >= z0 - 1e-9
             and (forced.z_last is None or s.z1 <= forced.z_last) and s.x_over_x0 > 0]
    if not slabs:
        raise ConfigError(f"forced scatter: no material between z = {z0} mm and {forced.z_last} mm")
    q = np.geomspace(q_min, 30 * u.GeV, _Q_POINTS)
    shapes = {}
    prob, cdf = [], []
    for s in slabs:
        if s.material not in shapes:
            above = probability_above_q(s.material, 1.0, q)  # per radiation length: shape only
            shapes[s.material] = above
        above = shapes[s.material] * s.x_over_x0
        prob.append(above[0])
        cdf.append(1.0 - above / above[0])
    z = np.array([0.5 * (s.z0 + s.z1) + (1e-3 if s.z0 == s.z1 else 0.0) for s in slabs])
    return _Plan(z, tuple(s.name for s in slabs), np.array(prob), np.broadcast_to(q, (len(slabs), q.size)).copy(),
                 np.array(cdf))


class _Kink:
    """The kink step of one piece for one spill: applied to the primary muons drawn to it."""

    def __init__(self, index: int, z: float, draws: dict):
        self.index, self.z, self.draws = index, z, draws

    def apply(self, ctx, tr):
        from na64reco.sim.tracks import KIND_MUON, ROLE_PRIMARY

        d = self.draws
        m = tr.alive & (tr.role == ROLE_PRIMARY) & (tr.kind == KIND_MUON) & (d["piece"][tr.ev] == self.index)
        if np.any(m):
            ev = tr.ev[m]
            theta = d["q"][ev] / tr.p[m]
            tr.tx[m] = tr.tx[m] + theta * np.cos(d["phi"][ev])
            tr.ty[m] = tr.ty[m] + theta * np.sin(d["phi"][ev])
            ctx.truth.vertex_z[ev] = self.z  # truth of the forced sample: where the muon scattered
        return tr


def prepare(ctx, els: tuple) -> tuple:
    """The transport's hook: draw each event's piece, q and azimuth, weight the events by W and
    return ``els`` with one kink step per piece (kind ``"kink"``, z order)."""
    from na64reco.sim.transport import Element

    forced: ForcedScatter = ctx.forced_scatter
    pl = plan(ctx.setup, forced)
    n = ctx.truth.weight.size
    rng = ctx.rng
    piece = rng.choice(pl.prob.size, size=n, p=pl.prob / pl.prob.sum())
    r = rng.random(n)
    q = np.empty(n)
    for k in np.unique(piece):
        sel = piece == k
        q[sel] = np.exp(np.interp(r[sel], pl.cdf[k], np.log(pl.q[k])))
    draws = {"piece": piece, "q": q, "phi": rng.uniform(0.0, 2 * np.pi, n)}
    ctx.truth.weight *= pl.weight
    kinks = [Element(float(z), "kink", _Kink(k, float(z), draws)) for k, z in enumerate(pl.z)]
    return tuple(sorted(els + tuple(kinks), key=lambda e: e.z))

