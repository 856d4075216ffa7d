"""Hadron punch-through of HCAL modules: a leading-particle energy-flow model.

A hadron of energy E enters N HCAL modules of ``module_lambda`` nucleon interaction
lengths each; for species s the thickness is T = N module_lambda / r_s, with r_s = the
species' interaction length over the nucleon one (pions and kaons interact less than
nucleons).  The model (every number in ``simulation.hadron.punchthrough`` of the setup):

* inelastic interactions are a Poisson process along the path, mean free path 1 (in
  lambda_s), independent of the energy;
* at each interaction the leading particle keeps the species and a fraction x of the
  energy, x ~ U(0, 1) (flat leading-particle spectrum, *assumed*); the rest, (1 - x) E,
  is deposited with the visible fraction f_vis;
* the hadron "looks like no hadronic energy" (punches through) when the visible energy
  of all its interactions in the N modules stays below the species' cut: ~2.5 GeV for a
  charged hadron (which looks like a muon, MIP 2.2 GeV per module on top) and ~0.1 GeV for
  a neutral one (seed 004).

The probability of punching through has the closed form exp(-T) when the cut is zero
(no interaction allowed), which the tests check; with the cut, soft interactions
(x > 1 - budget/(f_vis E)) raise it by a factor ~exp(T q), q the soft share.

Sampling:

* :func:`punch_through` with ``biased=False`` follows each hadron (unbiased, only usable
  where the probability is >~ 1e-4);
* with ``biased=True`` every hadron is forced through.  With an energy-independent mean
  free path only the number k of interactions matters (not where they are), so the
  probability is sum_k Poisson(k; T) P(k soft interactions): each term is tallied
  exactly, and the energy fraction of each interaction is forced soft (x in [x_min, 1],
  weight 1 - x_min, x_min = 1 - remaining budget / (f_vis E)).  The per-hadron tallies
  average to the punch-through probability for any N (1e-14 from a thousand hadrons).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from na64reco.errors import ConfigError

SPECIES = ("pion", "kaon", "proton", "neutron", "klong")
NEUTRAL = ("neutron", "klong")


@dataclass(frozen=True)
class PunchThroughModel:
    module_lambda: float  # nucleon interaction lengths per HCAL module
    lambda_ratio: dict[str, float]  # lambda_species / lambda_nucleon
    visible_fraction: float  # (all three from the setup's simulation.hadron section, no defaults)
    cut_charged: float  # MeV
    cut_neutral: float  # MeV
    max_interactions: int = 60

    def thickness(self, species: str, n_modules) -> float:
        """Thickness of ``n_modules`` modules in interaction lengths of ``species``."""
        if species not in self.lambda_ratio:
            raise ConfigError(f"punch-through: unknown species {species!r} (known: {', '.join(self.lambda_ratio)})")
        return float(n_modules) * self.module_lambda / self.lambda_ratio[species]

    def cut(self, species: str) -> float:
        return self.cut_neutral if species in NEUTRAL else self.cut_charged


def lambda_ratios(model: PunchThroughModel | None, kinds) -> np.ndarray:
    """lambda_species / lambda_nucleon for each track kind (``sim.tracks.KIND_*``): the model's pion
    and kaon ratios, 1 for every other kind and for all of them without a model."""
    from na64reco.sim.tracks import KIND_KAON, KIND_PION

    kinds = np.asarray(kinds)
    out = np.ones(kinds.shape)
    if model is not None:
        out[kinds == KIND_PION] = model.lambda_ratio.get("pion", 1.0)
        out[kinds == KIND_KAON] = model.lambda_ratio.get("kaon", 1.0)
    return out


def punch_through(rng: np.random.Generator, model: PunchThroughModel, species: str, energy, n_modules: float,
                  n: int | None = None, biased: bool = True) -> np.ndarray:
    """Per-hadron punch-through outcomes through ``n_modules`` modules.

    ``energy``: MeV, scalar (with ``n``) or an array (one hadron each).  Returns, per
    hadron, the weight of the biased estimate (``biased=True``) or 1/0 for passed/failed
    (``biased=False``); in both cases the mean is the punch-through probability.
    """
    e = np.asarray(energy, float)
    e = np.full(n, float(e)) if e.ndim == 0 else e.copy()
    left = np.full(e.size, model.thickness(species, n_modules))
    cut, fvis = model.cut(species), model.visible_fraction
    dep = np.zeros(e.size)
    if not biased:
        passed = np.zeros(e.size)
        active = np.arange(e.size)
        for _ in range(model.max_interactions):
            if active.size == 0:
                break
            d = rng.exponential(1.0, active.size)
            esc = d >= left[active]
            passed[active[esc]] = 1.0
            active = active[~esc]
            left[active] -= d[~esc]
            x = rng.random(active.size)
            dep[active] += (1.0 - x) * e[active] * fvis
            e[active] *= x
            active = active[dep[active] < cut]
        return passed
    # Interactions are a Poisson process of mean T independent of the energy, so only
    # their number k matters: P = sum_k e^-T T^k / k! P(k interactions all soft).  The k-th
    # term is tallied exactly; the x of each interaction is forced soft (weight = budget).
    thick = left[0]
    soft = np.ones(e.size)  # product of the soft-interaction probabilities so far
    tally = np.zeros(e.size)
    log_poisson = -thick
    for k in range(model.max_interactions):
        term = np.exp(log_poisson) * soft
        tally += term
        budget = np.clip((cut - dep) / np.maximum(e * fvis, 1e-300), 0.0, 1.0)
        x = 1.0 - budget * rng.random(e.size)  # U(1 - budget, 1)
        soft = soft * budget
        dep += (1.0 - x) * e * fvis
        e = e * x
        log_poisson += np.log(thick) - np.log(k + 1.0)
        if k > thick and not np.any(np.exp(log_poisson) * soft > 1e-9 * tally):
            break
    return tally


def punch_through_probability(rng: np.random.Generator, model: PunchThroughModel, species: str, energy: float,
                              n_modules: float, n: int = 2000) -> tuple[float, float]:
    """Biased estimate of the punch-through probability and its statistical error."""
    w = punch_through(rng, model, species, energy, n_modules, n=n, biased=True)
    return float(w.mean()), float(w.std(ddof=1) / np.sqrt(n)) if n > 1 else float("nan")


__all__ = ["NEUTRAL", "SPECIES", "PunchThroughModel", "punch_through", "punch_through_probability"]
