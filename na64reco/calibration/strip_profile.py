"""Expected hits per strip from its neighbours: a local Poisson fit of the occupancy profile.

The occupancy of a tracker plane over a run is a smooth profile (the beam spot of the
triggering and pile-up muons, a few cm, on top of the evenly spread noise clusters) with a
few strips off it (dead, hot).  The expectation of strip ``s`` is the value at ``s`` of
``f + exp(a + b x + c x^2)`` (``x`` the strip offset), fitted by Poisson maximum likelihood to
the counts of strips ``s +- 2 .. s +- HALF_WIDTH``: the strip itself and its direct neighbours
(which share its clusters: a dead strip splits them onto them, a hot strip's charge spread
shifts some centroids onto them) are left out, as are the ``masked`` strips (known or
suspected bad).  A Gaussian beam profile is exactly log-quadratic, so the peak of a beam
spot a few strips wide (the 6 mm straws) is expected as well as its flanks; on a flat
profile the fit is an average of the neighbours.  ``f`` is the plane's floor (the evenly
spread noise), fixed to a low estimate, :func:`profile_floor`: without it a log-quadratic
cannot follow the turn from a narrow peak onto the floor and overshoots there by several
times; an underestimate only brings that back partly, an overestimate makes the strips
below it look less dead and less hot, never more.  With neighbours on one side only (the
plane's edges) the curvature term is dropped, with fewer than three neighbours the slope
too.

Kernel: :func:`local_expectation`, a Newton (IRLS) iteration run for all strips at once;
its per-strip reference twin is in ``tests/test_strip_profile.py``.
"""

from __future__ import annotations

import numpy as np

#: neighbours s +- 2 .. s +- HALF_WIDTH enter the expectation of strip s (strips)
HALF_WIDTH = 6
#: the direct neighbours +-1 are left out (they share the strip's clusters)
GAP = 1
#: offsets are divided by this in the fit (conditioning only: x = offset / X_SCALE)
X_SCALE = 4.0
#: Gaussian priors (inverse variances) at zero on the slope and the curvature of log(e) in
#: units of x: sigma 3 (a factor e^3 = 20 over 4 strips) and 4 (a Gaussian of sigma 1 strip has
#: -8): far wider than any profile with counts enough to measure it, they keep the fits of a
#: few scattered hits finite (the likelihood alone runs off to a spike between them)
SLOPE_PRIOR = 1.0 / 3.0**2
CURVATURE_PRIOR = 1.0 / 4.0**2
#: a slope (curvature) term is used only where it lowers the deviance by more than this
#: (one parameter at ~3 sigma): with few hits the neighbours' mean (slope) is taken
LR_THRESHOLD = 9.0
MAX_ITERATIONS = 50
TOLERANCE = 1e-8
MAX_STEP = 3.0  # largest change of a parameter per Newton step (damping for sparse counts)


def neighbour_offsets(half_width: int = HALF_WIDTH, gap: int = GAP) -> np.ndarray:
    """The strip offsets that enter an expectation: -half_width .. -(gap+1), gap+1 .. half_width."""
    return np.concatenate([np.arange(-half_width, -gap), np.arange(gap + 1, half_width + 1)])


def profile_floor(counts: np.ndarray, masked: np.ndarray | None = None, *, half_width: int = HALF_WIDTH) -> float:
    """Low estimate of the evenly spread part of an occupancy: the lowest mean count of
    ``2 half_width + 1`` consecutive strips not masked (all of them if there are fewer).
    Averaging first keeps the Poisson fluctuations of single strips out; taking the lowest
    window biases it low, the safe side (module doc)."""
    c = np.asarray(counts, dtype=float)
    if masked is not None:
        c = c[~np.asarray(masked, bool)]
    if c.size == 0:
        return 0.0
    w = min(c.size, 2 * half_width + 1)
    return float(np.convolve(c, np.ones(w) / w, mode="valid").min())


def allowed_orders(valid: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Highest polynomial order of log(expectation - f) per strip that its usable neighbours
    (S, K) can carry: 2 with at least two on each side, 1 with at least three in all, else 0."""
    left = (valid & (offsets < 0)).sum(axis=1)
    right = (valid & (offsets > 0)).sum(axis=1)
    return np.where((left >= 2) & (right >= 2), 2, np.where(left + right >= 3, 1, 0))


def _fit(y, v, X, f, prior, beta, eta_max):
    """Penalised Poisson fit of ``f + exp(X beta)`` to the counts ``y`` (S, K) with weights
    ``v`` (1 usable, 0 not) by Fisher scoring, all strips at once; Gaussian priors at zero of
    inverse variances ``prior`` (S, 3) (a huge one switches a term off).  Returns the
    parameters (S, 3) and the deviances (S,)."""
    beta = beta.copy()
    diag = [0, 1, 2], [0, 1, 2]
    for _ in range(MAX_ITERATIONS):
        e = np.exp(np.minimum(beta @ X.T, eta_max))  # (S, K)
        mu = f + e
        H = np.einsum("sk,ka,kb->sab", v * e * e / mu, X, X)
        H[:, diag[0], diag[1]] += prior
        H[:, 0, 0] += 1e-12  # no usable neighbour: the step is zero, the result NaN (caller)
        g = (v * (y - mu) * e / mu) @ X - prior * beta
        step = np.clip(np.linalg.solve(H, g[:, :, None])[:, :, 0], -MAX_STEP, MAX_STEP)
        beta += step
        if np.abs(step).max() < TOLERANCE:
            break
    mu = f + np.exp(np.minimum(beta @ X.T, eta_max))
    with np.errstate(divide="ignore", invalid="ignore"):
        term = np.where(y > 0, y * np.log(y / mu), 0.0) - (y - mu)
    return beta, 2.0 * (v * term).sum(axis=1)


def local_expectation(counts: np.ndarray, masked: np.ndarray | None = None, *, floor: float | None = None,
                      half_width: int = HALF_WIDTH, gap: int = GAP) -> np.ndarray:
    """Expected counts of every strip from its neighbours (module doc).

    Args:
        counts: hits per strip of one plane (S,).
        masked: strips not to use as neighbours (S,) bool, e.g. dead or hot candidates.
        floor: the fixed even part ``f`` (counts per strip); default :func:`profile_floor`.

    Returns:
        (S,) expected counts; NaN where a strip has no usable neighbour.
    """
    y_all = np.asarray(counts, dtype=float)
    n = y_all.size
    masked = np.zeros(n, bool) if masked is None else np.asarray(masked, bool)
    offsets = neighbour_offsets(half_width, gap)
    idx = np.arange(n)[:, None] + offsets[None, :]
    inside = (idx >= 0) & (idx < n)
    idx = np.clip(idx, 0, n - 1)
    valid = inside & ~masked[idx]
    y = np.where(valid, y_all[idx], 0.0)
    v = valid.astype(float)
    allowed = allowed_orders(valid, offsets)
    f = profile_floor(y_all, masked) if floor is None else float(floor)
    x = offsets / X_SCALE
    X = np.stack([np.ones_like(x), x, x * x], axis=1)  # (K, 3)
    n_valid = v.sum(axis=1)
    beta = np.zeros((n, 3))
    beta[:, 0] = np.log(np.maximum(y.sum(axis=1) / np.maximum(n_valid, 1.0) - f, 0.0) + 0.5)
    eta_max = np.log(y_all.max(initial=0.0) + 1.0) + 5.0  # no fitted value above e^5 x the largest count
    prior = np.zeros((n, 3))
    best, best_dev = None, None
    for order in range(3):  # nested fits; a term is kept where the counts ask for it
        prior[:, 1] = SLOPE_PRIOR if order >= 1 else 1e12
        prior[:, 2] = CURVATURE_PRIOR if order >= 2 else 1e12
        beta, dev = _fit(y, v, X, f, prior, beta, eta_max)
        if best is None:
            best, best_dev = beta.copy(), dev
            continue
        take = (allowed >= order) & (best_dev - dev > LR_THRESHOLD)
        best[take], best_dev[take] = beta[take], dev[take]
    out = f + np.exp(np.minimum(best[:, 0], eta_max))
    out[n_valid == 0] = np.nan
    return out
