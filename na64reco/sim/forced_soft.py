"""Forced soft pile-up muons: the near out-of-time beam muons made to lose energy in the ECAL.

A beam muon that lost a large fraction of its energy upstream of MS2 is, in this simulator,
one that had a hard radiative loss in the ECAL (the active target): the only element before
MS2 where a muon loses more than its ionisation (:class:`na64reco.sim.interactions.MuonLosses`:
losses with v = E_loss / E, knock-on electrons, bremsstrahlung and e+e- pairs, are a Poisson process
of density dN/dv from their cross sections, ``SimParams.ecal_losses``).  A pile-up muon B with
momentum ``(1 - v) x 160 GeV`` is what the mis-reconstruction can take for a scattered muon, at ~1e-3 of the beam muons.

:class:`ForcedSoft` (``simulate(forced_pileup=..., forced_soft=...)``) is exact biased sampling of
that tail for the ``forced_pileup.count`` near muons of every event (the muons in N of
:class:`na64reco.sim.occupancy.ForcedPileup`), as :mod:`na64reco.sim.forced_noise` does for the
noise.  The region R of a muon: at least one discrete loss in the ECAL with ``v`` in
``[v_min, v_max)``.  The losses of a Poisson process in disjoint ranges of v are independent, so
given R:

* the losses outside ``[v_min, v_max)`` are drawn as in the natural transport (the natural
  draws, those inside the range dropped: the same process thinned);
* the number inside is a zero-truncated Poisson of mean ``n_R = N(v_min) - N(v_max)``
  (the spectrum at the beam energy, :meth:`na64reco.physics.muon_losses.LossSpectrum.mean_number`):
  the first loss's place in a unit
  interval from its conditional law ``-ln(1 - u (1 - e^-n_R)) / n_R``, then Poisson
  ``n_R (1 - t_1)`` more; each v from the spectrum restricted to the range (inverse CDF).

The natural probability of R for a muon crossing the ECAL is ``P_R = 1 - exp(-n_R)``
(:meth:`ForcedSoft.probability`, closed form), so for any event quantity g of the stratum
``E[g; every near muon in R] = P_R^k E_forced[g]``.  A near muon that misses the ECAL cells
cannot be in R: it is left as it is and counted (``soft_missed`` in the crossings' truth,
:func:`soft_weight` then takes the fraction that was forced).

**Their deposits.**  The forced muon's ECAL signal is no MIP: the loss showers in the ECAL
(:func:`na64reco.sim.transport._em_shower`, the lateral spread of every discrete loss) at the
muon's time t_B, well inside the MSADC readout window for the near times.  The deposits its
transport records up to the last tracker plane (ECAL shower + MIP, upstream counters, VETO,
VHCAL) are merged into the event's calorimeter deposits and digitised with them
(:func:`na64reco.sim.occupancy.soft_deposits`, :func:`na64reco.sim.generate.simulate_spill`;
the digitisation is redone from the generator state of the first pass, so the trackers and the
truth are those of the sample without them); ``pileup_muon_e_ecal`` (GeV) per muon in the
crossings.  Before 2026-11-30 (issue 9) they were dropped, as for every out-of-time pile-up muon.

The near muons' momentum behind the last tracker plane (``pileup_muon_p``, GeV) and the v of
their forced losses (``pileup_muon_v_forced``: their sum, 0 for a muon not forced) go to the
``true_crossings`` file.  Without ``forced_soft`` nothing changes (no random number drawn).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from na64reco.errors import ConfigError


@dataclass(frozen=True)
class ForcedSoft:
    """Every near pile-up muon forced into R: a discrete loss in the ECAL with ``v`` in
    ``[v_min, v_max)`` (module doc)."""

    v_min: float
    v_max: float = 1.0

    @staticmethod
    def of(v_min: float, v_max: float = 1.0) -> ForcedSoft:
        lo, hi = float(v_min), float(v_max)
        if not (0.0 < lo < hi <= 1.0):
            raise ConfigError(f"forced soft pile-up: need 0 < v_min < v_max <= 1 (fractions of the muon's energy "
                              f"lost in one discrete loss), got v_min={v_min!r}, v_max={v_max!r}")
        return ForcedSoft(lo, hi)

    @staticmethod
    def from_momenta(p_low_gev: float, p_high_gev: float, beam_gev: float) -> ForcedSoft:
        """The range of one loss that takes a ``beam_gev`` muon to ``[p_low, p_high)`` GeV (its
        ionisation and other losses aside)."""
        if not (0.0 <= p_low_gev < p_high_gev < beam_gev):
            raise ConfigError(f"forced soft pile-up: need 0 <= p_low < p_high < beam energy {beam_gev:g} GeV, got "
                              f"[{p_low_gev!r}, {p_high_gev!r}]")
        return ForcedSoft.of(1.0 - p_high_gev / beam_gev, 1.0 - p_low_gev / beam_gev)

    def expected_losses(self, params) -> float:
        """n_R: the natural mean number of losses in the range per muon crossing the ECAL."""
        self._check(params)
        return params.ecal_losses.table(params.beam_energy).mean_number(self.v_min, self.v_max)

    def probability(self, params) -> float:
        """P_R = 1 - exp(-n_R): the natural probability of R for a muon crossing the ECAL."""
        return float(-math.expm1(-self.expected_losses(params)))

    def _check(self, params) -> None:
        if self.v_min <= params.radiative_v_min:
            raise ConfigError(f"forced soft pile-up: v_min {self.v_min:g} must be above the simulation's "
                              f"radiative_v_min {params.radiative_v_min:g} (softer losses are in the MIP part)")

    def to_dict(self) -> dict:
        return {"v_min": self.v_min, "v_max": self.v_max}


class SoftLosses:
    """The transport's hook (:class:`na64reco.sim.transport.Context` ``forced_soft``): which
    transported muons (by their label ``Tracks.ev``) are forced, and what was done to them."""

    def __init__(self, forced: ForcedSoft, params, chosen: np.ndarray):
        forced._check(params)
        self.forced = forced
        self.chosen = np.asarray(chosen, bool)  # per label
        self.n_r = forced.expected_losses(params)
        self.spectrum = params.ecal_losses.table(params.beam_energy)
        self.v_forced = np.zeros(self.chosen.size)  # per label: the sum of its forced v (0: not forced)

    def losses(self, rng: np.random.Generator, labels: np.ndarray, k: np.ndarray, v: np.ndarray,
               depth: np.ndarray, energy: np.ndarray, p: np.ndarray):
        """The ECAL's discrete losses ``(k, v, depth, energy)`` (track index among the muons inside,
        fraction, depth fraction, the muon's energy; ``p`` the muons' energies) with the chosen
        muons' losses in the range replaced by a draw conditioned on at least one."""
        on = np.flatnonzero(self.chosen[labels])
        if not on.size:
            return k, v, depth, energy
        lo, hi = self.forced.v_min, self.forced.v_max
        forced_track = np.zeros(labels.size, bool)
        forced_track[on] = True
        keep = ~(forced_track[k] & (v >= lo) & (v < hi))  # the natural process outside the range
        u = rng.random(on.size)
        t1 = -np.log1p(-u * -math.expm1(-self.n_r)) / self.n_r  # first loss's place, given >= 1
        n = 1 + rng.poisson(self.n_r * (1.0 - t1))
        idx = np.repeat(on, n)
        f_lo, f_hi = self.spectrum.cdf(np.array([lo, hi]))
        vf = np.clip(self.spectrum.quantile(f_lo + rng.random(idx.size) * (f_hi - f_lo)), lo, np.nextafter(hi, lo))
        np.add.at(self.v_forced, labels[idx], vf)
        return (np.concatenate([k[keep], idx]), np.concatenate([v[keep], vf]),
                np.concatenate([depth[keep], rng.random(idx.size)]), np.concatenate([energy[keep], p[idx]]))


def chosen_near(times: np.ndarray, near: list[tuple[float, float]]) -> np.ndarray:
    """The muons whose time lies in the near intervals ``near`` (the forced ones of a
    :class:`~na64reco.sim.occupancy.ForcedPileup`; the others are drawn outside them)."""
    t = np.asarray(times, float)
    out = np.zeros(t.size, bool)
    for a, b in near:
        out |= (t >= a) & (t < b)
    return out


def soft_weight(crossings: dict, forced: dict) -> dict:
    """The weight of a forced-soft sample from its ``true_crossings`` file and the file's
    ``simulation.forced_soft`` metadata: per near muon ``P_R``, times the fraction of the near
    muons that were forced (a muon missing the ECAL cannot be in R), with the counts."""
    near = np.asarray(crossings["pileup_muon_near"], bool)
    done = np.asarray(crossings["pileup_muon_v_forced"], float)[near] > 0
    n, n_done = int(near.sum()), int(done.sum())
    return {"p_region": float(forced["probability"]), "near_muons": n, "forced": n_done, "soft_missed": n - n_done,
            "p_region_times_forced_fraction": float(forced["probability"]) * n_done / max(n, 1)}
