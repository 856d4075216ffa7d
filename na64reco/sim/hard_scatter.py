"""Natural single large-angle scattering of the primary muon: the tail Highland's Gaussian lacks.

The transport's multiple scattering is Gaussian (Highland: ``scatter_thin`` / ``scatter_thick``),
which holds the core of the angle distribution.  Real Coulomb scattering also has a tail of
single scatters, ~ 1/q^4 in the momentum transfer q (:mod:`na64reco.physics.single_scatter`:
Rutherford x Helm form factor + incoherent nucleons).  This module adds that tail to every primary muon at
its natural rate, from the target (the ECAL front) through the last plane of the outgoing
station (:func:`na64reco.sim.material_path.path_elements`: ECAL slices, counters, tracker planes
and the gas between them), where a kink can fake the outgoing momentum or the track match:

* per piece i, scatters with ``q > q_cut_i = max(q_floor, core_sigmas x 13.6 MeV sqrt(x)
  (1 + 0.038 ln x))``, x the radiation lengths of the piece's element (the whole ECAL for its
  slices): above ``core_sigmas`` Highland widths the Gaussian holds nothing, so nothing is
  counted twice; ``q_floor`` keeps the thin pieces from adding kinks too small to matter
  (setup ``simulation.muon.single_scatter``; off without it, e.g. NA64e);
* per beam particle the number of scatters is Poisson with mean ``W = sum_i P_i(q > q_cut_i)``
  (drawn per spill: Poisson(W n) scatters on uniformly drawn particles)
  (~2e-3 for NA64mu, most of it in the air), the piece drawn with probability ``P_i / W``, z
  uniform in it, q from its cross section, azimuth uniform; the angle is ``q / p`` of the muon
  there.  Only an alive primary muon is turned (beam pile-up muons and secondaries are not);
* the draws come from a generator of their own, ``SeedSequence([seed, spill, STREAM])``, so the
  main random stream is not consumed by them: a spill without such a scatter is the spill of a
  simulation without them, bit for bit, and so is every other particle of a spill with one up to
  the element where the kinked muon first crosses a different counter, paddle or calorimeter cell
  than it would have (those draw per crossing particle; from there on the spill's later draws
  shift: other numbers, the same distributions);
* a kink at ``z_k`` is applied after the element at or before it has been handled (the track is
  then at ``z_a``, the element's z, or its back face for a calorimeter): slope ``+ theta``,
  position ``- theta (z_k - z_a)``, which the straight flight to the next element turns into the
  exact offset ``theta (z - z_k)`` (inside the ECAL, z_k < z_a, the same formula moves the
  position by ``theta (z_a - z_k)``, the momentum at the back face standing for the one at z_k).

The forced sample of :mod:`na64reco.sim.forced_scatter` is the biased version of the same
process for the rare kinks that reach the signal box; with both, the forced kink comes on top
of the natural ones (independent, rates O(1e-3) per muon).
"""

from __future__ import annotations

from dataclasses import dataclass

import hepunits as u
import numpy as np

from na64reco import constants as C
from na64reco.material import highland
from na64reco.physics.single_scatter import probability_above_q
from na64reco.sim.material_path import path_elements

#: third word of the spill's seed of these draws (the main stream is SeedSequence([seed, spill]))
STREAM = 0x4B494E4B
_Q_POINTS = 200
_Q_MAX = 30 * u.GeV


@dataclass(frozen=True)
class Plan:
    """The pieces of material, their rates above their cuts and their q distributions."""

    names: tuple[str, ...]
    z0: np.ndarray  # mm
    z1: np.ndarray  # mm
    q_cut: np.ndarray  # MeV per piece
    prob: np.ndarray  # natural P(q > q_cut) per piece and muon
    q: np.ndarray  # (pieces, _Q_POINTS) grid from q_cut (MeV)
    cdf: np.ndarray  # (pieces, _Q_POINTS): P(q' < q | q' > q_cut)

    @property
    def total(self) -> float:
        """Mean number of scatters per primary muon over the whole region."""
        return float(self.prob.sum())


@dataclass(frozen=True)
class Kinks:
    """The scatters of one spill: event, z (mm), momentum transfer q (MeV), azimuth, and the
    plan's piece of each (None when given by hand)."""

    ev: np.ndarray
    z: np.ndarray
    q: np.ndarray
    phi: np.ndarray
    piece: np.ndarray | None = None

    def by_element(self, els) -> dict[int, np.ndarray]:
        """Element index (into ``els``, z order) after which each kink is applied -> kink indices:
        the last element whose z is at or before the kink."""
        z_el = np.array([e.z for e in els])
        where = np.searchsorted(z_el, self.z, side="right") - 1
        out: dict[int, np.ndarray] = {}
        for i in np.unique(where[where >= 0]):
            out[int(i)] = np.flatnonzero(where == i)
        return out


_PLANS: dict = {}


def plan(setup, params) -> Plan | None:
    """The setup's plan (cached per setup and cut), None when the setup has no
    ``single_scatter`` entry or no outgoing station."""
    floor, sigmas = params.hard_scatter_q_floor, params.hard_scatter_core_sigmas
    if not floor > 0:
        return None
    from na64reco.sim.transport import outgoing_magnet

    if outgoing_magnet(setup) is None:
        return None
    key = (id(setup), floor, sigmas)
    hit = _PLANS.get(key)
    if hit is not None and hit[0] is setup:
        return hit[1]
    result = _plan(setup, floor, sigmas)
    if len(_PLANS) >= 32:  # setups made on the fly (tests, scans) must not pile up
        _PLANS.clear()
    _PLANS[key] = (setup, result)
    return result


def _plan(setup, floor: float, sigmas: float) -> Plan:
    ecal = setup.detector("ECAL")
    slabs = [s for s in path_elements(setup) if s.x_over_x0 > 0]
    p_ref = 1e6 * u.GeV  # beta = 1: p theta0 does not depend on p
    names, z0, z1, cuts, prob, grids, cdfs = [], [], [], [], [], [], []
    shapes: dict = {}
    for s in slabs:
        x_el = ecal.x0_fraction if s.name.startswith("ECAL") else s.x_over_x0
        q_cut = max(floor, sigmas * p_ref * float(highland(p_ref, C.MUON_MASS, x_el)))
        key = (s.material, q_cut)
        if key not in shapes:  # per radiation length: the shape above the cut
            grid = np.geomspace(q_cut, _Q_MAX, _Q_POINTS)
            shapes[key] = (grid, probability_above_q(s.material, 1.0, grid))
        grid, above = shapes[key]
        names.append(s.name)
        z0.append(s.z0)
        z1.append(s.z1)
        cuts.append(q_cut)
        prob.append(above[0] * s.x_over_x0)
        grids.append(grid)
        cdfs.append(1.0 - above / above[0])
    return Plan(tuple(names), np.array(z0), np.array(z1), np.array(cuts), np.array(prob), np.array(grids),
                np.array(cdfs))


def draw(rng: np.random.Generator, pl: Plan, n: int) -> Kinks:
    """The scatters of ``n`` beam particles (module doc): their number is Poisson with mean
    ``W n`` and each falls on a particle drawn uniformly, i.e. a Poisson count per particle."""
    ev = np.sort(rng.integers(0, n, rng.poisson(pl.total * n))).astype(np.int64)
    piece = rng.choice(pl.prob.size, size=ev.size, p=pl.prob / pl.total)
    z = pl.z0[piece] + rng.random(ev.size) * (pl.z1 - pl.z0)[piece]
    r = rng.random(ev.size)
    q = np.empty(ev.size)
    for i in np.unique(piece):
        sel = piece == i
        q[sel] = np.exp(np.interp(r[sel], pl.cdf[i], np.log(pl.q[i])))
    return Kinks(ev, z, q, rng.uniform(0.0, 2.0 * np.pi, ev.size), piece)


def spill_kinks(seed: int, spill: int, setup, params, n: int) -> Kinks | None:
    """The natural scatters of one spill of ``n`` beam particles from their own generator; None
    when the setup has none (module doc)."""
    pl = plan(setup, params)
    if pl is None:
        return None
    return draw(np.random.default_rng(np.random.SeedSequence([int(seed), int(spill), STREAM])), pl, n)


def apply(tr, kinks: Kinks, which: np.ndarray, z_after: float) -> list[tuple]:
    """Turn the alive primary muons of the kinks ``which`` by their angles with the position
    offset of the module doc, the track being at ``z_after``; returns ``(track indices, theta_x,
    theta_y, z_kink)`` per kink applied.  A kink after a plane inside a run of planes is applied
    this way at the run's start (``z_after`` upstream of the kink: the offset is then
    ``theta (z - z_kink)`` at every plane of the run) and taken back from the crossings of the
    planes before it (``transport._planes``), so that a run is never split."""
    from na64reco.sim.tracks import KIND_MUON, ROLE_PRIMARY

    idx = np.flatnonzero(tr.alive & (tr.role == ROLE_PRIMARY) & (tr.kind == KIND_MUON)
                         & np.isin(tr.ev, kinks.ev[which]))
    done = []
    for j in which:  # one primary muon per event; several kinks of one event add up in turn
        i = idx[tr.ev[idx] == kinks.ev[j]]
        theta = kinks.q[j] / tr.p[i]
        tx, ty = theta * np.cos(kinks.phi[j]), theta * np.sin(kinks.phi[j])
        lever = kinks.z[j] - z_after
        tr.tx[i] += tx
        tr.ty[i] += ty
        tr.x[i] -= tx * lever
        tr.y[i] -= ty * lever
        done.append((i, tx, ty, kinks.z[j]))
    return done


__all__ = ["Kinks", "Plan", "STREAM", "apply", "draw", "plan", "spill_kinks"]
