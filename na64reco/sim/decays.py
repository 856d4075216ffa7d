"""K/pi -> mu nu decays in flight, forced into the regions where the muon can fake the signal.

A beam kaon or pion (processes ``kdecay``, ``pidecay``) that decays after the incoming momentum
station leaves the spectrometer with a muon of lower momentum and an invisible neutrino: the
station measured the parent's ~160 GeV, the outgoing station measures the muon.  The decay can
reach the signal box from two regions (:func:`regions`):

* **after MS1**: from the end of the incoming magnet's field to the ECAL front, across the
  station's downstream planes (a decay between them kinks the measured track) and the V1 counter;
* **behind the ECAL**: from the ECAL's back face to the last plane of the outgoing station,
  across the VETO, the VHCAL hole and the MS2 planes and magnet.  The parent must cross the ECAL
  without a hadronic interaction: P = exp(-lambda_ECAL / lambda_ratio) (0.38 for a kaon, 0.34
  for a pion; ``simulation.hadron``).  In the ECAL it leaves a MIP like a muon.  A decay after the
  MS2 magnet leaves the parent's kick in the measured bend plus the decay angle: a measured p_out
  below the box edge needs a decay angle of ~3 mrad in the bend plane.

Left out: decays inside the incoming magnet's field (the muon's extra bend over the rest of the
field moves the measured p_in out of its window unless the decay is within ~0.1 m of the field's
end: < 2 % of the first region) and decays inside the ECAL (0.53 m of ~15 m, of which a kaon
reaches on average ~70 %: ~3 % of the decay probability; their muon is like one from a decay
just before the ECAL).  The magnets are thin kicks: a decay in the first half of MS2's field
gets the muon's full kick, one in the second half the parent's.  The natural single large-angle
kinks (:mod:`na64reco.sim.hard_scatter`, muons only) of the gap in which the decay happens are
applied before it, to the parent, which they skip: ~3e-3 of the decay muons lose such a kink.

Every event of these processes decays, forced: the decay point is drawn from the exponential
decay law (decay length (p/m) c tau) restricted to the union of the regions, each weighted with
its survival factor (:func:`decay_probability`); a biased (single-process) run multiplies the
truth weight by that probability times BR(-> mu nu), the probability per beam particle of the
species.  A mixture draws the same decays with weight 1: its ``simulation.mixture`` rate is
``species per MOT x mean(probability) x BR``, which ``tests/test_decay_regions.py`` checks against
the setup.

The decay is scheduled when the parent passes the end of the incoming field
(:func:`schedule`) and applied when the transport reaches the first element behind the decay
point (:func:`Pending.apply_before`): new direction (two-body kinematics), new momentum, the
track line moved so that it passes through the decay point; the parent's crossings before it
stay the parent's.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from na64reco import constants
from na64reco.errors import ConfigError
from na64reco.io.raw import PROCESSES
from na64reco.sim import interactions as phys
from na64reco.sim.biasing import forced_exponential
from na64reco.sim.punchthrough import lambda_ratios
from na64reco.sim.tracks import KIND_KAON, KIND_MUON, KIND_PION, MASSES, ROLE_PRIMARY, Tracks

#: the decaying species: track kind -> (c tau, BR(-> mu nu))
SPECIES = {
    KIND_KAON: (constants.KAON_CHARGED_CTAU, constants.KAON_TO_MUNU_BR),
    KIND_PION: (constants.PION_CHARGED_CTAU, constants.PION_TO_MUNU_BR),
}
#: the processes whose primary decays
DECAY_FLAGS = (PROCESSES["kdecay"], PROCESSES["pidecay"])


@dataclass(frozen=True)
class Region:
    """A decay region [z0, z1] (mm); ``behind_ecal``: the parent must first cross the ECAL."""

    name: str
    z0: float
    z1: float
    behind_ecal: bool


def regions(setup) -> tuple[Region, ...]:
    """The setup's decay regions (module doc): after the incoming field up to the ECAL front, and,
    with an outgoing station, from the ECAL's back face to the station's last plane."""
    from na64reco.sim.transport import incoming_magnet, outgoing_magnet

    mag = incoming_magnet(setup)
    ecal = setup.detector("ECAL")
    out = [Region("after the incoming field", mag.center_z + mag.length / 2, ecal.z, False)]
    station = outgoing_magnet(setup)
    if station is not None:
        last = max([p.z for p in setup.planes if p.station == station.name] + [station.center_z])
        out.append(Region("behind the ECAL", ecal.z + ecal.depth, last, True))
    for r in out:
        if not r.z1 > r.z0:
            raise ConfigError(f"decay region {r.name!r} of setup {setup.name!r} is empty: [{r.z0}, {r.z1}] mm")
    return tuple(out)


def ecal_survival(params, kind: int) -> float:
    """P(a parent of ``kind`` crosses the ECAL without a hadronic interaction):
    exp(-ecal_interaction_lengths / lambda_ratio)."""
    return float(np.exp(-params.hadron_ecal_lambda / lambda_ratios(params.punch, kind)))


def _region_probabilities(regs, params, kind: int, momentum, start_z: float) -> np.ndarray:
    """(particles, regions): P(decay in the region, the parent alive at ``start_z``) x survival."""
    ctau, _ = SPECIES[kind]
    length = np.asarray(momentum, float)[:, None] / float(MASSES[kind]) * ctau
    z0 = np.array([r.z0 for r in regs]) - start_z
    z1 = np.array([r.z1 for r in regs]) - start_z
    s = np.array([ecal_survival(params, kind) if r.behind_ecal else 1.0 for r in regs])
    return (np.exp(-z0 / length) - np.exp(-z1 / length)) * s


def decay_probability(setup, params, kind: int, momentum, start_z: float | None = None) -> np.ndarray:
    """P(a parent of ``momentum`` at ``start_z`` (default: the beam start) decays in a region
    it reaches), without the branching ratio."""
    z = setup.beam.start_z if start_z is None else start_z
    return _region_probabilities(regions(setup), params, kind, np.atleast_1d(momentum), z).sum(axis=1)


@dataclass
class Pending:
    """Decays drawn but not yet reached by the transport, sorted by z."""

    ev: np.ndarray
    z: np.ndarray

    @property
    def next_z(self) -> float:
        return float(self.z[0]) if self.z.size else np.inf

    def holds(self, ev) -> np.ndarray:
        """Mask of the events in ``ev`` whose decay is still ahead."""
        return np.isin(ev, self.ev)

    def apply_before(self, ctx, tr: Tracks, z_now: float, z_next: float) -> None:
        """Turns the parents whose decay point lies before ``z_next`` into muons; the tracks are at
        ``z_now`` (before or after the decay point: the line moves by the kink times the distance)."""
        n_due = int(np.searchsorted(self.z, z_next, side="left"))
        if n_due == 0:
            return
        ev_due, z_due = self.ev[:n_due], self.z[:n_due]
        self.ev, self.z = self.ev[n_due:], self.z[n_due:]
        parent = (tr.role == ROLE_PRIMARY) & tr.alive & ((tr.kind == KIND_KAON) | (tr.kind == KIND_PION))
        idx = np.flatnonzero(parent & np.isin(tr.ev, ev_due))
        if idx.size == 0:
            return
        order = np.argsort(ev_due, kind="stable")
        zd = z_due[order][np.searchsorted(ev_due[order], tr.ev[idx])]
        p_mu, theta = np.empty(idx.size), np.empty(idx.size)
        phi = np.empty(idx.size)
        for kind in SPECIES:  # two_body_decay takes a scalar parent mass
            m = tr.kind[idx] == kind
            if np.any(m):
                p_mu[m], theta[m], phi[m] = phys.two_body_decay(ctx.rng, tr.p[idx[m]], float(MASSES[kind]),
                                                                constants.MUON_MASS)
        dtx, dty = theta * np.cos(phi), theta * np.sin(phi)
        tr.x[idx] = tr.x[idx] - dtx * (zd - z_now)
        tr.y[idx] = tr.y[idx] - dty * (zd - z_now)
        tr.tx[idx] = tr.tx[idx] + dtx
        tr.ty[idx] = tr.ty[idx] + dty
        tr.p[idx] = p_mu
        tr.kind[idx] = KIND_MUON
        ctx.truth.vertex_z[tr.ev[idx]] = zd
        from na64reco.sim.transport import outgoing_magnet

        station = outgoing_magnet(ctx.setup)
        if station is not None:  # after the outgoing magnet: the muon that leaves is the truth p_out
            late = zd > station.center_z
            ctx.truth.p_out[tr.ev[idx[late]]] = p_mu[late]


def schedule(ctx, tr: Tracks) -> Pending | None:
    """Draws the decay point of every primary K/pi of a decay process (module doc); in a biased
    run, multiplies its truth weight by P(decay in a region it reaches) x BR."""
    sel = np.flatnonzero(tr.alive & (tr.role == ROLE_PRIMARY) & np.isin(tr.flag, DECAY_FLAGS)
                         & ((tr.kind == KIND_PION) | (tr.kind == KIND_KAON)))
    if sel.size == 0:
        return None
    rng, setup = ctx.rng, ctx.setup
    start = setup.beam.start_z
    regs = regions(setup)
    zd, w = np.empty(sel.size), np.empty(sel.size)
    for kind, (ctau, br) in SPECIES.items():
        m = np.flatnonzero(tr.kind[sel] == kind)
        if m.size == 0:
            continue
        p = tr.p[sel[m]]
        prob = _region_probabilities(regs, ctx.params, kind, p, start)
        total = prob.sum(axis=1)
        # the region by its share, then the depth from the decay law restricted to it
        cum = np.cumsum(prob, axis=1) / total[:, None]
        r = np.minimum((rng.random(m.size)[:, None] >= cum).sum(axis=1), len(regs) - 1)
        lo = np.array([g.z0 for g in regs])[r] - start
        hi = np.array([g.z1 for g in regs])[r] - start
        depth, _ = forced_exponential(rng, p / float(MASSES[kind]) * ctau, lo, hi)
        zd[m] = start + depth
        w[m] = total * br
    if ctx.biased:
        ctx.truth.weight[tr.ev[sel]] *= w
    order = np.argsort(zd, kind="stable")
    return Pending(tr.ev[sel][order].copy(), zd[order])
