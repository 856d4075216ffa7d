"""Background estimates for the signal box: data-driven tails and MC components.

Pure functions on numpy arrays, usable from notebooks, scripts and processors.

Momentum (energy) mis-reconstruction, from data
    The low-side tail of the beam peak (p_out of NA64mu, E_ECAL of NA64e) is fitted in a
    sideband next to the signal box (e.g. 80 <= p_out < 120 GeV, or the box region of
    events failing one veto cut) with a tail shape, and the fitted tail is extrapolated
    into the box::

        n_box = nu * I(box; theta) / I(sideband; theta)

    where ``nu`` is the fitted sideband yield and ``I`` the integral of the tail shape.
    The statistical error propagates the fit covariance of ``(nu, theta)`` (numerical
    Hessian of the negative log-likelihood, delta method); the shape systematic is the
    difference to the extrapolation of an alternative tail model.  Both are added in
    quadrature.

    Tail models (``x0`` is the peak, i.e. the beam energy):

    ``exponential``  g(x) = exp(s (x - b)),            s in 1/GeV (s > 0: rising to the peak)
    ``power_law``    g(x) = ((x0 - x) / (x0 - b))^-k,  k dimensionless, x < x0

    (``b`` is the upper edge of the fit range, a fixed reference point.)

MC components (K/pi decays in flight, punch-through, dimuons, ...)
    From the truth weights of simulated events in the box: with weights being expected
    events per simulated beam particle, ``n = exposure / n_simulated * sum(w)`` with error
    ``exposure / n_simulated * sqrt(sum(w^2))``.  With no MC event in the box the
    component is an upper limit (90 % CL Poisson, 2.3 events of the mean weight).

Tables
    :class:`BackgroundTable` collects components and combines them.  The **estimated rows**
    (those with a central value) add, their errors in quadrature; a row that is only an upper
    limit ``< u`` is not an estimate: it is listed beside that total, never added as
    ``u +- u``.  The conservative total adds each limit at its value ``u`` with no error of its
    own, as the published NA64mu 2022 table does: 0.05 +- 0.03, 0.010 +- 0.001, < 0.01 ->
    0.06 +- 0.03 estimated, 0.07 +- 0.03 conservatively.

Everything is in the unit of the input arrays (GeV for the reco record).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np
from scipy import optimize

from na64reco.errors import NA64Error

__all__ = [
    "TAIL_MODELS",
    "DESIGN_NA64MU_PER_MOT",
    "DESIGN_PUNCHTHROUGH_100GEV",
    "BackgroundComponent",
    "BackgroundTable",
    "TailFit",
    "TailModel",
    "dimuon_estimate",
    "dimuon_from_json",
    "single_scatter_from_json",
    "extrapolate",
    "factorised_rate",
    "fit_tail",
    "independence_ratio",
    "mc_component",
    "mc_component_from_sums",
    "misreco_from_json",
    "misreconstruction_background",
    "published_na64mu_2022",
    "rate_component",
    "sum_components",
]

#: Minimum number of sideband events for a tail fit.
MIN_SIDEBAND_EVENTS = 5


# ----------------------------------------------------------------------------------------
# tail shapes
@dataclass(frozen=True)
class TailModel:
    """A one-parameter tail shape ``g(x; theta)`` with a closed-form integral.

    ``ref`` is a fixed reference point (the upper edge of the fit range) and ``peak``
    the position of the beam peak (used by shapes in the distance to the peak).
    """

    name: str
    parameter: str
    ref: float
    peak: float

    def log_shape(self, x: np.ndarray, theta: float) -> np.ndarray:
        x = np.asarray(x, dtype=float)
        if self.name == "exponential":
            return theta * (x - self.ref)
        return -theta * np.log((self.peak - x) / (self.peak - self.ref))

    def integral(self, lo: float, hi: float, theta: float) -> float:
        """Integral of ``g`` over ``[lo, hi]``."""
        if hi <= lo:
            return 0.0
        if self.name == "exponential":
            width = hi - lo
            if abs(theta * width) < 1e-12:
                return width * math.exp(theta * (lo - self.ref))
            return math.exp(theta * (lo - self.ref)) * math.expm1(theta * width) / theta
        scale = self.peak - self.ref
        t1, t2 = (self.peak - hi) / scale, (self.peak - lo) / scale
        one_minus_k = 1.0 - theta
        if abs(one_minus_k) < 1e-9:
            return scale * math.log(t2 / t1)
        return scale * (t2 ** one_minus_k - t1 ** one_minus_k) / one_minus_k

    def bounds(self, fit_range: tuple[float, float]) -> tuple[float, float]:
        """Search interval of the shape parameter."""
        if self.name == "exponential":
            width = fit_range[1] - fit_range[0]
            return (-60.0 / width, 60.0 / width)
        return (-30.0, 60.0)


def _exponential(ref: float, peak: float) -> TailModel:
    return TailModel("exponential", "slope", ref, peak)


def _power_law(ref: float, peak: float) -> TailModel:
    return TailModel("power_law", "index", ref, peak)


TAIL_MODELS = {"exponential": _exponential, "power_law": _power_law}


def _model(name: str, fit_range: tuple[float, float], peak: float) -> TailModel:
    if name not in TAIL_MODELS:
        raise NA64Error(f"unknown tail model {name!r}; choose one of {', '.join(TAIL_MODELS)}")
    if name == "power_law" and not fit_range[1] < peak:
        raise NA64Error(f"power_law tail: the fit range {fit_range} must end below the peak {peak:g}")
    return TAIL_MODELS[name](float(fit_range[1]), float(peak))


# ----------------------------------------------------------------------------------------
# fit
@dataclass(frozen=True)
class TailFit:
    """Result of a tail fit: yield ``nu`` in the fit range, shape parameter ``theta``.

    ``covariance`` is the 2x2 covariance of ``(nu, theta)`` from the Hessian of the
    negative log-likelihood at the minimum.
    """

    model: TailModel
    fit_range: tuple[float, float]
    nu: float
    theta: float
    covariance: np.ndarray
    n_events: int
    nll: float
    binned: bool

    @property
    def theta_error(self) -> float:
        return float(math.sqrt(self.covariance[1, 1]))


def _hessian(f, x: np.ndarray, steps: np.ndarray) -> np.ndarray:
    """Central finite-difference Hessian of a scalar function."""
    n = len(x)
    h = np.zeros((n, n))
    f0 = f(x)
    for i in range(n):
        ei = np.zeros(n)
        ei[i] = steps[i]
        h[i, i] = (f(x + ei) - 2 * f0 + f(x - ei)) / steps[i] ** 2
        for j in range(i + 1, n):
            ej = np.zeros(n)
            ej[j] = steps[j]
            h[i, j] = h[j, i] = (f(x + ei + ej) - f(x + ei - ej) - f(x - ei + ej) + f(x - ei - ej)) / (
                4 * steps[i] * steps[j])
    return h


def fit_tail(values=None, fit_range: tuple[float, float] | None = None, *, model: str = "exponential",
             peak: float | None = None, counts=None, edges=None) -> TailFit:
    """Fit a tail shape to the events in ``fit_range`` (extended maximum likelihood).

    Either unbinned (``values``: the variable of each sideband event; events outside
    ``fit_range`` are ignored) or binned (``counts`` in bins ``edges`` covering
    ``fit_range``; Poisson likelihood).  ``peak`` is the beam peak (same unit).  Both are
    required: the sideband is the analysis's (its selection's ``sidebands``), the peak its beam's.
    """
    if fit_range is None or peak is None:
        raise NA64Error("fit_tail: give fit_range (the sideband, e.g. (80, 120) GeV of p_out for NA64mu) and peak "
                        "(the beam energy in the same unit): they depend on the setup and the selection")
    lo, hi = float(fit_range[0]), float(fit_range[1])
    if not lo < hi:
        raise NA64Error(f"fit range {fit_range}: the lower edge must be below the upper edge")
    tail = _model(model, (lo, hi), peak)
    binned = counts is not None
    if binned:
        if values is not None:
            raise NA64Error("fit_tail: give either values (unbinned) or counts and edges (binned)")
        counts = np.asarray(counts, dtype=float)
        edges = np.asarray(edges, dtype=float)
        if not np.all(np.isfinite(counts) & (counts >= 0) & (counts == np.round(counts))):
            raise NA64Error("fit_tail: binned counts must be event counts (integers >= 0): the Poisson likelihood "
                            "does not describe weighted or scaled counts (fit the events unbinned, or their counts)")
        if edges.shape != (counts.size + 1,) or np.any(np.diff(edges) <= 0):
            raise NA64Error("fit_tail: edges must be increasing with one more entry than counts")
        inside = (edges[:-1] >= lo - 1e-9) & (edges[1:] <= hi + 1e-9)
        counts, lows, highs = counts[inside], edges[:-1][inside], edges[1:][inside]
        lo, hi = float(lows.min()), float(highs.max())
        n_events = int(round(counts.sum()))

        def nll_shape(theta: float) -> float:
            total = tail.integral(lo, hi, theta)
            frac = np.array([tail.integral(a, b, theta) for a, b in zip(lows, highs, strict=True)]) / total
            with np.errstate(divide="ignore"):
                return float(-np.sum(counts * np.log(np.maximum(frac, 1e-300))))

        def nll(p: np.ndarray) -> float:
            nu, theta = p
            total = tail.integral(lo, hi, theta)
            mu = nu * np.array([tail.integral(a, b, theta) for a, b in zip(lows, highs, strict=True)]) / total
            return float(np.sum(mu - counts * np.log(np.maximum(mu, 1e-300))))
    else:
        x = np.asarray(values, dtype=float)
        x = x[np.isfinite(x) & (x >= lo) & (x < hi)]
        n_events = int(x.size)

        def nll_shape(theta: float) -> float:
            return float(-(np.sum(tail.log_shape(x, theta)) - x.size * math.log(tail.integral(lo, hi, theta))))

        def nll(p: np.ndarray) -> float:
            nu, theta = p
            return float(nu - x.size * math.log(nu) + nll_shape(theta))

    if n_events < MIN_SIDEBAND_EVENTS:
        raise NA64Error(f"tail fit in {lo:g}-{hi:g}: {n_events} sideband events, at least "
                        f"{MIN_SIDEBAND_EVENTS} are needed (widen the sideband or quote an upper limit)")
    b_lo, b_hi = tail.bounds((lo, hi))
    # coarse scan then bounded Brent: the 1-D shape likelihood can be flat at the edges
    grid = np.linspace(b_lo, b_hi, 241)
    scan = np.array([nll_shape(t) for t in grid])
    i = int(np.argmin(scan))
    res = optimize.minimize_scalar(nll_shape, bounds=(grid[max(i - 1, 0)], grid[min(i + 1, grid.size - 1)]),
                                   method="bounded", options={"xatol": 1e-10 * max(1.0, abs(grid[i]))})
    theta = float(res.x)
    if i in (0, grid.size - 1):
        raise NA64Error(f"tail fit ({model}) in {lo:g}-{hi:g} did not converge: the shape parameter "
                        f"ran to its limit {theta:g}; the sideband does not look like a {model} tail")
    nu = float(n_events)  # the extended-likelihood yield estimate in the fit range
    p_hat = np.array([nu, theta])
    step_theta = 1e-3 * (b_hi - b_lo) / 100.0
    hess = _hessian(nll, p_hat, np.array([1e-3 * nu, step_theta]))
    try:
        cov = np.linalg.inv(hess)
    except np.linalg.LinAlgError:
        raise NA64Error(f"tail fit ({model}): singular Hessian, the shape is not constrained") from None
    if not (cov[0, 0] > 0 and cov[1, 1] > 0):
        raise NA64Error(f"tail fit ({model}): the likelihood is not at a minimum (Hessian not positive)")
    return TailFit(tail, (lo, hi), nu, theta, cov, n_events, nll(p_hat), binned)


def extrapolate(fit: TailFit, region: tuple[float | None, float | None]) -> tuple[float, float]:
    """Expected events of the fitted tail in ``region`` ``(lo, hi)``, with its stat. error.

    A ``None`` lower edge means 0; a ``None`` upper edge is not allowed (the tail model
    describes only the region below the peak).  Error: delta method with the fit
    covariance of ``(nu, theta)``.
    """
    lo = 0.0 if region[0] is None else float(region[0])
    if region[1] is None:
        raise NA64Error("extrapolate: the region needs an upper edge below the peak")
    hi = float(region[1])
    if not (math.isfinite(lo) and math.isfinite(hi) and 0 <= lo < hi < fit.model.peak):
        raise NA64Error(f"extrapolate: region {region} must be 0 <= lo < hi below the beam peak {fit.model.peak:g} "
                        "(the tail model describes only the region below it)")
    a, b = fit.fit_range

    def ratio(theta: float) -> float:
        return fit.model.integral(lo, hi, theta) / fit.model.integral(a, b, theta)

    r = ratio(fit.theta)
    h = max(1e-6, 1e-4 * math.sqrt(fit.covariance[1, 1]))
    dr = (ratio(fit.theta + h) - ratio(fit.theta - h)) / (2 * h)
    grad = np.array([r, fit.nu * dr])
    var = float(grad @ fit.covariance @ grad)
    return fit.nu * r, math.sqrt(max(var, 0.0))


# ----------------------------------------------------------------------------------------
# components and tables
@dataclass(frozen=True)
class BackgroundComponent:
    """One background source in the signal box.

    ``n`` events with 1-sigma ``error``; if ``upper_limit`` is True, ``n`` is an upper
    limit (``< n``) and ``error`` is 0.  ``limit_part``: the part of ``n`` that is upper limits
    added at their value (a row summing an estimate and a limit, :func:`sum_components`; the
    error is the estimate's).  ``details`` carries the inputs (fit results, sums of weights) for
    provenance.
    """

    source: str
    n: float
    error: float = 0.0
    upper_limit: bool = False
    method: str = ""
    details: dict = field(default_factory=dict, compare=False)
    limit_part: float = 0.0

    def __post_init__(self):
        if not all(math.isfinite(v) and v >= 0 for v in (self.n, self.error, self.limit_part)) \
                or self.limit_part > self.n:
            raise NA64Error(f"background component {self.source!r}: n {self.n!r}, error {self.error!r} and "
                            f"limit_part {self.limit_part!r} must be finite and >= 0, limit_part at most n")

    def scaled(self, factor: float) -> BackgroundComponent:
        """The component for ``factor`` times the exposure (MC- or rate-driven sources)."""
        if not (math.isfinite(factor) and factor >= 0):
            raise NA64Error(f"exposure scale factor must be finite and >= 0, got {factor}")
        return replace(self, n=self.n * factor, error=self.error * factor, limit_part=self.limit_part * factor)

    def text(self) -> str:
        """``"n +- error"`` rounded to the error's precision, or ``"< n"``; a row with a limit part
        ``"estimate +- error + < limit"``."""
        if self.limit_part > 0 and not self.upper_limit:
            estimate = replace(self, n=self.n - self.limit_part, limit_part=0.0)
            limit = replace(self, n=self.limit_part, error=0.0, upper_limit=True, limit_part=0.0)
            return f"{estimate.text()} + {limit.text()}"
        ref = self.n if (self.upper_limit or self.error <= 0) else self.error
        d = _decimals(ref)
        if d > 4:  # tiny numbers: common power of ten, e.g. (1.86 +- 0.03)e-06
            exp = int(math.floor(math.log10(abs(self.n if self.n else ref))))
            scaled = replace(self, n=self.n / 10.0**exp, error=self.error / 10.0**exp)
            body = scaled.text()
            return f"< {body[2:]}e{exp:+03d}" if self.upper_limit else f"({body})e{exp:+03d}"
        if self.upper_limit:
            return f"< {self.n:.{d}f}"
        return f"{self.n:.{d}f} +- {self.error:.{d}f}"


def _decimals(x: float) -> int:
    """Decimals to show ``x`` with one significant digit (two if it starts with 1, e.g. 0.013)."""
    x = abs(float(x))
    if x == 0 or not math.isfinite(x):
        return 2
    exponent = int(math.floor(math.log10(x)))
    two = round(x / 10.0 ** (exponent - 1))  # two leading digits, 10..100
    digits = 2 if 10 < two < 20 else 1
    return max(0, digits - 1 - exponent)


@dataclass(frozen=True)
class BackgroundTable:
    """Background components in the signal box and their combination."""

    components: tuple[BackgroundComponent, ...]
    title: str = "expected background in the signal box"

    def estimated_total(self) -> tuple[float, float]:
        """Sum of the estimated rows (upper limits, and the limit parts of rows, left out) and its
        error (quadrature sum)."""
        est = [c for c in self.components if not c.upper_limit]
        return float(sum(c.n - c.limit_part for c in est)), float(math.sqrt(sum(c.error ** 2 for c in est)))

    def limits(self) -> tuple[BackgroundComponent, ...]:
        """The rows that are only upper limits, and the limit parts of the other rows (listed beside
        the total, not in it)."""
        return tuple(c if c.upper_limit else BackgroundComponent(
            f"{c.source} ({', '.join(c.details.get('limits', ())) or 'its limits'})", c.limit_part, 0.0, True,
            "the part of the row that is upper limits") for c in self.components if c.upper_limit or c.limit_part > 0)

    def total(self) -> tuple[float, float]:
        """Conservative total: the estimated rows plus each limit ``< u`` at its value ``u``,
        with the estimated rows' error (a limit has no error to add: never ``u +- u``).

        The published NA64mu 2022 total, 0.07 +- 0.03 "conservatively", is made this way.
        """
        n, err = self.estimated_total()
        return n + float(sum(c.n for c in self.limits())), err

    def scaled(self, factor: float) -> BackgroundTable:
        return BackgroundTable(tuple(c.scaled(factor) for c in self.components), self.title)

    def rows(self) -> list[dict]:
        out = [{"source": c.source, "n_b": c.n, "error": c.error, "upper_limit": c.upper_limit,
                "method": c.method, "text": c.text()} for c in self.components]
        n, err = self.estimated_total()
        out.append({"source": "total of the estimated rows", "n_b": n, "error": err, "upper_limit": False,
                    "method": "sum of the rows with a central value; errors in quadrature; limits not added",
                    "text": BackgroundComponent("total", n, err).text()})
        n, err = self.total()
        out.append({"source": "total", "n_b": n, "error": err, "upper_limit": False,
                    "method": "conservatively: the estimated rows plus each limit at its value (no error)",
                    "text": BackgroundComponent("total", n, err).text()})
        return out

    def to_dict(self) -> dict:
        return {"title": self.title, "rows": self.rows()}

    def format(self) -> str:
        width = max(len("source"), *(len(c.source) for c in self.components), len("total"))
        lines = [self.title, f"{'source':<{width}}  {'n_b':>18}  method", "-" * (width + 30)]
        rows = self.rows()
        for r in rows[:-2]:
            lines.append(f"{r['source']:<{width}}  {r['text']:>18}  {r['method']}")
        lines.append("-" * (width + 30))
        limits = ", ".join(f"{c.source} {c.text()}" for c in self.limits())
        beside = f"limits beside: {limits}" if limits else ""
        lines.append(f"{'estimated':<{width}}  {rows[-2]['text']:>18}  {beside}")
        lines.append(f"{'total':<{width}}  {rows[-1]['text']:>18}  (limits added at their value, conservatively)")
        return "\n".join(lines)


def misreconstruction_background(values=None, *, sideband: tuple[float, float], box: tuple[float | None, float],
                                 peak: float,
                                 model: str = "exponential", alternative: str | None = "power_law",
                                 counts=None, edges=None,
                                 source: str = "momentum mis-reconstruction") -> BackgroundComponent:
    """Data-driven tail background: fit ``model`` in ``sideband``, extrapolate into ``box``.

    The error is the statistical error (fit covariance) and, if ``alternative`` is given,
    the shape systematic ``|n(alternative) - n(model)|``, added in quadrature.  The box
    lower edge ``None`` means 0.  Units: those of ``values`` (GeV for the reco record).
    """
    box_lo = 0.0 if box[0] is None else box[0]
    if box[1] is not None and not box[1] <= min(sideband):
        raise NA64Error(f"misreconstruction_background: the box {box} must lie below the sideband {sideband} (the "
                        f"sideband's events are not the box's), and both below the peak {peak:g}")
    fit = fit_tail(values, sideband, model=model, peak=peak, counts=counts, edges=edges)
    n, stat = extrapolate(fit, (box_lo, box[1]))
    details = {"model": model, "sideband": list(sideband), "box": [box[0], box[1]], "peak": peak,
               "n_sideband": fit.n_events, "theta": fit.theta, "theta_error": fit.theta_error,
               "parameter": fit.model.parameter, "stat_error": stat, "binned": fit.binned}
    syst = 0.0
    if alternative:
        alt_fit = fit_tail(values, sideband, model=alternative, peak=peak, counts=counts, edges=edges)
        n_alt, stat_alt = extrapolate(alt_fit, box)
        syst = abs(n_alt - n)
        details.update({"alternative": alternative, "n_alternative": n_alt,
                        "stat_error_alternative": stat_alt, "shape_syst": syst})
    return BackgroundComponent(source, n, math.sqrt(stat ** 2 + syst ** 2), False,
                               f"data: {model} tail fit in sideband, extrapolated", details)


def mc_component(source: str, weights, in_box, *, n_simulated: float, exposure: float,
                 probability: float = 1.0, cl: float = 0.9) -> BackgroundComponent:
    """Background of one MC process in the box, scaled to ``exposure`` beam particles.

    ``weights`` are the truth weights (expected events per simulated beam particle) of
    the selected MC events, ``in_box`` marks those inside the signal box, and
    ``n_simulated`` is the number of simulated beam particles (``sum(n_beam)`` of the
    spills).  For a *forced* sample (every simulated particle undergoes the process,
    truth weight 1) ``probability`` is the probability of the process per beam particle
    (e.g. ``simulation.mixture.kdecay`` of the setup).  With no event in the box the
    result is an upper limit at ``cl``: the Poisson limit for 0 events (2.30 at 90 %)
    times the mean weight of the sample.
    """
    w = np.asarray(weights, dtype=float)
    box = np.asarray(in_box, dtype=bool)
    if w.shape != box.shape:
        raise NA64Error(f"mc_component {source!r}: weights {w.shape} and in_box {box.shape} differ in shape")
    if np.any(~np.isfinite(w)) or np.any(w < 0):
        raise NA64Error(f"mc_component {source!r}: weights must be finite and >= 0")
    if w.size == 0:
        raise NA64Error(f"mc_component {source!r}: no MC events at all: cannot bound the background")
    return mc_component_from_sums(source, int(box.sum()), float(w[box].sum()), float((w[box] ** 2).sum()),
                                  n_simulated=n_simulated, exposure=exposure, probability=probability,
                                  mean_weight=float(w.mean()), cl=cl)


def mc_component_from_sums(source: str, n_box: int, sumw: float, sumw2: float, *, n_simulated: float,
                           exposure: float, probability: float = 1.0, mean_weight: float | None = None,
                           cl: float = 0.9) -> BackgroundComponent:
    """:func:`mc_component` from the box counts of a processor output.

    ``n_box``, ``sumw``, ``sumw2``: MC events, sum of truth weights and of their squares in
    the box (``regions["signal_box"]`` of a simulation run); ``mean_weight`` the mean
    truth weight of the sample (``sumw / events`` of the cut-flow's first row; 1 for an
    unweighted forced sample): the limit when ``n_box`` is 0 is 2.30 of it, so it must be
    given then (a default of 1 made a K-decay sample, weights ~0.005, 200x too high).
    """
    if not (n_simulated > 0 and exposure >= 0 and probability >= 0):
        raise NA64Error(f"mc component {source!r}: n_simulated must be > 0, exposure and probability "
                        f">= 0 (got {n_simulated}, {exposure}, {probability})")
    if n_box == 0 and mean_weight is None:
        raise NA64Error(f"mc component {source!r}: no MC event in the box, and the limit needs the sample's "
                        "mean truth weight: pass mean_weight= (sumw / events of the cut-flow's first row; "
                        "1.0 for an unweighted sample)")
    if mean_weight is not None and not (math.isfinite(mean_weight) and mean_weight >= 0):
        raise NA64Error(f"mc component {source!r}: mean_weight {mean_weight}: expected a finite value >= 0")
    scale = exposure * probability / n_simulated
    details = {"n_mc_in_box": int(n_box), "sumw": float(sumw), "sumw2": float(sumw2),
               "n_simulated": float(n_simulated), "exposure": float(exposure),
               "probability": float(probability)}
    if n_box > 0:
        return BackgroundComponent(source, scale * sumw, scale * math.sqrt(sumw2), False,
                                   "MC (truth weights) scaled to exposure", details)
    from na64reco.stats.limits import poisson_upper_limit

    up = poisson_upper_limit(0, 0.0, cl, method="classical")
    return BackgroundComponent(source, scale * up * mean_weight, 0.0, True,
                               f"MC: no event in box, {cl:.0%} CL limit", details)


def rate_component(source: str, rate_per_particle: float, exposure: float, *, rel_error: float = 0.0,
                   upper_limit: bool = False) -> BackgroundComponent:
    """A background given as a rate per beam particle (design-study levels), times exposure."""
    if rate_per_particle < 0 or exposure < 0 or rel_error < 0:
        raise NA64Error("rate_component: rate, exposure and rel_error must be >= 0")
    n = rate_per_particle * exposure
    return BackgroundComponent(source, n, 0.0 if upper_limit else n * rel_error, upper_limit,
                               "rate per beam particle x exposure",
                               {"rate": rate_per_particle, "exposure": exposure})


#: Published NA64mu 2022 background components (PRL 132, 211803 (2024); NA64.md sec. 4).
PUBLISHED_NA64MU_2022 = (
    ("momentum mis-reconstruction", 0.05, 0.03, False),
    ("K/pi -> mu nu decays in flight", 0.010, 0.001, False),
    ("calorimeter non-hermeticity", 0.01, 0.0, True),
)


def published_na64mu_2022() -> BackgroundTable:
    """The published NA64mu 2022 background table (1.98e10 MOT), as components."""
    return BackgroundTable(
        tuple(BackgroundComponent(s, n, e, lim, "published") for s, n, e, lim in PUBLISHED_NA64MU_2022),
        "NA64mu 2022 (1.98e10 MOT), published",
    )


# ----------------------------------------------------------------------------------------
# design-study levels and the mis-reconstruction campaign (docs/backgrounds.md)
#: NA64mu design-study background levels per MOT (seed 004; NA64.md section 4):
#: (source, level, is an upper limit).
DESIGN_NA64MU_PER_MOT = (
    ("momentum mis-reconstruction", 5e-13, False),
    ("calorimeter non-hermeticity", 1e-12, True),
    ("single-hadron punch-through", 5e-12, False),
    ("hadron decays in flight", 5e-13, False),
    ("dimuon production", 1e-12, True),
)
#: Seed 004: punch-through probability of 100 GeV hadrons through 1 / 2 / 4 HCAL modules.
DESIGN_PUNCHTHROUGH_100GEV = {
    "pion": (2e-3, 5e-6, 3e-11),
    "proton": (4e-4, 4e-7, 2e-13),
    "neutron": (4e-4, 3e-7, 8e-14),
}
#: Keys a mis-reconstruction campaign summary (docs/data/misreco_<period>.json) must have.
MISRECO_KEYS = ("mot", "box_count", "per_mot", "per_mot_err", "extrapolated_per_mot", "extrapolated_err", "period")
#: keys of a campaign's summary written only when its tail fit converged (benchmarks/misreco_campaign.py)
MISRECO_FIT_ONLY_KEYS = ("extrapolated_stat_err", "extrapolated_shape_syst", "tail_model", "alternative_per_mot")


def kept_per_mot(summary: dict, name: str = "the mis-reconstruction summary") -> float:
    """The per-MOT scale of every fake-rate stratum: beam muons after all cuts but the box per MOT
    of the summary's campaign (``kept_per_mot``, else ``after_cuts_but_box`` / ``mot``).  A missing
    or non-positive value raises :class:`NA64Error` naming ``name`` and the key."""
    if summary.get("kept_per_mot"):
        return float(summary["kept_per_mot"])
    for key in ("after_cuts_but_box", "mot"):
        v = summary.get(key)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0:
            raise NA64Error(f"{name}: key {key!r}: expected a number > 0, got {v!r}")
    return float(summary["after_cuts_but_box"]) / float(summary["mot"])


def misreco_from_json(path) -> BackgroundComponent:
    """The mis-reconstruction rate per MOT from a campaign summary JSON.

    A box count > 0 gives ``per_mot +- per_mot_err`` (measured).  With no box event, the
    forced-noise estimate ``forced_noise_per_mot +- forced_noise_err`` when the summary has
    one (exact biased sampling of the tracker noise at its nominal level,
    ``benchmarks/misreco_forced_noise.py``; with no fake in any sample the extrapolated tail,
    the forced samples' bound being set by their sizes; with strata of forced noise and forced
    pile-up, ``forced_noise.strata``, the stratified sum, its (0, 0) stratum by the tail fit
    ``forced_noise_tail_00_per_mot`` when present, or rather by its truth classification
    ``lone_muon_00`` when present, and the strata of ``truth_strata`` likewise, the nested
    ``with_lone_muon``), else the
    noise-scaled estimate
    ``noise_scaled_per_mot`` (fake kicks counted at 5-30x the tracker
    noise and scaled back, ``benchmarks/tracking_fakes_scan.py``) when the summary has one,
    with the upper side of its 1 sigma band ``noise_scaled_1sigma`` as the error: it measures
    the mechanism (noise hits faking a kick) that a 1e7-MOT tail cannot reach.  Otherwise the
    extrapolated tail ``extrapolated_per_mot +- extrapolated_err`` (fit).  Missing keys or
    a bad file raise :class:`NA64Error` naming the file and key.
    """
    import json
    from pathlib import Path

    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise NA64Error(f"{path}: cannot read the mis-reconstruction summary: {exc}") from None
    for key in MISRECO_KEYS:
        if key not in data:
            raise NA64Error(f"{path}: key {key!r}: missing (expected keys: {', '.join(MISRECO_KEYS)})")

    def stratified(counted: float, err: float, upper: float, strata: list) -> BackgroundComponent:
        """The row from the strata (m, k) of forced noise and forced pile-up: the counted sum, with
        the (0, 0) stratum (the muon alone) by the tail fit of its p_out spectrum when the summary
        has one (its count, 0 or not, is then taken out of the sum); the 90 % CL bound of the strata
        without a fake stated in the source.  No fake and no tail fit: the 90 % CL bound, as a limit."""
        for s in strata:
            for key in ("count", "pileup", "fake", "per_tracked"):
                if key not in s:
                    raise NA64Error(f"{path}: key 'forced_noise.strata': a stratum lacks {key!r}: {s!r}")
        kept = kept_per_mot(data, str(path))
        fakes = sum(int(s["fake"]) for s in strata)
        empty = data.get("forced_noise_empty_upper_90")
        empty_txt = f"; strata without a fake < {float(empty):.2g} per MOT (90 % CL, sample sizes)" if empty else ""
        tail, tail_err = data.get("forced_noise_tail_00_per_mot"), data.get("forced_noise_tail_00_err")
        head = f"forced noise x forced pile-up, {len(strata)} strata (m, k), {fakes} fake(s)"
        lone = data.get("lone_muon_00")
        if lone is not None:
            return with_lone_muon(counted, err, strata, kept, fakes, empty, tail, tail_err, head, lone)
        if tail is not None and tail_err is not None:
            c00 = sum(float(s["per_tracked"]) for s in strata if s["count"] == 0 and s["pileup"] == 0) * kept
            n = counted - c00 + max(float(tail), 0.0)
            return BackgroundComponent("momentum mis-reconstruction", n, math.hypot(err, float(tail_err)), False,
                                       f"{head}: counted {counted - c00:.2g} +- {err:.2g}, (0, 0) stratum by its "
                                       f"tail fit {float(tail):.2g} +- {float(tail_err):.2g} per MOT{empty_txt} "
                                       f"({path.name})",
                                       dict(data))
        if counted <= 0:
            return BackgroundComponent("momentum mis-reconstruction", upper, 0.0, True,
                                       f"{head}: 90 % CL bound from the sample sizes ({path.name})", dict(data))
        return BackgroundComponent("momentum mis-reconstruction", counted, err, False,
                                   f"{head}: counted{empty_txt} ({path.name})", dict(data))

    def with_lone_muon(counted, err, strata, kept, fakes, empty, tail, tail_err, head, lone) -> BackgroundComponent:
        """The row with strata classified on truth: the (0, 0) stratum (the muon alone,
        ``lone_muon_00``, ``benchmarks/lone_muon_tail.py``) and the strata of ``truth_strata``
        (one extra hit source, e.g. (1, 0) and (0, 1), ``--strata``; each with its ``stratum``
        [m, k]): each one's count and its sample-size bound are taken out, its estimate
        ``per_mot`` added, its bound ``per_mot_upper`` (what outliers rarer or larger than the
        sample shows could add) summed into one bound, added in quadrature to the error; the tail
        fit stays in the source text as a cross-check.  No fake in any other stratum: the 90 % CL
        bound of the other strata plus the truth strata's bounds, as a limit."""
        truths = {(0, 0): ("lone_muon_00", lone)}
        extra = data.get("truth_strata") or {}
        if not isinstance(extra, dict):
            raise NA64Error(f"{path}: key 'truth_strata': expected a mapping 'm,k' -> estimate, got {extra!r}")
        for name, est in extra.items():
            st = est.get("stratum") if isinstance(est, dict) else None
            if not (isinstance(st, list) and len(st) == 2 and all(isinstance(x, int) for x in st)):
                raise NA64Error(f"{path}: key 'truth_strata.{name}.stratum': expected [m, k], got {st!r}")
            truths[(st[0], st[1])] = (f"truth_strata.{name}", est)
        for key_name, est in truths.values():
            for key in ("per_mot", "per_mot_upper"):
                v = est.get(key)
                if isinstance(v, bool) or not isinstance(v, (int, float)) or not v >= 0:
                    raise NA64Error(f"{path}: key '{key_name}.{key}': expected a number >= 0, got {v!r}")
        # a stratum of truth_strata whose truth bound is not below its own forced sample's bound (no
        # fake there) stays with the strata bounded by their sample sizes
        own = {(s["count"], s["pileup"]): float(s.get("upper_90_per_tracked", math.inf)) * kept
               for s in strata if int(s["fake"]) == 0}
        kept_out = {st: (e, own[st]) for st, (_, e) in truths.items()
                    if st != (0, 0) and st in own and own[st] <= float(e["per_mot_upper"])}
        truths = {st: v for st, v in truths.items() if st not in kept_out}
        in_truth = [s for s in strata if (s["count"], s["pileup"]) in truths]
        bounds = {st: float(e["per_mot_upper"]) for st, (_, e) in truths.items()}
        n_truth = sum(float(e["per_mot"]) for _, e in truths.values())
        b_truth = sum(bounds.values())
        c_truth = sum(float(s["per_tracked"]) for s in in_truth) * kept
        up_truth = sum(float(s.get("upper_90_per_tracked", 0.0)) for s in in_truth if int(s["fake"]) == 0) * kept
        other = counted - c_truth
        empty_other = max(float(empty or 0.0) - up_truth, 0.0)
        n00, b00 = float(lone["per_mot"]), float(lone["per_mot_upper"])
        lone_txt = (f"(0, 0) stratum (the muon alone) classified on truth: {n00:.2g} per MOT, outliers beyond the "
                    f"sample bounded at {b00:.2g}")
        for (m, k), (_, e) in sorted(truths.items()):
            if (m, k) != (0, 0):
                lone_txt += (f"; ({m}, {k}) classified on truth: {float(e['per_mot']):.2g}, bounded at "
                             f"{bounds[(m, k)]:.2g}")
        for (m, k), (e, b) in sorted(kept_out.items()):
            lone_txt += (f"; ({m}, {k}) classified on truth: {float(e['per_mot']):.2g}, its bound "
                         f"{float(e['per_mot_upper']):.2g} not below its sample size's {b:.2g}")
        tail_txt = (f"; its tail fit, a cross-check: {float(tail):.2g} +- {float(tail_err):.2g}"
                    if tail is not None and tail_err is not None else "")
        empty_txt = f"; other strata without a fake < {empty_other:.2g} per MOT (90 % CL, sample sizes)"
        # a truth stratum's central value with a counted part (e.g. fakes counted in a forced sample of
        # its mechanism) carries that count's Poisson error ``per_mot_err``: the row is then an estimate
        counted_err = [e.get("per_mot_err", 0.0) for _, e in truths.values()]
        if any(isinstance(x, bool) or not isinstance(x, (int, float)) or not x >= 0 for x in counted_err):
            raise NA64Error(f"{path}: key 'truth_strata.*.per_mot_err': expected numbers >= 0, got {counted_err!r}")
        if any(x > 0 for x in counted_err) and fakes - sum(int(s["fake"]) for s in in_truth) <= 0 and other <= 0:
            upper = empty_other + b_truth
            err_c = math.sqrt(sum(x * x for x in counted_err))
            return BackgroundComponent("momentum mis-reconstruction", n_truth, err_c, False,
                                       f"{head}: estimate {n_truth:.2g} +- {err_c:.2g} per MOT from the counted parts "
                                       f"of the strata classified on truth (Poisson errors); upper value "
                                       f"{upper:.2g} per MOT (90 % CL: every stratum's bound added): the "
                                       f"{lone_txt}{tail_txt}{empty_txt} ({path.name})",
                                       dict(data, upper_90_per_mot=upper))
        if fakes - sum(int(s["fake"]) for s in in_truth) <= 0 and other <= 0:
            return BackgroundComponent("momentum mis-reconstruction", empty_other + b_truth, 0.0, True,
                                       f"{head}: no fake; 90 % CL bound of the other strata's sample sizes plus the "
                                       f"{lone_txt}{tail_txt} ({path.name})", dict(data))
        return BackgroundComponent("momentum mis-reconstruction", other + n_truth, math.hypot(err, b_truth), False,
                                   f"{head}: counted {other:.2g} +- {err:.2g}; {lone_txt}{tail_txt}{empty_txt} "
                                   f"({path.name})", dict(data))

    if int(data["box_count"]) > 0:
        return BackgroundComponent("momentum mis-reconstruction", float(data["per_mot"]), float(data["per_mot_err"]),
                                   False, f"MC campaign, {int(data['box_count'])} in the box of "
                                   f"{float(data['mot']):.3g} MOT ({path.name})", dict(data))
    if data.get("forced_noise_per_mot") is not None:
        c = float(data["forced_noise_per_mot"])
        for key in ("forced_noise_err", "forced_noise_upper_90"):
            v = data.get(key)
            if not isinstance(v, (int, float)) or not v >= 0:
                raise NA64Error(f"{path}: key {key!r}: expected a number >= 0 beside forced_noise_per_mot={c:g}, "
                                f"got {v!r}")
        up = float(data["forced_noise_upper_90"])
        strata = (data.get("forced_noise") or {}).get("strata")
        if strata is not None:  # stratified in (noise m, pile-up k)
            return stratified(c, float(data["forced_noise_err"]), up, strata)
        if c <= 0:  # no fake in any sample: its bound is set by the sample sizes, the tail fit says more
            return BackgroundComponent("momentum mis-reconstruction", float(data["extrapolated_per_mot"]),
                                       float(data["extrapolated_err"]), False,
                                       f"MC campaign, tail fit extrapolated; forced tracker noise: no fake kick in "
                                       f"any sample (bound {up:.2g} per MOT) ({path.name})", dict(data))
        return BackgroundComponent("momentum mis-reconstruction", c, float(data["forced_noise_err"]), False,
                                   f"forced tracker noise (exact biased sampling), 90 % CL bound {up:.2g} per MOT; "
                                   f"tail fit {float(data['extrapolated_per_mot']):.2g} +- "
                                   f"{float(data['extrapolated_err']):.2g} ({path.name})", dict(data))
    if data.get("noise_scaled_per_mot") is not None:
        c = float(data["noise_scaled_per_mot"])
        band = data.get("noise_scaled_1sigma")
        if not (isinstance(band, list) and len(band) == 2 and c <= float(band[1])):
            raise NA64Error(f"{path}: key 'noise_scaled_1sigma': expected [low, high] around "
                            f"noise_scaled_per_mot={c:g}, got {band!r}")
        lo, hi = (float(x) for x in band)
        return BackgroundComponent("momentum mis-reconstruction", c, hi - c, False,
                                   f"noise-scaled fake kicks, 1 sigma {lo:.2g}-{hi:.2g} per MOT; tail fit "
                                   f"{float(data['extrapolated_per_mot']):.2g} +- {float(data['extrapolated_err']):.2g}"
                                   f" ({path.name})", dict(data))
    return BackgroundComponent("momentum mis-reconstruction", float(data["extrapolated_per_mot"]),
                               float(data["extrapolated_err"]), False,
                               f"MC campaign, tail fit extrapolated ({path.name})", dict(data))


def single_scatter_from_json(path, period: str, box: float) -> BackgroundComponent:
    """The single large-angle scattering of the beam muon in MS2 (``benchmarks/single_scatter.py``,
    forced kinks with weights, ``docs/periods.md`` "Single large-angle scattering"): per MOT in the
    box ``p_out < box`` (GeV: the selection's box edge, one of the edges the summary counted) of
    ``period``'s forced sample, with the Poisson error of its count (a 90 %
    CL limit when the count is 0).  Missing keys or a bad file raise :class:`NA64Error` naming them."""
    import json
    from pathlib import Path

    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise NA64Error(f"{path}: cannot read the single-scattering summary: {exc}") from None
    forced = (data.get("forced") or {}).get(period) if isinstance(data, dict) else None
    if not isinstance(forced, dict):
        raise NA64Error(f"{path}: key 'forced.{period}': missing (expected the forced sample of period {period!r})")
    key = f"{float(box):.1f}"
    count, rate = (forced.get("box") or {}).get(key), (forced.get("per_mot") or {}).get(key)
    for name, v in ((f"forced.{period}.box.{key}", count), (f"forced.{period}.per_mot.{key}", rate)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not v >= 0:
            raise NA64Error(f"{path}: key {name!r}: expected a number >= 0, got {v!r}")
    src = "single large-angle scattering in MS2"
    how = (f"forced kinks, {int(count)} of {forced.get('muons', '?')} in the box p_out < {box:g} GeV, weight "
           f"{forced.get('weight', float('nan')):.3g} per muon ({path.name})")
    if count == 0:
        return BackgroundComponent(src, float(rate), 0.0, True, how, dict(forced))
    return BackgroundComponent(src, float(rate), float(rate) / math.sqrt(count), False, how, dict(forced))


def sum_components(source: str, parts) -> BackgroundComponent:
    """Sum of components (errors in quadrature; a sum of limits is a limit; a limit added
    to a measured value adds ``u`` with no error, conservatively, like :meth:`BackgroundTable.total`:
    never ``u +- u``, and is kept as the row's ``limit_part``, which a table's estimated total leaves
    out and lists beside it)."""
    parts = list(parts)
    if not parts:
        raise NA64Error(f"sum_components {source!r}: nothing to add")
    if all(p.upper_limit for p in parts):
        return BackgroundComponent(source, sum(p.n for p in parts), 0.0, True, " + ".join(p.source for p in parts))
    n = sum(p.n for p in parts)
    err = math.sqrt(sum(p.error ** 2 for p in parts if not p.upper_limit))
    limit_part = sum(p.n if p.upper_limit else p.limit_part for p in parts)
    limits = [p.source for p in parts if p.upper_limit or p.limit_part > 0]
    return BackgroundComponent(source, n, err, False, " + ".join(p.source for p in parts), {"limits": limits},
                               min(limit_part, n))


def forced_noise_ratio(rows: list[dict], expected: float, cl: float = 0.9,
                       expected_pileup: float | None = None) -> dict:
    """E[numerator] / E[denominator] at the nominal noise and pile-up from forced samples.

    Exact biased sampling of the tracker noise (:mod:`na64reco.sim.forced_noise`): a sample
    with exactly m noise clusters per event in a region R estimates G_m = E[g | m in R], and
    E[g] = sum_m Poisson(m; expected) G_m, ``expected`` being the nominal mean number in R.
    The out-of-time beam muons may be forced as well (:mod:`na64reco.sim.occupancy`): a row
    with ``pileup`` = k (exactly k muons in the near times N) estimates G_{m,k} and gets the
    weight Poisson(m; expected) Poisson(k; ``expected_pileup``); a row without it (or None)
    has the nominal pile-up.  Each m has either one nominal-pile-up row or rows k = 0..K.

    ``rows``: one per stratum, m = 0..M, each with ``count``, ``events`` and the event counts
    ``numerator`` (e.g. fake kicks after the cuts, a subset of) ``denominator`` (e.g. beam
    muons tracked with the cuts).  Returns ``ratio`` +- ``error`` (binomial, delta method),
    ``upper`` (``cl`` upper bound: each row's numerator replaced by its Poisson upper limit,
    conservative), ``empty_upper`` (the part of it from the strata with no numerator event:
    what the sample sizes leave unconstrained), ``truncation`` (what the strata not sampled
    can add at most, relative to the denominator: their total weight / den), and the
    per-event sums; ``terms`` per row (``weight``, ``poisson`` its alias, ``contribution``,
    ``upper_contribution`` relative to the denominator).
    """
    from functools import cache

    from na64reco.stats.limits import poisson_upper_limit

    upper_limit = cache(lambda k: poisson_upper_limit(k, cl=cl, method="classical"))
    by_m: dict[int, list] = {}
    for r in rows:
        by_m.setdefault(int(r["count"]), []).append(r.get("pileup"))
    ms = sorted(by_m)
    if ms != list(range(len(ms))):
        raise NA64Error(f"forced noise: need the counts 0..M without gaps, got {ms}")
    if not expected > 0:
        raise NA64Error(f"forced noise: expected noise clusters in the region must be > 0, got {expected}")
    for m, ks in by_m.items():
        if ks == [None]:
            continue
        if None in ks or sorted(ks) != list(range(len(ks))):
            raise NA64Error(f"forced pile-up: count m={m} needs one nominal-pile-up row or the pile-up counts "
                            f"0..K without gaps, got {ks}")
        if expected_pileup is None or not expected_pileup > 0:
            raise NA64Error(f"forced pile-up: rows with a pile-up count need expected_pileup > 0, got "
                            f"{expected_pileup}")

    def poisson(m: int, lam: float) -> float:
        return math.exp(-lam + m * math.log(lam) - math.lgamma(m + 1))

    num = den = up = up_empty = var_num = var_den = cov = covered = 0.0
    terms = []
    for r in rows:
        m, n, k = int(r["count"]), int(r["events"]), int(r["numerator"])
        kp = r.get("pileup")
        p = poisson(m, expected) * (1.0 if kp is None else poisson(int(kp), expected_pileup))
        covered += p
        a, b = k / n, int(r["denominator"]) / n
        num += p * a
        den += p * b
        up += p * upper_limit(k) / n
        if k == 0:
            up_empty += p * upper_limit(0) / n
        var_num += p * p * a * (1 - a) / n
        var_den += p * p * b * (1 - b) / n
        cov += p * p * a * (1 - b) / n
        terms.append({"count": m, "pileup": kp, "weight": p, "poisson": p, "numerator_per_event": a,
                      "contribution": p * a, "upper_contribution": p * upper_limit(k) / n})
    if not den > 0:
        raise NA64Error("forced noise: no denominator event in any sample")
    for t in terms:
        t["contribution"] /= den
        t["upper_contribution"] /= den
    var = var_num / den**2 - 2 * num * cov / den**3 + num**2 * var_den / den**4
    return {"ratio": num / den, "error": math.sqrt(max(var, 0.0)), "upper": up / den, "empty_upper": up_empty / den,
            "cl": cl, "truncation": max(1.0 - covered, 0.0) / den, "expected": expected,
            "expected_pileup": expected_pileup, "covered": covered,
            "numerator_per_event": num, "denominator_per_event": den, "terms": terms}


# ----------------------------------------------------------------------------------------
# dimuons: direct count on a large forced sample and the factorised estimate
#: Keys a dimuon campaign summary (docs/data/dimuon_<period>.json) must have.
DIMUON_KEYS = ("period", "n_beam", "mean_weight", "species_per_mot", "calo_rest", "single", "both", "direct")


def factorised_rate(factors, scale: float = 1.0, cl: float = 0.9) -> dict:
    """``scale x prod(k_i / n_i)`` for factors ``(k_i, n_i)`` assumed independent.

    ``rate`` (None if some ``k_i`` is 0) with ``error`` (relative errors of the binomial
    counts in quadrature), and ``upper``: a ``cl`` upper limit on the product that holds
    whatever the correlation of the estimators (Bonferroni: each factor at its Poisson upper
    limit of CL ``1 - (1 - cl) / len(factors)``, capped at 1).  Each factor's
    ``(k, n, value, upper)`` is in ``factors``.
    """
    from na64reco.stats.limits import poisson_upper_limit

    rows = [(int(k), int(n)) for k, n in factors]
    if not rows:
        raise NA64Error("factorised_rate: no factor given")
    for k, n in rows:
        if not (n > 0 and 0 <= k <= n):
            raise NA64Error(f"factorised_rate: factor ({k}, {n}): need 0 <= k <= n and n > 0")
    cl_each = 1.0 - (1.0 - cl) / len(rows)
    out = []
    for k, n in rows:
        up = min(1.0, poisson_upper_limit(k, 0.0, cl_each, method="classical") / n)
        out.append({"k": k, "n": n, "value": k / n, "upper": up})
    rate = err = None
    if all(k > 0 for k, _ in rows):
        rate = scale * math.prod(k / n for k, n in rows)
        err = rate * math.sqrt(sum((1 - k / n) / k for k, n in rows))
    return {"rate": rate, "error": err, "upper": scale * math.prod(f["upper"] for f in out), "cl": cl,
            "cl_each": cl_each, "factors": out}


def independence_ratio(k_pass: int, n_pass: int, k_fail: int, n_fail: int) -> dict:
    """P(b | a) / P(b | not a) from the counts of a 2x2 table, with its error and the pull
    of the difference P(b | a) - P(b | not a) (binomial errors): 1 within errors when b and
    a are independent."""
    if not (n_pass > 0 and n_fail > 0 and 0 <= k_pass <= n_pass and 0 <= k_fail <= n_fail):
        raise NA64Error(f"independence_ratio: bad 2x2 counts {k_pass}/{n_pass}, {k_fail}/{n_fail}")
    p1, p0 = k_pass / n_pass, k_fail / n_fail
    v1, v0 = p1 * (1 - p1) / n_pass, p0 * (1 - p0) / n_fail
    if k_pass == 0 or k_fail == 0:  # a zero cell: the variance of the other side's estimate, at least
        pooled = (k_pass + k_fail) / (n_pass + n_fail)
        v1, v0 = max(v1, pooled * (1 - pooled) / n_pass), max(v0, pooled * (1 - pooled) / n_fail)
    sd = math.sqrt(v1 + v0)
    ratio = p1 / p0 if p0 > 0 else None
    r_err = ratio * math.sqrt(v1 / p1**2 + v0 / p0**2) if (ratio and p1 > 0) else None
    return {"p_pass": p1, "p_fail": p0, "ratio": ratio, "ratio_error": r_err,
            "pull": (p1 - p0) / sd if sd > 0 else 0.0, "counts": [k_pass, n_pass, k_fail, n_fail]}


def dimuon_estimate(summary: dict, cl: float = 0.9) -> dict:
    """The dimuon rate per MOT from a forced-trident campaign summary
    (``benchmarks/dimuon_campaign.py``).

    ``direct``: the count with every cut and the box over all ``n_beam`` forced tridents
    (``rate`` +- ``error`` if > 0, else the ``cl`` limit 2.3 mean weights / N), no assumption.
    ``factorised``: w x P(every cut but ``no_veto`` and ``hcal_mip``, box included; fully
    reconstructed subsample) x P(no_veto | calorimeter rest) x P(hcal_mip | calorimeter rest)
    (all events), the three assumed independent (:func:`factorised_rate`, with its
    correlation-free limit); ``factorised_joint``: the same with P(no_veto and hcal_mip |
    calorimeter rest) measured jointly (two factors).  ``checks``: the independence tests
    (:func:`independence_ratio`) of the loosened VETO / HCAL cuts against each MS2 cut and
    against each other.  Rates are per MOT (``species_per_mot x mean_weight x ...``).
    """
    for key in DIMUON_KEYS:
        if key not in summary:
            raise NA64Error(f"dimuon summary: key {key!r}: missing (expected keys: {', '.join(DIMUON_KEYS)})")
    n, w, s = int(summary["n_beam"]), float(summary["mean_weight"] or 0.0), float(summary["species_per_mot"])
    if not (n > 0 and w > 0):
        raise NA64Error(f"dimuon summary {summary['period']}: n_beam={n} and mean_weight={w} must be > 0")
    d = summary["direct"]
    direct = {"events": int(d["events"]), "after_calo_cuts": int(d.get("after_calo_cuts", 0)), "n_beam": n}
    if d["events"] > 0:
        direct.update(rate=s * d["sumw"] / n, error=s * math.sqrt(d["sumw2"]) / n, upper_limit=False)
    else:
        from na64reco.stats.limits import poisson_upper_limit

        direct.update(rate=s * w * poisson_upper_limit(0, 0.0, cl, method="classical") / n, error=0.0,
                      upper_limit=True)
    out = {"period": summary["period"], "direct": direct, "factorised": None, "factorised_joint": None,
           "checks": {}}
    rest = int(summary["calo_rest"])
    full = summary.get("full")
    if full and rest > 0:
        f_ms2 = (full["all_but_calo_group"], full["n_beam"])
        out["factorised"] = factorised_rate([f_ms2, (summary["single"]["no_veto"], rest),
                                             (summary["single"]["hcal_mip"], rest)], s * w, cl)
        out["factorised_joint"] = factorised_rate([f_ms2, (summary["both"], rest)], s * w, cl)
        for key, (k1, n1, k0, n0) in full.get("checks", {}).items():
            if n1 > 0 and n0 > 0:
                out["checks"][key] = independence_ratio(k1, n1, k0, n0)
    for key, both in summary.get("loose_pairs", {}).items():
        kv, kh = key.split("&")
        nv, nh = summary["loose"][kv], summary["loose"][kh]
        if 0 < nv < rest:
            out["checks"][f"{kh} | {kv}"] = independence_ratio(both, nv, nh - both, rest - nv)
    return out


def dimuon_from_json(path) -> tuple[BackgroundComponent, dict]:
    """The dimuon row per MOT from ``docs/data/dimuon_<period>.json``: the direct count (a
    limit when no forced trident passes), and the :func:`dimuon_estimate` beside it."""
    import json
    from pathlib import Path

    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise NA64Error(f"{path}: cannot read the dimuon summary: {exc}") from None
    try:
        est = dimuon_estimate(data)
    except NA64Error as exc:
        raise NA64Error(f"{path}: {exc}") from None
    d = est["direct"]
    how = (f"forced tridents, direct count: {d['events']} of {d['n_beam']:.3g} pass every cut"
           f" ({d['after_calo_cuts']} the calorimeter cuts) ({path.name})")
    return BackgroundComponent("dimuon production", d["rate"], d["error"], d["upper_limit"], how, est), est
