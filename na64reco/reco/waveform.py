"""MSADC waveforms -> per-digit amplitude, time, energy and quality flags.

Three tiers (``STYLE.md``):

* :func:`_waveform_kernel` -- numba kernel over the flat ``(n_digits, n_samples)`` sample
  array and per-digit conditions arrays;
* :func:`waveform_reference` -- a slow, obvious per-digit twin in plain Python/numpy,
  tested to agree with the kernel;
* :func:`reconstruct_digits` -- the wrapper used by the stage functions: looks up the
  run's conditions of each digit, checks the input, calls the kernel.

Algorithm, per digit (samples ``s_k``, ``k = 0..31``, period ``P``):

1. Pedestals: the mean of the even and of the odd samples among the first
   ``msadc.pedestal_samples`` samples (the event's own estimate).  If one of these
   samples deviates from its parity mean by more than ``msadc.pedestal_contamination``
   noise sigmas (a pulse or a pile-up tail sits in the pedestal region), the conditions
   pedestals are used instead and :data:`FLAG_PEDESTAL_FALLBACK` is set.
2. ``y_k = s_k - pedestal(parity of k)``; the largest sample gives ``a_max``.
   Below ``msadc.zero_suppression`` ADC counts the digit is :data:`FLAG_BELOW_THRESHOLD`:
   no time, no energy.
3. Time: half-maximum of the rising edge by linear interpolation between samples
   gives a first estimate of the pulse start ``t0 = t_half - half_rise``.  It is then
   refined by a least-squares fit of the shared pulse template (``na64reco.pulse``,
   unit peak) ``y_k = A f(kP - t0)`` to the samples around the maximum (4 before,
   4 after; for saturated pulses 4 before the first and 4 after the last saturated one),
   with ``A`` solved linearly and ``t0`` by Newton steps on the exact stationarity
   condition of the fit (:func:`_newton_t0`, closed-form derivatives, stop at a step
   < 0.02 ns) from the first estimate; where they leave +-0.6 P (saturated: +-1.5 P) of
   it, meet a non-maximum curvature or do not converge in 6 steps, by a golden-section
   search within that range (:func:`_golden_t0`).  Saturated samples (raw
   ``>= max_adc``) are left out of the fit, so saturated pulses keep a sensible
   amplitude; they set :data:`FLAG_SATURATED`.
4. amplitude = ``A`` (ADC counts above pedestal, the template peak),
   time = ``t0 + half_rise - time_offset`` (ns from the first sample: the half-maximum
   time corrected for the channel's cable/PMT delay), energy = ``A * gain`` (MeV).
5. Pile-up (:data:`FLAG_PILEUP`): another local maximum higher than
   ``msadc.pileup_fraction`` of ``a_max`` that exceeds the fitted pulse's own tail there
   by more than ``msadc.pileup_prominence`` noise sigmas, or a template chi2/ndf above
   ``msadc.pileup_chi2`` (with sigma^2 = noise^2 + 1/12 per sample).
6. Channels whose status is not good (dead, noisy) are :data:`FLAG_MASKED`; their
   energy is reconstructed but never counted by the stage functions.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numba
import numpy as np

from na64reco.errors import RawFormatError
from na64reco.geometry import Setup
from na64reco.pulse import msadc_half_rise_time, msadc_shape
from na64reco.setup_document import setup_document

FLAG_SATURATED = 1
FLAG_PILEUP = 2
FLAG_PEDESTAL_FALLBACK = 4
FLAG_MASKED = 8
FLAG_BELOW_THRESHOLD = 16
FLAG_OUT_OF_TIME = 32  # set by the stage functions (timing window), not by the kernel

_GOLDEN = (math.sqrt(5.0) - 1.0) / 2.0
_N_GOLDEN = 13  # final bracket 1.2 P * 0.618^13 ~ 0.03 ns
_N_GOLDEN_SATURATED = 16  # final bracket 3 P * 0.618^16 ~ 0.02 ns
_N_NEWTON = 6  # Newton iterations before falling back to the golden-section search
_NEWTON_TOL = 0.02  # ns, last Newton step (convergence is quadratic: the error after it is ~1e-5 ns)
_HALF_RANGE, _HALF_RANGE_SATURATED = 0.6, 1.5  # search range of t0 around the first estimate (P)
_FIT_BEFORE, _FIT_AFTER = 4, 4
# Sample indices in the kernel's hot loops are unsigned (``_u(k)``, ``_U1``): numba adds the
# end of the array to a negative signed index (Python's wraparound), a test and select per
# access the loops cannot prove away.
_u = np.uint64
_U1 = np.uint64(1)


@dataclass(frozen=True)
class WaveformConfig:
    """Digit-reconstruction parameters of a setup (``msadc`` section of the setup YAML)."""

    n_samples: int
    period: float  # ns
    max_adc: int
    decay: float  # ns
    half_rise: float  # ns, half-maximum time after the pulse start
    signal_time: float  # ns, nominal pulse start
    threshold: float  # ADC above pedestal
    pedestal_samples: int
    pedestal_contamination: float  # noise sigmas
    timing_window: float  # ns
    pileup_fraction: float
    pileup_prominence: float  # noise sigmas
    pileup_chi2: float

    @property
    def nominal_time(self) -> float:
        """Half-maximum time of an in-time pulse of a channel with zero time offset (ns)."""
        return self.signal_time + self.half_rise


@functools.lru_cache(maxsize=16)
def _config_from_source(source: str, n_samples, period, max_adc, decay, signal_time, threshold):
    a = setup_document(source).node("msadc")
    return WaveformConfig(
        n_samples=n_samples,
        period=period,
        max_adc=max_adc,
        decay=decay,
        half_rise=msadc_half_rise_time(decay),
        signal_time=signal_time,
        threshold=threshold,
        pedestal_samples=a.integer("pedestal_samples", minimum=2, maximum=n_samples - 8),
        pedestal_contamination=a.number("pedestal_contamination", minimum=1.0),
        timing_window=a.quantity("timing_window", "time", minimum=0.0),
        pileup_fraction=a.number("pileup_fraction", minimum=0.0, maximum=1.0),
        pileup_prominence=a.number("pileup_prominence", minimum=0.0),
        pileup_chi2=a.number("pileup_chi2", minimum=1.0),
    )


def waveform_config(setup: Setup) -> WaveformConfig:
    """The :class:`WaveformConfig` of ``setup`` (raises ConfigError naming a missing key)."""
    m = setup.msadc
    return _config_from_source(
        setup.source, m.n_samples, m.sample_period, m.max_adc, m.pulse_decay, m.signal_time, m.zero_suppression
    )


def _kernel_args(cfg: WaveformConfig):
    return (
        cfg.pedestal_samples,
        cfg.pedestal_contamination,
        cfg.period,
        cfg.decay,
        cfg.half_rise,
        cfg.max_adc,
        cfg.threshold,
        cfg.pileup_fraction,
        cfg.pileup_prominence,
        cfg.pileup_chi2,
    )


# ----------------------------------------------------------------------------------------
# fast kernel
@numba.njit(cache=True, nogil=True, inline="always")
def _max(a, b):
    """Python's ``max(a, b)`` (``b if b > a else a``) as plain code: numba's builtin ``max`` and
    ``min`` of scalars compile to calls of a separate function here (with register spills around
    them, e.g. once per sample in the pedestal subtraction)."""
    return b if b > a else a


@numba.njit(cache=True, nogil=True, inline="always")
def _min(a, b):
    """Python's ``min(a, b)`` (``b if b < a else a``) as plain code (see :func:`_max`)."""
    return b if b < a else a


@numba.njit(cache=True, nogil=True)
def _fit_sums(y, use, k_lo, k_hi, t0, period, decay):
    """Sums (sum y f, sum f f) of the template starting at t0 over samples k_lo..k_hi."""
    tp = 2.0 * decay
    r = math.exp(-period / decay)
    # exp(-(t_k - tp)/decay) with t_k = k P - t0, by recursion in k
    e = math.exp(-(k_lo * period - t0 - tp) / decay)
    syf = 0.0
    sff = 0.0
    for k in range(k_lo, k_hi + 1):
        t = k * period - t0
        if t > 0.0 and use[k]:
            u = t / tp
            f = u * u * e
            syf += y[k] * f
            sff += f * f
        e *= r
    return syf, sff


@numba.njit(cache=True, nogil=True)
def _suffix_moments(y, use, k_lo, k_hi, tau, period, cexp, mom):
    """Suffix sums over the used samples k >= m of the fit window (m = k_lo..k_hi+1) of
    ``y c d^j`` (rows 0-2, j = 0..2) and ``c^2 d^j`` (rows 3-7, j = 0..4), with
    ``c = cexp[k]`` and ``d = k P - tau`` (local times: mild cancellation below)."""
    # (the running sums in registers, each row stored once)
    s0 = s1 = s2 = s3 = s4 = s5 = s6 = s7 = 0.0
    for j in range(8):
        mom[_u(k_hi + 1), j] = 0.0
    for k in range(k_hi, k_lo - 1, -1):
        ku = _u(k)
        if use[ku]:
            d = k * period - tau
            yc = y[ku] * cexp[ku]
            cc = cexp[ku] * cexp[ku]
            d2 = d * d
            s0 += yc
            s1 += yc * d
            s2 += yc * d2
            s3 += cc
            s4 += cc * d
            s5 += cc * d2
            s6 += cc * d2 * d
            s7 += cc * d2 * d2
        mom[ku, 0] = s0
        mom[ku, 1] = s1
        mom[ku, 2] = s2
        mom[ku, 3] = s3
        mom[ku, 4] = s4
        mom[ku, 5] = s5
        mom[ku, 6] = s6
        mom[ku, 7] = s7


@numba.njit(cache=True, nogil=True, inline="always")
def _quality(mom, delta, t0, k_lo, k_hi, period):
    """``(sum y f)^2 / sum f f`` of :func:`_fit_sums` for a pulse start ``t0 = tau + delta``
    in O(1): with ``t_k = d_k - delta`` the sums are polynomials in delta of the suffix
    moments over the samples with ``t_k > 0`` (the common factor exp(t0/decay) and the
    powers of the peaking time cancel in the ratio).  -1 where no sample contributes."""
    m = int(math.floor(t0 / period)) + 1
    while m - 1 >= k_lo and (m - 1) * period - t0 > 0.0:
        m -= 1
    while m <= k_hi and m * period - t0 <= 0.0:
        m += 1
    m = _max(m, k_lo)
    if m > k_hi:
        return -1.0
    mu = _u(m)
    syf = mom[mu, 2] - 2.0 * delta * mom[mu, 1] + delta * delta * mom[mu, 0]
    dd = delta * delta
    sff = (
        mom[mu, 7] - 4.0 * delta * mom[mu, 6] + 6.0 * dd * mom[mu, 5] - 4.0 * dd * delta * mom[mu, 4]
        + dd * dd * mom[mu, 3]
    )
    if sff <= 0.0:
        return -1.0
    return syf * syf / sff


@numba.njit(cache=True, nogil=True)
def _newton_t0(yc, cc, kp, k_lo, k_hi, t0, lo, hi, decay):
    """Newton iteration for the pulse start maximising ``Q(t0) = (sum y f)^2 / sum f f``
    (= minimising the template chi2 with the amplitude solved linearly), from ``t0``.

    With ``e_k = k P - t0`` (``kp[k] = k P``) and ``c_k`` the template factor of sample k for
    a pulse starting at 0 (``yc[k] = y_k c_k``, ``cc[k] = c_k^2``, both 0 for samples left out
    of the fit) the sums over the samples with ``e_k > 0`` are ``N = sum y c e^2`` and
    ``D = sum c^2 e^4`` up to factors that cancel in Q; ``dQ/dt0 = 0`` at
    ``h = 2 N' D - N D' = 0`` (derivatives in t0), solved by Newton steps ``-h / h'``
    (``h' < 0`` at a maximum).  Returns ``(t0, ok, amplitude, Q)``, the last two from the sums
    of the last iteration (before its step ``s``): Q is stationary there and is moved to the
    final t0 to second order (``Q' = N h / D^2``), the amplitude ``N tp^2 / (D exp(t0/decay))``
    to second order in ``s`` of its logarithm.  ``ok`` is False if a step leaves ``[lo, hi]``,
    the curvature is not that of a maximum, or the steps have not fallen below
    :data:`_NEWTON_TOL` after :data:`_N_NEWTON` iterations (the caller then falls back to the
    golden-section search).

    One pass over the samples gives the sums of the first step and the moments of ``d_k = kP - tau``
    (``tau`` that step's t0); the later steps over the same samples take their sums from these
    moments as polynomials in ``t0 - tau`` (equal to the direct sums to rounding, ~1e-15
    relative); a step that changes the set of samples with ``e_k > 0`` makes a new pass.
    """
    m_tau = k_hi + _U1 + _U1  # the first sample of the moments (none yet)
    tau = t0
    w0 = w1 = w2 = v0 = v1 = v2 = v3 = v4 = 0.0
    for _ in range(_N_NEWTON):
        # the samples with e_k > 0 are k >= m (e_k grows with k): no test in the sum
        m = k_lo
        while m <= k_hi and kp[m] - t0 <= 0.0:
            m += _U1
        if m != m_tau:
            # one pass over the samples: the moments sum y c d^j (j <= 2) and sum c^2 d^j (j <= 4)
            # of d_k = k P - tau at tau = t0 (so the sums of this step)
            tau = t0
            m_tau = m
            w0 = w1 = w2 = v0 = v1 = v2 = v3 = v4 = 0.0
            for k in range(m, k_hi + _U1):
                e = kp[k] - tau
                w = yc[k]
                v = cc[k]
                e2 = e * e
                w0 += w
                w1 += w * e
                w2 += w * e2
                v0 += v
                v1 += v * e
                v2 += v * e2
                v3 += v * e2 * e
                v4 += v * e2 * e2
            a0 = w0
            a1 = w1
            a2 = w2
            b2 = v2
            b3 = v3
            b4 = v4
        else:
            # the same samples: the sums at t0 = tau + s from the moments (e_k = d_k - s)
            s = t0 - tau
            s2 = s * s
            s3 = s2 * s
            s4 = s2 * s2
            a0 = w0
            a1 = w1 - s * w0
            a2 = w2 - 2.0 * s * w1 + s2 * w0
            b2 = v2 - 2.0 * s * v1 + s2 * v0
            b3 = v3 - 3.0 * s * v2 + 3.0 * s2 * v1 - s3 * v0
            b4 = v4 - 4.0 * s * v3 + 6.0 * s2 * v2 - 4.0 * s3 * v1 + s4 * v0
        # N = a2, N' = -2 a1, N'' = 2 a0; D = b4, D' = -4 b3, D'' = 12 b2
        if a2 <= 0.0 or b4 <= 0.0:
            return t0, False, 0.0, 0.0
        h = -4.0 * a1 * b4 + 4.0 * a2 * b3
        hp = 4.0 * a0 * b4 + 8.0 * a1 * b3 - 12.0 * a2 * b2
        if hp >= 0.0:
            return t0, False, 0.0, 0.0
        step = -h / hp
        if abs(step) < _NEWTON_TOL:
            tp = 2.0 * decay
            ln1 = -2.0 * a1 / a2 + 4.0 * b3 / b4 - 1.0 / decay  # d ln(amplitude) / d t0
            ln2 = 2.0 * a0 / a2 - (2.0 * a1 / a2) ** 2 - 12.0 * b2 / b4 + (4.0 * b3 / b4) ** 2  # d/dt0 of ln1
            amp = a2 * tp * tp / b4 * math.exp(-t0 / decay + step * ln1 + 0.5 * step * step * ln2)
            q = a2 * a2 / b4 - 0.5 * a2 * h * h / (b4 * b4 * hp)  # Q at t0 + step to second order
            t0 += step
            return t0, lo <= t0 <= hi, amp, q
        t0 += step
        if t0 < lo or t0 > hi:
            return t0, False, 0.0, 0.0
    return t0, False, 0.0, 0.0


@numba.njit(cache=True, nogil=True)
def _golden_t0(y, use, k_lo, k_hi, t0c, half_range, sat, period, cexp, mom):
    """Golden-section search of the pulse start maximising Q within ``t0c +- half_range``:
    the fallback of :func:`_newton_t0` (and the algorithm before it)."""
    # golden-section search of max (sum y f)^2 / sum f f  (= min chi2), the quality
    # evaluated from suffix moments (see _quality); the final fit uses _fit_sums
    _suffix_moments(y, use, k_lo, k_hi, t0c, period, cexp, mom)
    a = t0c - half_range
    b = t0c + half_range
    c = b - _GOLDEN * (b - a)
    d = a + _GOLDEN * (b - a)
    qc = _quality(mom, c - t0c, c, k_lo, k_hi, period)
    qd = _quality(mom, d - t0c, d, k_lo, k_hi, period)
    for _ in range(_N_GOLDEN_SATURATED if sat else _N_GOLDEN):
        if qc > qd:
            b = d
            d = c
            qd = qc
            c = b - _GOLDEN * (b - a)
            qc = _quality(mom, c - t0c, c, k_lo, k_hi, period)
        else:
            a = c
            c = d
            qc = qd
            d = a + _GOLDEN * (b - a)
            qd = _quality(mom, d - t0c, d, k_lo, k_hi, period)
    return 0.5 * (a + b)


@numba.njit(cache=True, nogil=True)
def _waveform_kernel(
    adc,
    ped_even_cond,
    ped_odd_cond,
    noise,
    gain,
    time_offset,
    status,
    n_ped,
    contamination,
    period,
    decay,
    half_rise,
    max_adc,
    threshold,
    pileup_fraction,
    pileup_prominence,
    pileup_chi2,
):
    """:func:`_fit_digits` with per-digit conditions arrays (the conditions of digit i at i)."""
    return _fit_digits(adc, np.arange(adc.shape[0]), ped_even_cond, ped_odd_cond, noise, gain, time_offset, status,
                       n_ped, contamination, period, decay, half_rise, max_adc, threshold, pileup_fraction,
                       pileup_prominence, pileup_chi2)


@numba.njit(cache=True, nogil=True)
def _fit_digits(
    adc,
    cond,
    ped_even_cond,
    ped_odd_cond,
    noise,
    gain,
    time_offset,
    status,
    n_ped,
    contamination,
    period,
    decay,
    half_rise,
    max_adc,
    threshold,
    pileup_fraction,
    pileup_prominence,
    pileup_chi2,
):
    """The waveform kernel: digit i has the conditions at ``cond[i]`` of the conditions arrays
    (:func:`reconstruct_digits`: the flattened (detector id, channel) tables and each digit's
    entry, :func:`_condition_index`; not a per-digit copy of six tables, 24 MB per 50k events)."""
    n, ns = adc.shape
    amplitude = np.empty(n)
    time = np.empty(n)
    energy = np.empty(n)
    ped_even = np.empty(n)
    ped_odd = np.empty(n)
    chi2ndf = np.empty(n)
    flags = np.zeros(n, dtype=np.uint8)
    y = np.empty(ns)
    use = np.empty(ns, dtype=np.bool_)
    mom = np.empty((ns + 1, 8))
    # template factor exp(-(k P - 2 decay) / decay) of sample k for a pulse starting at 0
    cexp = np.empty(ns)
    kp = np.empty(ns)  # sample times k P
    for k in range(ns):
        cexp[k] = math.exp(-(k * period - 2.0 * decay) / decay)
        kp[k] = k * period
    yc = np.empty(ns)  # y_k c_k and c_k^2 of the fit's samples (0: left out)
    cc = np.empty(ns)
    for i in range(n):
        c = cond[i]
        sig = _max(noise[c], 1.0)
        # 1. pedestals per parity from the first samples, in one pass with the extremes of each
        # parity: |s - mean| > cut for one of them <=> max - mean > cut or mean - min > cut
        # (s - mean is monotonic in s, also in floating point)
        se = 0.0
        so = 0.0
        e_lo = e_hi = adc[i, 0]
        o_lo = o_hi = adc[i, 1]
        for j in range(n_ped // 2):
            k = _u(2 * j)
            a = adc[i, k]
            b = adc[i, k + _U1]
            se += a
            so += b
            e_lo = _min(e_lo, a)
            e_hi = _max(e_hi, a)
            o_lo = _min(o_lo, b)
            o_hi = _max(o_hi, b)
        if n_ped & 1:
            a = adc[i, _u(n_ped - 1)]
            se += a
            e_lo = _min(e_lo, a)
            e_hi = _max(e_hi, a)
        pe = se / ((n_ped + 1) // 2)
        po = so / (n_ped // 2)
        cut = contamination * sig
        bad = e_hi - pe > cut or pe - e_lo > cut or o_hi - po > cut or po - o_lo > cut
        f = np.uint8(0)
        if bad:
            pe = ped_even_cond[c]
            po = ped_odd_cond[c]
            f |= FLAG_PEDESTAL_FALLBACK
        ped_even[i] = pe
        ped_odd[i] = po
        # 2. pedestal-subtracted samples, maximum, saturation
        k_sat_first = ns
        k_sat_last = -1
        # the pedestal-subtracted samples, in a loop of their own (vectorised by the compiler);
        # then the largest raw sample of each parity: the largest y is one of theirs (s - pedestal
        # is monotonic in s, also in floating point); then its first sample (no compare chain)
        for k in range(_u(ns)):
            y[k] = adc[i, k] - (po if k & _U1 else pe)
        raw_e = adc[i, 0]
        raw_o = adc[i, 1]
        for j in range(ns // 2):
            k = _u(2 * j)
            raw_e = _max(raw_e, adc[i, k])
            raw_o = _max(raw_o, adc[i, k + _U1])
        if ns & 1:
            raw_e = _max(raw_e, adc[i, ns - 1])
        raw_max = _max(raw_e, raw_o)
        amax = _max(raw_e - pe, raw_o - po)
        imax = 0
        if amax == amax:  # (NaN: a NaN pedestal; the first sample, as a compare chain over y gives)
            while y[_u(imax)] != amax:
                imax += 1
        if raw_max >= max_adc:
            for k in range(ns):
                use[k] = adc[i, k] < max_adc
                if not use[k]:
                    f |= FLAG_SATURATED
                    k_sat_first = _min(k_sat_first, k)
                    k_sat_last = k
        else:
            use[:] = True
        if status[c] != 0:
            f |= FLAG_MASKED
        if amax < threshold:
            amplitude[i] = amax
            time[i] = np.nan
            energy[i] = 0.0
            chi2ndf[i] = np.nan
            flags[i] = f | FLAG_BELOW_THRESHOLD
            continue
        # 3. half maximum on the rising edge (linear interpolation) -> first t0
        half = 0.5 * amax
        t_half = 0.0
        for k in range(imax - 1, -1, -1):
            yk = y[_u(k)]
            if yk < half:
                t_half = period * (k + (half - yk) / (y[_u(k) + _U1] - yk))
                break
        t0c = t_half - half_rise
        k_first = _min(imax, k_sat_first)
        k_last = _max(imax, k_sat_last)
        k_lo = _max(0, k_first - _FIT_BEFORE)
        k_hi = _min(ns - 1, k_last + _FIT_AFTER)
        # Newton steps on the exact condition dQ/dt0 = 0 of the best template fit
        # (max Q = (sum y f)^2 / sum f f, i.e. min chi2) from the half-maximum estimate
        sat = (f & FLAG_SATURATED) != 0
        half_range = (_HALF_RANGE_SATURATED if sat else _HALF_RANGE) * period
        npts = 0
        syy = 0.0
        for k in range(_u(k_lo), _u(k_hi) + _U1):
            if use[k]:
                yc[k] = y[k] * cexp[k]
                cc[k] = cexp[k] * cexp[k]
                syy += y[k] * y[k]
                npts += 1
            else:
                yc[k] = 0.0
                cc[k] = 0.0
        t0, ok, amp, q = _newton_t0(yc, cc, kp, _u(k_lo), _u(k_hi), t0c, t0c - half_range, t0c + half_range, decay)
        if not ok:
            t0 = _golden_t0(y, use, k_lo, k_hi, t0c, half_range, sat, period, cexp, mom)
            s1, s2 = _fit_sums(y, use, k_lo, k_hi, t0, period, decay)
            amp = s1 / s2 if s2 > 0 else amax
            q = s1 * s1 / s2 if s2 > 0 else 0.0
        # chi2 of the fit
        chi2 = _max(syy - q, 0.0) / (noise[c] ** 2 + 1.0 / 12.0)
        c2 = chi2 / (npts - 2) if npts > 2 else np.nan
        # 5. pile-up: a second prominent local maximum, or an inconsistent shape
        pile = c2 > pileup_chi2
        # (the template tail is >= 0: a maximum below the prominence cannot be pile-up)
        low = _max(pileup_fraction * amax, pileup_prominence * sig)
        # first a pass without branches for such a maximum (but the used-sample test); usually none
        n_cand = 0
        if not pile:
            for j in range(1, ns - 1):
                k = _u(j)
                n_cand += (y[k] > low) & (y[k] > y[k - _U1]) & (y[k] >= y[k + _U1]) & (j != imax)
        for k in range(1, ns - 1) if n_cand > 0 else range(0):
            if y[k] <= low or k == imax or not use[k]:
                continue
            if y[k] > y[k - 1] and y[k] >= y[k + 1]:
                t = k * period - t0
                expected = 0.0
                if t > 0.0:
                    u = t / (2.0 * decay)
                    expected = amp * u * u * math.exp(-(t - 2.0 * decay) / decay)
                if y[k] - expected > pileup_prominence * sig:
                    pile = True
                    break
        if pile:
            f |= FLAG_PILEUP
        amplitude[i] = amp
        time[i] = t0 + half_rise - time_offset[c]
        energy[i] = amp * gain[c]
        chi2ndf[i] = c2
        flags[i] = f
    return amplitude, time, energy, ped_even, ped_odd, chi2ndf, flags


# ----------------------------------------------------------------------------------------
# slow reference twin
def waveform_reference(adc, ped_even_cond, ped_odd_cond, noise, gain, time_offset, status, cfg):
    """Plain per-digit implementation of the same algorithm (see the module docstring).

    Evaluates the template with :func:`na64reco.pulse.msadc_shape`; returns the same
    tuple as the kernel: amplitude, time, energy, ped_even, ped_odd, chi2ndf, flags.
    """
    adc = np.asarray(adc, dtype=float)
    n, ns = adc.shape
    out = {k: np.empty(n) for k in ("amplitude", "time", "energy", "ped_even", "ped_odd", "chi2ndf")}
    flags = np.zeros(n, dtype=np.uint8)
    k_all = np.arange(ns)
    for i in range(n):
        s = adc[i]
        sig = max(noise[i], 1.0)
        head = s[: cfg.pedestal_samples]
        pe, po = head[0::2].mean(), head[1::2].mean()
        ref = np.where(np.arange(len(head)) % 2 == 0, pe, po)
        f = 0
        if np.any(np.abs(head - ref) > cfg.pedestal_contamination * sig):
            pe, po = ped_even_cond[i], ped_odd_cond[i]
            f |= FLAG_PEDESTAL_FALLBACK
        out["ped_even"][i], out["ped_odd"][i] = pe, po
        y = s - np.where(k_all % 2 == 0, pe, po)
        use = s < cfg.max_adc
        if not use.all():
            f |= FLAG_SATURATED
        if status[i] != 0:
            f |= FLAG_MASKED
        imax = int(np.argmax(y))
        amax = y[imax]
        if amax < cfg.threshold:
            out["amplitude"][i], out["time"][i], out["energy"][i], out["chi2ndf"][i] = amax, np.nan, 0.0, np.nan
            flags[i] = f | FLAG_BELOW_THRESHOLD
            continue
        below = [k for k in range(imax) if y[k] < amax / 2]
        t_half = 0.0
        if below:
            k = below[-1]
            t_half = cfg.period * (k + (amax / 2 - y[k]) / (y[k + 1] - y[k]))
        saturated = np.flatnonzero(~use)
        k_first = min(imax, saturated.min()) if saturated.size else imax
        k_last = max(imax, saturated.max()) if saturated.size else imax
        window = np.arange(max(0, k_first - _FIT_BEFORE), min(ns - 1, k_last + _FIT_AFTER) + 1)
        window = window[use[window]]

        def quality(t0, window=window, y=y):
            tmpl = msadc_shape(window * cfg.period - t0, cfg.decay / 2, cfg.decay)
            sff = np.sum(tmpl * tmpl)
            return (np.sum(y[window] * tmpl) ** 2 / sff) if sff > 0 else -1.0

        t0c = t_half - cfg.half_rise
        sat = bool(f & FLAG_SATURATED)
        half_range = (_HALF_RANGE_SATURATED if sat else _HALF_RANGE) * cfg.period
        newton = _newton_reference(y[window], window * cfg.period, t0c, half_range, cfg)
        if newton is not None:
            t0, amp, chi2 = newton
            chi2 = max(np.sum(y[window] ** 2) - chi2, 0.0)  # (Newton returns the best sum (y f)^2 / sum f f)
        else:
            t0 = _golden_reference(quality, t0c, half_range, sat)
            tmpl = msadc_shape(window * cfg.period - t0, cfg.decay / 2, cfg.decay)
            sff = np.sum(tmpl**2)
            amp = np.sum(y[window] * tmpl) / sff if sff > 0 else amax
            chi2 = np.sum((y[window] - amp * tmpl) ** 2)
        c2 = chi2 / (noise[i] ** 2 + 1 / 12) / (len(window) - 2) if len(window) > 2 else np.nan
        pile = c2 > cfg.pileup_chi2
        for k in range(1, ns - 1):
            if k != imax and use[k] and y[k] > cfg.pileup_fraction * amax and y[k] > y[k - 1] and y[k] >= y[k + 1]:
                expected = amp * msadc_shape(k * cfg.period - t0, cfg.decay / 2, cfg.decay)
                if y[k] - expected > cfg.pileup_prominence * sig:
                    pile = True
        if pile:
            f |= FLAG_PILEUP
        out["amplitude"][i] = amp
        out["time"][i] = t0 + cfg.half_rise - time_offset[i]
        out["energy"][i] = amp * gain[i]
        out["chi2ndf"][i] = c2
        flags[i] = f
    return (out["amplitude"], out["time"], out["energy"], out["ped_even"], out["ped_odd"], out["chi2ndf"], flags)


def _golden_reference(quality, t0c, half_range, sat):
    """Golden-section search of the maximum of ``quality`` within ``t0c +- half_range``."""
    a, b = t0c - half_range, t0c + half_range
    c, d = b - _GOLDEN * (b - a), a + _GOLDEN * (b - a)
    qc, qd = quality(c), quality(d)
    for _ in range(_N_GOLDEN_SATURATED if sat else _N_GOLDEN):
        if qc > qd:
            b, d, qd = d, c, qc
            c = b - _GOLDEN * (b - a)
            qc = quality(c)
        else:
            a, c, qc = c, d, qd
            d = a + _GOLDEN * (b - a)
            qd = quality(d)
    return (a + b) / 2


def _newton_reference(y, t_sample, t0, half_range, cfg):
    """Newton iteration of :func:`_newton_t0` in numpy: (t0, amplitude, best sum (y f)^2 / sum f f),
    None where the kernel falls back to the golden-section search."""
    lo, hi = t0 - half_range, t0 + half_range
    c = np.exp(-(t_sample - 2 * cfg.decay) / cfg.decay)  # template factor, common exp(t0/decay) dropped
    for _ in range(_N_NEWTON):
        e = t_sample - t0
        on = e > 0
        yc, cc, e = (y * c)[on], (c * c)[on], e[on]
        n0, n1, n2 = np.sum(yc), -2 * np.sum(yc * e), np.sum(yc * e**2)  # N'', N', N (t0 derivatives)
        d0, d1, d2 = 12 * np.sum(cc * e**2), -4 * np.sum(cc * e**3), np.sum(cc * e**4)  # D'', D', D
        if n2 <= 0 or d2 <= 0:
            return None
        h = 2 * n1 * d2 - n2 * d1
        hp = 2 * (2 * n0) * d2 + n1 * d1 - n2 * d0
        if hp >= 0:
            return None
        step = -h / hp
        if abs(step) < _NEWTON_TOL:
            dlog = n1 / n2 - d1 / d2 - 1 / cfg.decay  # d ln(amplitude) / d t0, and its derivative:
            dlog2 = 2 * n0 / n2 - (n1 / n2) ** 2 - d0 / d2 + (d1 / d2) ** 2
            amp = n2 * (2 * cfg.decay) ** 2 / d2 * np.exp(-t0 / cfg.decay + step * dlog + step**2 * dlog2 / 2)
            q = n2**2 / d2 + n2 * h * (-h / hp) / d2**2 / 2  # Q(t0 + step) to second order, Q' = N h / D^2
            t0 += step
            return (t0, amp, q) if lo <= t0 <= hi else None
        t0 += step
        if not lo <= t0 <= hi:
            return None
    return None


# ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Digits:
    """Reconstructed MSADC digits (flat arrays over digits).

    amplitude: ADC counts above pedestal; time: ns (half-maximum, channel offset removed);
    energy: MeV; pedestals: ADC; chi2ndf: template fit; flags: ``FLAG_*`` bits.
    """

    det: np.ndarray
    chan: np.ndarray
    amplitude: np.ndarray
    time: np.ndarray
    energy: np.ndarray
    ped_even: np.ndarray
    ped_odd: np.ndarray
    chi2ndf: np.ndarray
    flags: np.ndarray

    @property
    def good(self) -> np.ndarray:
        """Digits that count: above threshold, not masked, not out of time."""
        return (self.flags & (FLAG_BELOW_THRESHOLD | FLAG_MASKED | FLAG_OUT_OF_TIME)) == 0


def check_samples(adc: np.ndarray, source: str = "", describe=None, max_adc: int | None = None) -> np.ndarray:
    """Validate a (n_digits, n_samples) sample array: finite, not all zero, and (with ``max_adc``)
    raw ADC counts in ``0..max_adc`` (the format's 12-bit range: a value outside it, written with
    valid checksums, would otherwise move a pedestal or a pulse).

    Raises :class:`RawFormatError` naming ``source`` and, through ``describe(i)``, the
    event of the first bad digit.  Returns the samples as a C-contiguous array.
    """
    adc = np.ascontiguousarray(adc)
    if adc.ndim != 2:
        raise RawFormatError(
            f"{source or '<digits>'}: MSADC samples have shape {adc.shape}, expected (n_digits, n_samples)"
        )
    where = (lambda i: f"digit {i}") if describe is None else describe
    if adc.dtype.kind == "f":
        bad = ~np.isfinite(adc).all(axis=1)
        if bad.any():
            i = int(np.argmax(bad))
            raise RawFormatError(f"{source or '<digits>'}: {where(i)} has NaN/infinite MSADC samples")
    if max_adc is not None and len(adc) and adc.shape[1]:
        i = _first_out_of_range(adc, max_adc)
        if i >= 0:
            row = adc[i]
            k = int(np.flatnonzero((row < 0) | (row > max_adc))[0])
            raise RawFormatError(f"{source or '<digits>'}: {where(i)} has MSADC sample {k} = {row[k].item()!r}; "
                                 f"expected raw ADC counts 0..{max_adc}")
    if len(adc) and adc.shape[1] and _first_all_zero(adc) >= 0:
        zero = ~adc.any(axis=1)
        i = int(np.argmax(zero))
        raise RawFormatError(
            f"{source or '<digits>'}: {where(i)} has an all-zero MSADC waveform "
            f"({int(zero.sum())} such digit(s) in total): corrupt or unconnected read-out"
        )
    return adc


def _first_out_of_range(adc, max_adc) -> int:
    """Index of the first row with a sample below 0 or above ``max_adc``, -1 if none (NaN is
    checked before): the extremes of all samples in one vectorised pass (~1 ms per 500k digits;
    row by row it was ~9 ms), the row looked for only when one is out of range."""
    lo, hi = _extremes(adc.reshape(-1))
    if lo >= 0 and hi <= max_adc:
        return -1
    return int(np.argmax(((adc < 0) | (adc > max_adc)).any(axis=1)))


@numba.njit(cache=True, nogil=True)
def _extremes(flat):
    """(min, max) of a non-empty 1-d array."""
    lo = flat[0]
    hi = flat[0]
    for k in range(flat.size):
        v = flat[k]
        lo = v if v < lo else lo
        hi = v if v > hi else hi
    return lo, hi


@numba.njit(cache=True, nogil=True)
def _first_all_zero(adc):
    """Index of the first all-zero row, -1 if none (stops at the first non-zero sample)."""
    n, ns = adc.shape
    for i in range(n):
        zero = True
        for k in range(ns):
            if adc[i, k] != 0:
                zero = False
                break
        if zero:
            return i
    return -1


def reconstruct_digits(det, chan, adc, setup: Setup, conditions, *, source: str = "", describe=None) -> Digits:
    """Reconstruct flat MSADC digits with the run's ``conditions`` (wrapper of the kernel).

    ``det``, ``chan``: detector id and channel of each digit; ``adc``: (n, 32) samples.
    ``describe(i)`` names the event of digit ``i`` in error messages.
    """
    det = np.asarray(det, dtype=np.int64)
    chan = np.asarray(chan, dtype=np.int64)
    cfg = waveform_config(setup)
    adc = check_samples(adc, source, describe, max_adc=cfg.max_adc)
    if adc.shape[1] != cfg.n_samples:
        raise RawFormatError(
            f"{source or '<digits>'}: {adc.shape[1]} samples per digit, setup {setup.name} expects {cfg.n_samples}"
        )
    tables = _condition_tables(setup, conditions)
    width = tables["gain"].shape[1]
    stacked = _stacked_tables(conditions, tables)
    cond, i = _condition_index(det, chan, stacked[_TABLE_FIELDS.index("gain")], width)
    if i >= 0:
        where = f"digit {i}" if describe is None else describe(i)
        raise RawFormatError(
            f"{source or '<digits>'}: {where}: detector id {det[i]} channel {chan[i]} is not a channel of "
            f"setup {setup.name} (detectors: "
            + ", ".join(f"{d.name}={d.id} ({d.n_channels} ch)" for d in setup.calorimeters.values())
            + ")"
        )
    if adc.dtype not in (np.int16, np.int32, np.int64, np.float64):
        adc = adc.astype(np.float64)
    res = _fit_digits(adc, cond, *stacked, *_kernel_args(cfg))  # the rows in the order of _TABLE_FIELDS
    return Digits(det, chan, *res)


#: the conditions the kernel reads, in the order of its arguments (:func:`_fit_digits`)
_TABLE_FIELDS = ("pedestal_even", "pedestal_odd", "noise_adc", "gain", "time_offset", "status")


def _condition_tables(setup: Setup, conditions) -> dict[str, np.ndarray]:
    cache = getattr(conditions, "_na64reco_tables", None)
    if cache is not None and cache[0] is setup:
        return cache[1]
    tables = {f: conditions.calo_table(setup, f) for f in _TABLE_FIELDS}
    try:
        object.__setattr__(conditions, "_na64reco_tables", (setup, tables))
    except (AttributeError, TypeError):
        pass
    return tables


def _stacked_tables(conditions, tables: dict[str, np.ndarray]) -> np.ndarray:
    """The (256, width) tables of :data:`_TABLE_FIELDS` as one (fields, 256 * width) array
    (kept with the tables on ``conditions`` when it accepts it)."""
    cache = getattr(conditions, "_na64reco_stacked", None)
    if cache is not None and cache[0] is tables:
        return cache[1]
    stacked = np.ascontiguousarray(np.stack([tables[f].ravel() for f in _TABLE_FIELDS]), np.float64)
    try:
        object.__setattr__(conditions, "_na64reco_stacked", (tables, stacked))
    except (AttributeError, TypeError):
        pass
    return stacked


@numba.njit(cache=True, nogil=True)
def _condition_index(det, chan, gain, width):
    """Per digit, its entry ``det * width + chan`` in the flattened (256, width) conditions tables,
    in one pass, and the first digit whose detector id or channel is out of the tables or whose
    ``gain`` (flattened table) is not finite (-1 if none).  Such a digit gets entry 0 (the caller
    raises)."""
    n = det.shape[0]
    out = np.empty(n, np.int64)
    first_bad = -1
    for i in range(n):
        d = det[i]
        c = chan[i]
        known = d >= 0 and d < 256 and c >= 0 and c < width
        j = d * width + c if known else 0
        out[i] = j
        if first_bad < 0 and (not known or not np.isfinite(gain[j])):
            first_bad = i
    return out, first_bad


# ----------------------------------------------------------------------------------------
@numba.njit(cache=True, nogil=True)
def _master_time_kernel(offsets, time, use, nominal, longest):
    n = len(offsets) - 1
    out = np.empty(n)
    buf = np.empty(longest)
    for e in range(n):
        m = 0
        for j in range(offsets[e], offsets[e + 1]):
            if use[j]:
                buf[m] = time[j]
                m += 1
        if m == 0:
            out[e] = nominal
        else:
            v = np.sort(buf[:m])
            out[e] = v[m // 2] if m % 2 == 1 else 0.5 * (v[m // 2 - 1] + v[m // 2])
    return out


def master_time(offsets, time, use, nominal: float) -> np.ndarray:
    """Per event: median time of the digits selected by ``use``; ``nominal`` if none (ns)."""
    offsets = np.asarray(offsets, dtype=np.int64)
    longest = int(np.diff(offsets).max()) if len(offsets) > 1 else 0
    return _master_time_kernel(
        offsets, np.asarray(time, dtype=float), np.asarray(use, dtype=np.bool_), float(nominal), max(longest, 1)
    )


def master_time_reference(offsets, time, use, nominal: float) -> np.ndarray:
    """Slow twin of :func:`master_time`."""
    out = []
    for e in range(len(offsets) - 1):
        sl = slice(offsets[e], offsets[e + 1])
        t = np.asarray(time)[sl][np.asarray(use)[sl]]
        out.append(float(np.median(t)) if t.size else nominal)
    return np.asarray(out)
