"""Biased (forced) sampling of rare processes, with exact weights.

A rare outcome (a decay inside a short volume, a hadron crossing four HCAL modules without
showering, a trident taking half the muon energy) is *forced*: the sampler draws the
quantity from its true distribution restricted to the forced region and returns the weight
``w = P(forced region)``, the true probability of what was forced.  Chains multiply the
weights.  For N sampled particles the rate per particle of anything downstream (e.g. "in
the signal box after all cuts") is

    r = sum(w over passing events) / N,   sigma_r = sqrt(sum(w^2 over passing events)) / N

(:func:`weighted_rate`), unbiased for any N, so a 1e-13 rate is estimated from a few
thousand events.  The truth ``weight`` of a forced simulation carries ``w`` into the
cut-flow (``CutflowTable`` sums w and w^2).

Closed forms used (all exact):

* exponential depth with mean free path L restricted to [a, b]:
  P = exp(-a/L) - exp(-b/L); inverse CDF d = -L ln(exp(-a/L) - u P), u ~ U(0, 1);
* survival without interaction over a thickness t: exp(-t/L);
* decay in flight of a particle of momentum p, mass m, c tau: L = (p/m) c tau (over several
  regions: :mod:`na64reco.sim.decays`);
* a 1/v spectrum on [v_min, v_max] restricted to [a, b]: P = ln(b/a) / ln(v_max/v_min),
  v = a (b/a)^u.
"""

from __future__ import annotations

import numpy as np

from na64reco.errors import ConfigError

__all__ = ["FORCED_PROCESSES", "forced_exponential", "forced_log_uniform", "log_uniform_fraction",
           "species_per_mot", "survival", "weighted_rate"]


def survival(thickness, mean_free_path):
    """Probability of crossing ``thickness`` without interacting: exp(-t/L)."""
    return np.exp(-np.asarray(thickness, float) / np.asarray(mean_free_path, float))


def forced_exponential(rng: np.random.Generator, mean_free_path, lo, hi, n: int | None = None):
    """Depths of an Exp(L) process forced into [lo, hi]; returns ``(depth, weight)``.

    ``weight`` = P(lo <= d < hi) = exp(-lo/L) - exp(-hi/L); ``hi`` may be ``inf``.
    Arrays broadcast; ``n`` gives the size when all inputs are scalars.
    """
    lam = np.asarray(mean_free_path, float)
    lo, hi = np.asarray(lo, float), np.asarray(hi, float)
    if np.any(lam <= 0) or np.any(hi < lo):
        raise ConfigError(f"forced exponential needs L > 0 and hi >= lo (got L={lam}, lo={lo}, hi={hi})")
    shape = np.broadcast(lam, lo, hi).shape if n is None else (n,)
    a = np.exp(-lo / lam)
    b = np.exp(-hi / lam)
    weight = np.broadcast_to(a - b, shape).astype(float)
    u = rng.random(shape)
    depth = -lam * np.log(a - u * (a - b))
    return np.clip(depth, lo, hi), weight


def log_uniform_fraction(v_min: float, v_max: float, lo: float, hi: float) -> float:
    """Share of a dN/dv ~ 1/v spectrum on [v_min, v_max] that lies in [lo, hi] (clipped)."""
    lo, hi = max(lo, v_min), min(hi, v_max)
    if hi <= lo:
        return 0.0
    return float(np.log(hi / lo) / np.log(v_max / v_min))


def forced_log_uniform(rng: np.random.Generator, n: int, v_min: float, v_max: float, lo: float, hi: float):
    """``n`` values of a 1/v spectrum on [v_min, v_max] forced into [lo, hi]; ``(v, weight)``."""
    w = log_uniform_fraction(v_min, v_max, lo, hi)
    if w <= 0:
        raise ConfigError(f"forced range [{lo}, {hi}] does not overlap the spectrum [{v_min}, {v_max}]")
    lo, hi = max(lo, v_min), min(hi, v_max)
    return lo * (hi / lo) ** rng.random(n), np.full(n, w)


def weighted_rate(weights, passed=None, n_sampled: float | None = None) -> tuple[float, float]:
    """Rate per sampled particle and its error: (sum w, sqrt(sum w^2)) / N over ``passed``.

    ``n_sampled`` defaults to ``len(weights)`` (every sampled particle has a weight).
    """
    w = np.asarray(weights, float)
    n = float(len(w) if n_sampled is None else n_sampled)
    if n <= 0:
        raise ConfigError(f"weighted rate needs a positive number of sampled particles, got {n_sampled!r}")
    if passed is not None:
        w = w[np.asarray(passed, bool)]
    return float(w.sum() / n), float(np.sqrt(np.sum(w * w)) / n)


#: Processes whose single-process runs are biased: truth weight = probability of the forced
#: outcome per beam particle of the process's species.
FORCED_PROCESSES = ("kdecay", "pidecay", "dimuon", "punchthrough")


def species_per_mot(setup, process: str) -> float:
    """Beam particles of the species a forced ``process`` starts from, per MOT.

    K: ``beam.hadron_admixture x beam.kaon_to_pion``; pi: ``beam.hadron_admixture``;
    tridents and leading hadrons start from the beam muon: 1.  So the rate per MOT of a
    forced run is ``species_per_mot x sum(w) / N``.
    """
    if process == "kdecay":
        return float(setup.beam.hadron_admixture * setup.beam.kaon_to_pion)
    if process == "pidecay":
        return float(setup.beam.hadron_admixture)
    if process in ("dimuon", "punchthrough"):
        return 1.0
    raise ConfigError(f"process {process!r} is not a forced process (forced: {', '.join(FORCED_PROCESSES)})")
