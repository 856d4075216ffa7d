"""Pulse shapes shared by the simulator (to make digits) and the reconstruction.

MSADC (calorimeters, counters)
    ``msadc_shape(t)`` is normalised to a peak of 1: a deposit of energy E in a channel
    with gain G (MeV per ADC count) gives a pulse of peak height E / G ADC counts above
    pedestal.  Hence reconstructed energy = (peak - pedestal) * G.
APV25 (micromegas, GEM)
    ``apv_shape(t)`` is a CR-RC shaping normalised to a peak of 1 at the peaking time;
    the three samples a0, a1, a2 are taken at ``t0 + k * spacing``.
"""

from __future__ import annotations

import numpy as np


def msadc_shape(t, rise, decay):
    """Unit-peak pulse at times ``t`` (ns) after the pulse start; 0 before it.

    Shape ``(t/rise)^2 exp(-t/decay)`` rescaled so that its maximum, at t = 2 decay, is 1
    (``rise`` only sets the normalisation convention and cancels).  Parameters in ns.
    """
    t = np.asarray(t, dtype=float)
    tp = 2.0 * decay
    s = np.where(t > 0, (t / tp) ** 2 * np.exp(-(t - tp) / decay), 0.0)
    return s


def msadc_peak_time(decay) -> float:
    """Time of the pulse maximum after its start (ns)."""
    return 2.0 * decay


def msadc_half_rise_time(decay) -> float:
    """Time after the pulse start at which the rising edge reaches half of the peak (ns)."""
    # solve (u)^2 exp(2 (1-u)) = 1/2 for u = t / (2 decay) in (0, 1) by bisection once
    lo, hi = 0.0, 1.0
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        if mid**2 * np.exp(2 * (1 - mid)) < 0.5:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi) * 2.0 * decay


def apv_shape(t, peaking):
    """CR-RC shaping, unit peak at ``t = peaking``; 0 for t <= 0 (ns)."""
    t = np.asarray(t, dtype=float)
    return np.where(t > 0, (t / peaking) * np.exp(1.0 - t / peaking), 0.0)
