"""Expected hits per strip from its neighbours: a local Poisson fit of the occupancy profile.

The occupancy of a tracker plane over a run is a smooth profile (the beam spot of the
triggering and pile-up muons, a few cm, on top of the evenly spread noise clusters) with a
few strips off it (dead, hot).  The expectation of strip ``s`` is the value at ``s`` of
``f + exp(a + b x + c x^2)`` (``x`` the strip offset), fitted by Poisson maximum likelihood to
the counts of strips ``s +- 2 .. s +- HALF_WIDTH``: the strip itself and its direct neighbours
(which share its clusters: a dead strip splits them onto them, a hot strip's charge spread
shifts some centroids onto them) are left out, as are the ``masked`` strips (known or
suspected bad), whose places the next usable strips further out take (up to
:data:`MAX_REACH`).  A Gaussian beam profile is exactly log-quadratic, so the peak of a beam
spot a few strips wide (the 6 mm straws) is expected as well as its flanks; on a flat
profile the fit is an average of the neighbours.

* ``f`` is the plane's floor (the evenly spread noise), fixed to a low estimate,
  :func:`profile_floor`: without it a log-quadratic cannot follow the turn from a narrow
  peak onto the floor and overshoots there by several times; an underestimate only brings
  that back partly, an overestimate makes the strips below it look less dead and less hot,
  never more.
* The slope and curvature terms are used only where the counts ask for them: each lowers
  the deviance by more than :data:`LR_THRESHOLD` (else the simpler fit is kept), and only
  with enough neighbours (curvature: two on each side; slope: three in all, the plane's
  edges).  Weak Gaussian priors keep the fits of a few scattered hits finite.

Kernel: :func:`_expectations` (numba, one penalised Newton fit with step halving per strip
and order); wrapper :func:`local_expectation`.  The slow reference twin (``scipy.optimize``
per strip) is in ``tests/test_strip_profile.py``.
"""

from __future__ import annotations

import numba
import numpy as np

#: neighbours s +- 2 .. s +- HALF_WIDTH enter the expectation of strip s (strips); where some
#: of them are masked, the next usable strips further out take their place, up to MAX_REACH
HALF_WIDTH = 6
MAX_REACH = 12
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
#: a slope (curvature) term is used only where it lowers the deviance by more than this (one
#: parameter at 5 sigma: at 3 sigma, 9, a plane of 320 strips has a spike fitted between
#: scattered hits somewhere, which calls a good strip dead): with few hits the neighbours'
#: mean (slope) is taken
LR_THRESHOLD = 25.0
MAX_ITERATIONS = 100
TOLERANCE = 1e-12  # Newton decrement (~ twice the -log(likelihood) still to gain) at convergence
MAX_STEP = 3.0  # largest change of a parameter per Newton step
#: no fitted value above e^EXP_HEADROOM x (the plane's largest count + 1)
EXP_HEADROOM = 5.0


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


def neighbours(masked: np.ndarray, per_side: int, gap: int, reach: int) -> tuple[np.ndarray, np.ndarray]:
    """Offsets (S, 2 per_side) of the strips that enter each strip's expectation: on each side
    the ``per_side`` nearest strips beyond ``gap`` that are inside the plane and not masked, no
    further than ``reach``; and whether each slot is filled (S, 2 per_side)."""
    n = masked.size
    offsets = np.zeros((n, 2 * per_side), np.int64)
    valid = np.zeros((n, 2 * per_side), bool)
    for side, sign in enumerate((-1, 1)):
        d = sign * np.arange(gap + 1, reach + 1)
        k = np.arange(n)[:, None] + d[None, :]
        usable = (k >= 0) & (k < n)
        usable[usable] = ~masked[k[usable]]
        rank = np.cumsum(usable, axis=1)  # 1, 2, ... on the usable ones
        take = usable & (rank <= per_side)
        rows, cols = np.nonzero(take)
        slot = side * per_side + rank[rows, cols] - 1
        offsets[rows, slot] = d[cols]
        valid[rows, slot] = True
    return offsets, valid


def allowed_orders(valid: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Highest polynomial order of log(expectation - f) per strip that its usable neighbours
    (S, K) at ``offsets`` (S, K) can carry: 2 with at least two on each side, 1 with at least
    three in all, else 0."""
    left = (valid & (offsets < 0)).sum(axis=1)
    right = (valid & (offsets > 0)).sum(axis=1)
    return np.where((left >= 2) & (right >= 2), 2, np.where(left + right >= 3, 1, 0))


@numba.njit(cache=True, inline="always")
def _profile_term(beta, npar, x, k, eta_max):
    """``exp(sum_j beta_j x[k, j])`` (capped at ``exp(eta_max)``): the non-floor part of neighbour k's mean."""
    eta = beta[0]
    for j in range(1, npar):
        eta += beta[j] * x[k, j]
    return np.exp(min(eta, eta_max))


@numba.njit(cache=True)
def _objective(beta, npar, y, v, x, f, prior, eta_max):
    """Penalised Poisson -log(likelihood) of ``f + exp(sum_j beta_j x^j)`` (constants dropped);
    ``x[k, j]`` is the j-th power of neighbour k's offset (j = 0..4)."""
    out = 0.0
    for k in range(y.size):
        if v[k]:
            mu = f + _profile_term(beta, npar, x, k, eta_max)
            out += mu - y[k] * np.log(mu)
    for j in range(1, npar):
        out += 0.5 * prior[j] * beta[j] ** 2
    return out


@numba.njit(cache=True)
def _solve(H, g, n, d):
    """Solution ``d`` of the n x n (n <= 3) symmetric positive definite system H d = g (Cramer)."""
    if n == 1:
        d[0] = g[0] / H[0, 0]
    elif n == 2:
        det = H[0, 0] * H[1, 1] - H[0, 1] * H[1, 0]
        d[0] = (g[0] * H[1, 1] - H[0, 1] * g[1]) / det
        d[1] = (H[0, 0] * g[1] - g[0] * H[1, 0]) / det
    else:  # adjugate of the symmetric matrix
        a, b, c, e, h, k = H[0, 0], H[0, 1], H[0, 2], H[1, 1], H[1, 2], H[2, 2]
        A, B, C = e * k - h * h, c * h - b * k, b * h - c * e
        D, E, F = a * k - c * c, b * c - a * h, a * e - b * b
        det = a * A + b * B + c * C
        d[0] = (A * g[0] + B * g[1] + C * g[2]) / det
        d[1] = (B * g[0] + D * g[1] + E * g[2]) / det
        d[2] = (C * g[0] + E * g[1] + F * g[2]) / det


@numba.njit(cache=True)
def _fit(beta, npar, y, v, x, f, prior, eta_max, work):
    """Penalised Poisson fit of the first ``npar`` parameters (in place) by Fisher scoring
    with step halving; returns the deviance.  ``work``: (6, 3) scratch."""
    obj = _objective(beta, npar, y, v, x, f, prior, eta_max)
    H = work[:3]
    g = work[3]
    trial = work[4]
    step = work[5]
    for _ in range(MAX_ITERATIONS):
        H[:] = 0.0
        g[:] = 0.0
        for k in range(y.size):
            if v[k]:
                e = _profile_term(beta, npar, x, k, eta_max)
                mu = f + e
                r = (y[k] - mu) * e / mu
                w = e * e / mu
                for a in range(npar):
                    g[a] += r * x[k, a]
                    for b in range(npar):
                        H[a, b] += w * x[k, a + b]
        for j in range(1, npar):
            H[j, j] += prior[j]
            g[j] -= prior[j] * beta[j]
        H[0, 0] += 1e-9  # e -> 0 on the floor: a finite step
        _solve(H, g, npar, step)
        decrement = 0.0  # Newton decrement g . H^-1 g: twice the expected gain of the full step
        largest = 0.0
        for j in range(npar):
            decrement += g[j] * step[j]
            largest = max(largest, abs(step[j]))
        if decrement < TOLERANCE:
            break
        scale = min(1.0, MAX_STEP / largest)  # the whole step shrunk: its direction kept
        accepted = False
        for _ in range(60):
            for j in range(npar):
                trial[j] = beta[j] + scale * step[j]
            new = _objective(trial, npar, y, v, x, f, prior, eta_max)
            if new <= obj:
                accepted = True
                break
            scale *= 0.5
        if not accepted:
            break
        for j in range(npar):
            beta[j] = trial[j]
        obj = new
    dev = 0.0
    for k in range(y.size):
        if v[k]:
            mu = f + _profile_term(beta, npar, x, k, eta_max)
            dev += (y[k] * np.log(y[k] / mu) if y[k] > 0 else 0.0) - (y[k] - mu)
    return 2.0 * dev


@numba.njit(cache=True)
def _expectations(y, v, allowed, x, f, prior, eta_max, threshold):
    """Kernel: the expectation (f + e^a) of every strip from its neighbours' counts ``y`` (S, K),
    usable ``v`` (S, K), the powers 0..4 of their scaled offsets ``x`` (S, K, 5), highest allowed
    order (S,): nested fits of order 0, 1, 2, a term kept
    where it lowers the deviance by more than ``threshold``; NaN without usable neighbours."""
    n = y.shape[0]
    out = np.full(n, np.nan)
    beta = np.zeros(3)
    work = np.zeros((6, 3))
    for s in range(n):
        tot = 0.0
        nv = 0
        for k in range(y.shape[1]):
            if v[s, k]:
                tot += y[s, k]
                nv += 1
        if nv == 0:
            continue
        beta[:] = 0.0
        beta[0] = np.log(max(tot / nv - f, 0.0) + 0.5)
        # (np.int64: a literal 1 would compile _fit once more, see "Literal integers" in reco/tracking/_jit.py)
        best_dev = _fit(beta, np.int64(1), y[s], v[s], x[s], f, prior, eta_max, work)
        best_a = beta[0]
        for order in range(1, allowed[s] + 1):
            dev = _fit(beta, order + 1, y[s], v[s], x[s], f, prior, eta_max, work)
            if best_dev - dev > threshold:
                best_dev = dev
                best_a = beta[0]
        out[s] = f + np.exp(min(best_a, eta_max))
    return out


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
    offsets, valid = neighbours(masked, half_width - gap, gap, max(MAX_REACH, half_width))
    idx = np.clip(np.arange(n)[:, None] + offsets, 0, n - 1)
    y = np.where(valid, y_all[idx], 0.0)
    f = profile_floor(y_all, masked) if floor is None else float(floor)
    prior = np.array([0.0, SLOPE_PRIOR, CURVATURE_PRIOR])
    eta_max = float(np.log(y_all.max(initial=0.0) + 1.0) + EXP_HEADROOM)
    powers = (offsets / X_SCALE)[:, :, None] ** np.arange(5)[None, None, :]
    return _expectations(y, valid, allowed_orders(valid, offsets), powers, f, prior, eta_max, LR_THRESHOLD)
