"""Upper limits on a signal count and on the coupling of the dark boson.

* :func:`poisson_upper_limit` -- exact Poisson limit for a counting experiment with known
  background: CLs (Read, J. Phys. G 28 (2002) 2693), solve
  P(n <= n_obs | s + b) / P(n <= n_obs | b) = 1 - CL,
  or the classical Neyman limit (``method="classical"``, P(n <= n_obs | s + b) = 1 - CL).
  For n_obs = 0 both give s_up = -ln(1 - CL) = 2.303 at 90 % CL, independent of b (CLs).
* :func:`cls_upper_limit` -- the same with an uncertain background: CLs+b and CLb averaged
  over the background's Gaussian uncertainty (truncated at 0; Cousins and Highland, NIM A 320
  (1992) 331, the "hybrid" CLs of the LEP searches), integrated adaptively.  pyhf's asymptotic
  formulae on a one-bin model (Cowan, Cranmer, Gross, Vitells, EPJC 71 (2011) 1554) are offered
  for comparison: they are badly off for n_obs = 0 and b << 1, and pyhf 0.7.6 toys are slow
  (and fail with numpy 2.4).
* :func:`coupling_limit` -- since the yield scales as coupling^2,
  g_90 = g_ref sqrt(n_up / N(g_ref)).
"""

from __future__ import annotations

import math

import numpy as np
from scipy import integrate, optimize, special, stats

#: 90 % CL upper limit on a Poisson mean with no event observed and no background: -ln(0.1)
ZERO_OBSERVED_UL90 = -math.log(0.1)

__all__ = ["ZERO_OBSERVED_UL90", "poisson_upper_limit", "cls_upper_limit", "coupling_limit", "single_bin_model"]


#: Largest relative background uncertainty the one-bin model describes: the normsys
#: interpolation of pyhf fails (NaN fits) or gives meaningless limits far beyond this.
MAX_RELATIVE_BACKGROUND_UNCERTAINTY = 10.0


def log_poisson_cdf(n: int, mean: float) -> float:
    """log P(N <= n | mean), also where P itself underflows (a background of ~750 events or more
    with few observed: ``poisson.cdf(0, 1000)`` is 0, and a ratio of two such is 0/0).

    Where the cdf is a normal float it is taken from scipy; else (then n < mean and the terms
    e^-mean mean^i / i! grow with i) it is -mean + log sum_{i<=n} mean^i / i!, summed in log space.
    """
    n = int(n)
    if mean <= 0.0:
        return 0.0
    p = float(stats.poisson.cdf(n, mean))
    if p > 1e-280:
        return math.log(p)
    i = np.arange(n + 1, dtype=float)
    terms = i * math.log(mean) - special.gammaln(i + 1.0)
    return float(-mean + special.logsumexp(terms))


def _log_cls(n: int, mean_sb: float, mean_b: float) -> float:
    """log CLs = log P(N <= n | s + b) - log P(N <= n | b), finite for any finite means."""
    value = log_poisson_cdf(n, mean_sb) - log_poisson_cdf(n, mean_b)
    if not math.isfinite(value):
        raise ValueError(f"CLs is not defined for n_obs={n}, s+b={mean_sb:g}, b={mean_b:g} "
                         "(the Poisson probabilities are out of the float range)")
    return value


def _check(n_obs, background, cl):
    if n_obs < 0 or int(n_obs) != n_obs:
        raise ValueError(f"observed count must be a non-negative integer, got {n_obs}")
    if not (math.isfinite(background) and background >= 0):
        raise ValueError(f"background must be a finite number >= 0, got {background}")
    if not 0 < cl < 1:
        raise ValueError(f"confidence level must be in (0, 1), got {cl}")


def poisson_upper_limit(n_obs: int, background: float = 0.0, cl: float = 0.9,
                        method: str = "cls") -> float:
    """Upper limit on the signal mean s for ``n_obs`` observed over known ``background``.

    ``method`` is "cls" (default) or "classical".  Returns s_up (events).
    """
    _check(n_obs, background, cl)
    n = int(n_obs)

    if method not in ("cls", "classical"):
        raise ValueError(f"method must be 'cls' or 'classical', got {method!r}")
    log_alpha = math.log1p(-cl)
    if method == "cls":  # in logs: P(n <= n_obs | b) underflows for large b (0/0)
        f = lambda s: _log_cls(n, s + background, background) - log_alpha  # noqa: E731
    else:
        f = lambda s: log_poisson_cdf(n, s + background) - log_alpha  # noqa: E731
    if f(0.0) <= 0.0:  # classical limit can be empty for large b and small n
        return 0.0
    hi = 10.0 + 10.0 * (n + background)
    while f(hi) > 0.0:  # (a confidence level close to 1: n = b = 0 at 0.99999 needs s > 11.5)
        hi *= 2.0
    return float(optimize.brentq(f, 0.0, hi, xtol=1e-10))


def _log_cdf_fast(n: int, mean: float) -> float:
    """:func:`log_poisson_cdf` by scipy's ufunc (~1 us a call); where it underflows (then mean > n)
    the sum from its largest term down, ``mean^n / n! sum_k prod_{j<k} (n - j) / mean``, whose
    terms fall at least as fast as ``(n / mean)^k``, until they no longer count (a few hundred
    terms at n = 1e5 instead of the n + 1 of the log-space sum: 2 ms a call there)."""
    p = float(special.pdtr(n, mean)) if mean > 0.0 else 1.0
    if p > 1e-280:
        return math.log(p)
    if mean <= n:  # (not expected: the cdf is >= ~1/2 there)
        return log_poisson_cdf(n, mean)
    total = term = 1.0
    for j in range(n):
        term *= (n - j) / mean
        total += term
        if term < 1e-17 * total:
            break
    return -mean + n * math.log(mean) - math.lgamma(n + 1.0) + math.log(total)


def _log_averaged_cdf(n: int, s: float, background: float, uncertainty: float) -> float:
    """log of P(N <= n | s + b) averaged over b ~ Gauss(background, uncertainty), b >= 0, up to
    the Gaussian's normalisation (which cancels in CLs).  The log of the integrand is concave
    in b (a Poisson cdf is log-concave in its mean), so it has one maximum: the integrand is
    scaled by it and integrated adaptively, piece by piece between its maximum and the cdf's
    edge (b = n - s, +-sqrt(n + 1) wide), where it is above e^-60 of its maximum: it can be as
    narrow as one event where the uncertainty is thousands, or a plateau that ends at that edge
    far inside the Gaussian (1000 observed on 3000 +- 20000 lost 13 % of the limit with the
    maximum as the only break point; review of stop 48)."""
    lo = 0.0  # (not background - 8 sigma: a count far below the background puts the weight near b = n)
    hi = background + 8.0 * uncertainty

    def log_f(b):
        return _log_cdf_fast(n, s + b) - 0.5 * ((b - background) / uncertainty) ** 2

    # (the tolerance follows the narrower of the Gaussian and the cdf's edge: one of 1e-6 over [0, hi] put the
    # "maximum" many sigma off a Gaussian 1e-8 wide, and the scaled integrand overflowed; third review of stop 48)
    mode = optimize.minimize_scalar(lambda b: -log_f(b), bounds=(lo, hi), method="bounded",
                                    options={"xatol": 1e-3 * min(uncertainty, math.sqrt(n + 1.0))}).x
    peak = log_f(mode)

    def drop(b):  # > 0 where the integrand is above e^-60 of its maximum (monotone on each side: concave)
        return log_f(b) - peak + 60.0

    lo = lo if drop(lo) >= 0 else optimize.brentq(drop, lo, mode, xtol=1e-9 * max(1.0, mode))
    hi = hi if drop(hi) >= 0 else optimize.brentq(drop, mode, hi, xtol=1e-9 * max(1.0, hi))
    width = math.sqrt(n + 1.0)
    breaks = {lo, hi, float(mode), *(n - s + k * width for k in (-10, -3, 0, 3, 10, 30))}
    edges = sorted(b for b in breaks if lo <= b <= hi)
    value = sum(integrate.quad(lambda b: math.exp(log_f(b) - peak), a, c, limit=200, epsabs=1e-13 * (c - a),
                               epsrel=1e-9)[0]
                for a, c in zip(edges[:-1], edges[1:], strict=True) if c > a)
    return peak + math.log(value)


def _log_cls_hybrid(n: int, s: float, background: float, uncertainty: float) -> float:
    """log CLs of ``s`` with CLs+b and CLb averaged over the background's uncertainty."""
    value = _log_averaged_cdf(n, s, background, uncertainty) - _log_averaged_cdf(n, 0.0, background, uncertainty)
    if not math.isfinite(value):
        raise ValueError(f"CLs is not defined for n_obs={n}, s={s:g}, b={background:g} +- {uncertainty:g}")
    return value


def single_bin_model(background: float, background_uncertainty: float):
    """pyhf one-bin model: signal (nominal 1 event, POI mu) + background with normsys."""
    import pyhf

    b = max(background, 1e-9)
    rel = background_uncertainty / b if background > 0 else 0.0
    bkg_mods = []
    if rel > 0:
        bkg_mods.append({"name": "bkg_norm", "type": "normsys",
                         "data": {"hi": 1.0 + rel, "lo": max(1.0 - rel, 1e-3)}})
    spec = {"channels": [{"name": "signal_box", "samples": [
        {"name": "signal", "data": [1.0],
         "modifiers": [{"name": "mu", "type": "normfactor", "data": None}]},
        {"name": "background", "data": [b], "modifiers": bkg_mods},
    ]}]}
    return pyhf.Model(spec, poi_name="mu")


def cls_upper_limit(n_obs: int, background: float, background_uncertainty: float = 0.0,
                    cl: float = 0.9, calctype: str = "hybrid") -> float:
    """CLs upper limit on the signal count over an uncertain background (events).

    Args:
        n_obs: observed events in the box.  background: expected background.
        background_uncertainty: absolute 1-sigma uncertainty on the background.
        cl: confidence level (0.9 for 90 %).
        calctype: "hybrid" (default) or "asymptotics".

    "hybrid": for one bin the test statistic orders the counts, so CLs+b = P(n <= n_obs | s + b)
    and CLb = P(n <= n_obs | b), each averaged over b ~ Gauss(background, uncertainty)
    truncated at 0 (Cousins-Highland).  Without an uncertainty it is :func:`poisson_upper_limit`;
    for n_obs = 0 it is -ln(1 - CL) whatever the background.  Before stop 48 the default took b
    at its conditional fit to the observed count for each signal hypothesis, without
    fluctuating the background's measurement: for n_obs > 0 that pulled b down as s grew, and
    the limits were up to 2x too loose (20 observed on 20 +- 6: 16.4 events for 13.2; coverage
    1.000 at a nominal 0.90; statistics review, stop 48).
    "asymptotics": pyhf's asymptotic calculator on :func:`single_bin_model` (a normsys on the
    background); it is known to be too optimistic for n_obs = 0 with b << 1 (gives ~1.4 instead
    of 2.3 events) and is offered for comparison.
    """
    _check(n_obs, background, cl)
    if not (math.isfinite(background_uncertainty) and background_uncertainty >= 0):
        raise ValueError(f"background uncertainty must be a finite number >= 0, got {background_uncertainty}")
    if background_uncertainty > 0 and background == 0:
        raise ValueError(f"background uncertainty {background_uncertainty:g} on a zero background: the model "
                         "constrains the background normalisation, so give a background > 0 (or no uncertainty)")
    if background_uncertainty > MAX_RELATIVE_BACKGROUND_UNCERTAINTY * background:
        ratio = background_uncertainty / background
        raise ValueError(f"background uncertainty {background_uncertainty:g} is {ratio:.3g} times the background "
                         f"{background:g}; a background estimate is meaningful with an uncertainty up to "
                         f"{MAX_RELATIVE_BACKGROUND_UNCERTAINTY:g} times it")
    if calctype not in ("hybrid", "asymptotics"):
        raise ValueError(f"calctype must be 'hybrid' or 'asymptotics', got {calctype!r}")
    n = int(n_obs)
    if calctype == "hybrid":
        if background_uncertainty == 0:
            return poisson_upper_limit(n, background, cl)
        return _solve_cls(lambda s: _log_cls_hybrid(n, s, background, background_uncertainty), n, background, cl,
                          xtol=1e-8)
    import pyhf

    model = single_bin_model(background, background_uncertainty)
    data = pyhf.tensorlib.astensor([float(n_obs)] + model.config.auxdata)
    bounds = model.config.suggested_bounds()
    bounds[model.config.poi_index] = (0.0, 50.0 + 10.0 * (n_obs + background))

    def cls_asymptotic(mu):
        value = float(pyhf.infer.hypotest(mu, data, model, test_stat="qtilde",
                                          calctype="asymptotics", par_bounds=bounds))
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"pyhf's asymptotic CLs is {value} at mu={mu:g} (n_obs={n}, b={background:g}, "
                             f"background uncertainty {background_uncertainty:g}); use calctype='hybrid'")
        return math.log(value)

    return _solve_cls(cls_asymptotic, n, background, cl, xtol=1e-6)


def _solve_cls(log_cls, n: int, background: float, cl: float, xtol: float) -> float:
    """The signal s > 0 where ``log_cls(s)`` = log(1 - cl)."""
    log_alpha = math.log1p(-cl)

    def f(mu):
        return log_cls(mu) - log_alpha

    lo, hi = 1e-3, 2.0
    while f(hi) > 0:  # the limit is below n_obs + 10 sqrt(n_obs) + 10 for any background
        lo, hi = hi, hi * 2.0
        if hi > 4.0 * (n + 10.0 * math.sqrt(n) + 10.0):
            raise RuntimeError(f"CLs scan did not converge (n_obs={n}, b={background:g})")
    return float(optimize.brentq(f, lo, hi, xtol=xtol * max(1.0, hi)))


def coupling_limit(mass: float, n_up: float, *, n_ref: float | None = None,
                   coupling_ref: float = 1e-4, **yield_kwargs) -> float:
    """Coupling excluded at the level of ``n_up`` signal events at X mass ``mass`` (MeV).

    ``n_ref`` is the expected count at ``coupling_ref``; if not given it is computed with
    :func:`na64reco.physics.yields.expected_signal` (``yield_kwargs`` must then contain
    ``n_mot`` and may contain ``efficiency``, ``x_min``, ...).  Uses N ~ coupling^2.
    """
    if not (math.isfinite(n_up) and n_up >= 0):
        raise ValueError(f"n_up {n_up}: expected a finite number of signal events >= 0")
    if n_ref is None:
        from na64reco.physics.yields import expected_signal

        n_mot = yield_kwargs.pop("n_mot")
        n_ref = expected_signal(n_mot, mass, coupling_ref, **yield_kwargs)
    if not math.isfinite(n_ref) or n_ref < 0:
        raise ValueError(f"n_ref {n_ref}: expected a finite expected count >= 0 at coupling {coupling_ref:g}")
    if n_ref == 0:
        return math.inf
    return float(coupling_ref * np.sqrt(n_up / n_ref))
