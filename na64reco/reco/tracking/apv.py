"""APV25 samples -> strip amplitude and time.

The APV shapes a strip's charge with a CR-RC response :func:`na64reco.pulse.apv_shape`
(unit peak at the peaking time ``tau``); the three samples are taken at
``t_s + k * spacing`` (k = 0, 1, 2) after the pulse start.

amplitude
    ``max(a0, a1, a2)`` (ADC counts).  Thresholds are in units of the APV noise.
time
    From the sample ratios with the CR-RC shape ``s(t) = t/tau exp(1 - t/tau)``:
    ``a0 / a2 = t_s / (t_s + 2 d) * exp(2 d / tau)`` gives
    ``t_s = 2 d q / (1 - q)`` with ``q = (a0 / a2) exp(-2 d / tau)``; when the pulse
    started after the first sample (``a0`` not significant) ``a1 / a2`` is used the same
    way with ``d``.  The reported time is the pulse start relative to the first sample,
    ``-t_s`` (ns): negative for a pulse that started before sample 0.  NaN if the ratios
    do not determine it (``a2 <= 0`` or a ratio outside the shape's range).
"""

from __future__ import annotations

import math

import numba


@numba.njit(cache=True)
def strip_time(a0: float, a1: float, a2: float, spacing: float, peaking: float, min_a0: float) -> float:
    """Pulse start relative to the first sample (ns), from the sample ratios (see module doc)."""
    return strip_time_r(a0, a1, a2, spacing, math.exp(-spacing / peaking), math.exp(-2.0 * spacing / peaking), min_a0)


@numba.njit(cache=True)
def strip_time_r(a0: float, a1: float, a2: float, spacing: float, r1: float, r2: float, min_a0: float) -> float:
    """:func:`strip_time` with the shape factors precomputed (for kernels calling it per strip):
    ``r1 = exp(-spacing / peaking)``, ``r2 = exp(-2 spacing / peaking)``."""
    if a2 <= 0.0:
        return math.nan
    if a0 > min_a0:
        q = a0 / a2 * r2
        if q >= 1.0:
            return math.nan
        return -(2.0 * spacing * q / (1.0 - q))
    if a1 <= 0.0:
        return math.nan
    q = a1 / a2 * r1
    if q >= 1.0:
        return math.nan
    return -(spacing * q / (1.0 - q) - spacing)


@numba.njit(cache=True)
def strip_time_error_r(a0: float, a1: float, a2: float, spacing: float, r1: float, r2: float, min_a0: float) -> float:
    """Error of :func:`strip_time_r` (ns) per unit of sample noise (multiply by the APV noise in
    ADC counts), by linear propagation of independent noise on the two samples of the ratio used:
    ``t = -2 d q / (1 - q)``, ``q = (a0 / a2) r2``, so ``dt = 2 d / (1 - q)^2 dq`` with
    ``dq^2 = (r2 / a2)^2 + (q / a2)^2`` per unit noise (``a1`` branch: ``d``, ``r1``).  NaN where
    the time is NaN.  The clock phase is common to the planes of an event and not in it."""
    if a2 <= 0.0:
        return math.nan
    if a0 > min_a0:
        q = a0 / a2 * r2
        if q >= 1.0:
            return math.nan
        return 2.0 * spacing / (1.0 - q) ** 2 * math.sqrt(r2 * r2 + q * q) / a2
    if a1 <= 0.0:
        return math.nan
    q = a1 / a2 * r1
    if q >= 1.0:
        return math.nan
    return spacing / (1.0 - q) ** 2 * math.sqrt(r1 * r1 + q * q) / a2



@numba.njit(cache=True)
def strip_time_and_error_r(a0: float, a1: float, a2: float, spacing: float, r1: float, r2: float,
                           min_a0: float) -> tuple[float, float]:
    """(:func:`strip_time_r`, :func:`strip_time_error_r`) without branches on the data, for a loop
    over many strips: both ratios' expressions are the same operations in the same order on the
    values the branch would take (``a0``, ``r2``, ``2 spacing`` or ``a1``, ``r1``, ``spacing``), so the
    results are bit for bit theirs; the NaN cases are selected at the end."""
    first = a0 > min_a0
    num = a0 if first else a1
    r = r2 if first else r1
    c = 2.0 * spacing if first else spacing
    bad = (a2 <= 0.0) | ((a1 <= 0.0) & (not first))
    q = num / (1.0 if bad else a2) * r  # (no division by zero where the result is NaN anyway)
    bad |= q >= 1.0
    den = 1.0 if bad else 1.0 - q
    x = c * q / den
    t = -x if first else -(x - spacing)
    te = c / den ** 2 * math.sqrt(r * r + q * q) / (1.0 if bad else a2)
    return (math.nan if bad else t), (math.nan if bad else te)


@numba.njit(cache=True)
def strip_amplitude(a0: float, a1: float, a2: float) -> float:
    """Amplitude (ADC): the largest of the three samples."""
    return max(a0, max(a1, a2))
