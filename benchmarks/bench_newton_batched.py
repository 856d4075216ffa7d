"""The waveform fit's Newton steps batched across digits (SIMD) against the kernel's per-digit Newton.

    python benchmarks/bench_newton_batched.py --file RAW.root [--repeat 7] [--batch 128]

Stop 38 bounded any reconstruction from below (``bench_floor.py``) and proposed, for the rest, a
data layout for SIMD across digits instead of one digit at a time.  This tests that proposal on the
part of ``reconstruct`` where it is most natural: the Newton iteration of the MSADC template fit
(:func:`na64reco.reco.waveform._newton_t0`, ~10 % of ``reconstruct``'s samples under ``perf``), a
short fixed-shape loop that every fitted digit runs.

The inputs are those the kernel gives ``_newton_t0``: for each digit of the file above the threshold
and not saturated, the fit window's ``y_k c_k`` and ``c_k^2`` (4 samples before the maximum, 4
after), its sample times and the half-maximum start ``t0``; they are made here with numpy from the
pedestals that :func:`~na64reco.reco.waveform.reconstruct_digits` returns (not by a copy of the
kernel's loop).  Two ways then solve the same fits, alternated round by round in one process:

* **per digit**: ``_newton_t0`` itself, called digit after digit (its moments of ``d_k = kP - tau``
  from one pass over the samples, the later steps from the moments, a new pass only when a step
  moves a sample across the pulse start);
* **batched**: blocks of ``--batch`` digits stored sample-major (structure of arrays): one pass over
  the window's samples gives every lane's moments (a loop over the lanes that the compiler
  vectorises), then each Newton step is one loop over the lanes with the same arithmetic and the
  same stopping rule as ``_newton_t0`` (``abs(step) < _NEWTON_TOL``; out of the search range, a
  curvature that is not a maximum or ``a2 <= 0`` fail), lanes done kept by selects; lanes whose
  step moved a sample across their start get their moments again.  A block iterates until its
  slowest lane is done.

Printed: the Newton steps each digit needs (a histogram), the largest differences between the two
(time, amplitude, and how many digits converge in one and not the other: 0 expected), and the CPU
time of each (minimum over the rounds) per digit.  A figure, not a test: the result decides whether
the fit is worth restructuring into two passes (the window of every digit stored, then the batched
fit), which costs a store and a load of 3 x 9 doubles per digit.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import numba
import numpy as np
from bench_waveform_ab import kernel_inputs

from na64reco.reco import waveform as W

WINDOW = W._FIT_BEFORE + 1 + W._FIT_AFTER


def newton_inputs(adc, ped_even, ped_odd, flags, period, decay, half_rise):
    """(yc, cc, kp, t0, half_range) of the fitted, unsaturated digits, each (digits, WINDOW) or
    (digits,): the window of ``_fit_digits`` (samples clipped at the ends carry yc = cc = 0)."""
    fitted = (flags & (W.FLAG_BELOW_THRESHOLD | W.FLAG_SATURATED)) == 0
    adc = adc[fitted].astype(np.float64)
    ns = adc.shape[1]
    k = np.arange(ns)
    y = adc - np.where(k % 2 == 1, ped_odd[fitted, None], ped_even[fitted, None])
    imax = np.argmax(y, axis=1)
    amax = y[np.arange(len(y)), imax]
    below = (y < 0.5 * amax[:, None]) & (k[None, :] < imax[:, None])
    kb = np.where(below.any(axis=1), ns - 1 - np.argmax(below[:, ::-1], axis=1), -1)  # last sample below half
    rows = np.arange(len(y))
    y0, y1 = y[rows, np.maximum(kb, 0)], y[rows, np.maximum(kb, 0) + 1]
    t_half = np.where(kb >= 0, period * (kb + (0.5 * amax - y0) / (y1 - y0)), 0.0)
    k_lo = np.maximum(imax - W._FIT_BEFORE, 0)
    kw = k_lo[:, None] + np.arange(WINDOW)[None, :]
    inside = kw <= np.minimum(imax + W._FIT_AFTER, ns - 1)[:, None]
    kc = np.minimum(kw, ns - 1)
    cexp = np.exp(-(kc * period - 2.0 * decay) / decay)
    yc = np.where(inside, y[rows[:, None], kc] * cexp, 0.0)
    cc = np.where(inside, cexp * cexp, 0.0)
    return yc, cc, kw * period, t_half - half_rise, np.full(len(y), W._HALF_RANGE * period)


@numba.njit(cache=True)
def per_digit(yc, cc, kp, t0, half_range, decay):
    """``_newton_t0`` digit after digit: (t0, ok, amplitude, Q) per digit."""
    n = yc.shape[0]
    t = np.empty(n)
    ok = np.zeros(n, np.bool_)
    amp = np.zeros(n)
    q = np.zeros(n)
    last = np.uint64(yc.shape[1] - 1)
    for i in range(n):
        t[i], ok[i], amp[i], q[i] = W._newton_t0(yc[i], cc[i], kp[i], np.uint64(0), last, t0[i],
                                                 t0[i] - half_range[i], t0[i] + half_range[i], decay)
    return t, ok, amp, q


@numba.njit(cache=True, inline="always")
def _moments(yc, cc, kp, tau):
    """One digit's moments over the window's samples with ``d = kp - tau > 0``: ``sum yc d^j`` (j <= 2)
    and ``sum cc d^j`` (j <= 4), as ``_newton_t0`` makes them in its pass over the samples."""
    w0 = w1 = w2 = v0 = v1 = v2 = v3 = v4 = 0.0
    for j in range(yc.shape[0]):
        e = kp[j] - tau
        if e > 0.0:
            w = yc[j]
            v = cc[j]
            e2 = e * e
            w0 += w
            w1 += w * e
            w2 += w * e2
            v0 += v
            v1 += v * e
            v2 += v * e2
            v3 += v * e2 * e
            v4 += v * e2 * e2
    return w0, w1, w2, v0, v1, v2, v3, v4


@numba.njit(cache=True)
def steps_needed(yc, cc, kp, t0, half_range, decay, tol, n_newton):
    """Histogram of the Newton steps to convergence (index 1..n_newton; 0: none converged, the last
    entry + 1: failed), by direct sums (the counting only)."""
    hist = np.zeros(n_newton + 2, np.int64)
    for i in range(yc.shape[0]):
        t = t0[i]
        lo = t - half_range[i]
        hi = t + half_range[i]
        done = False
        for it in range(n_newton):
            a0, a1, a2, _, _, b2, b3, b4 = _moments(yc[i], cc[i], kp[i], t)
            h = -4.0 * a1 * b4 + 4.0 * a2 * b3
            hp = 4.0 * a0 * b4 + 8.0 * a1 * b3 - 12.0 * a2 * b2
            if a2 <= 0.0 or b4 <= 0.0 or hp >= 0.0:
                hist[n_newton + 1] += 1
                done = True
                break
            step = -h / hp
            t += step
            if abs(step) < tol:
                hist[it + 1] += 1
                done = True
                break
            if t < lo or t > hi:
                hist[n_newton + 1] += 1
                done = True
                break
        if not done:
            hist[0] += 1
    return hist


@numba.njit(cache=True, inline="always")
def _lane_moments(yj, cj, kj, tau, w0, w1, w2, v0, v1, v2, v3, v4, nb):
    """Add sample j of every lane (``yj``, ``cj``, ``kj``: that sample's row) to the lanes' moments."""
    for b in range(nb):
        e = kj[b] - tau[b]
        pos = e > 0.0
        w = yj[b] if pos else 0.0
        v = cj[b] if pos else 0.0
        e2 = e * e
        ve2 = v * e2
        w0[b] += w
        w1[b] += w * e
        w2[b] += w * e2
        v0[b] += v
        v1[b] += v * e
        v2[b] += ve2
        v3[b] += ve2 * e
        v4[b] += ve2 * e2


@numba.njit(cache=True, error_model="numpy")
def batched(ycT, ccT, kpT, t0_in, half_range, decay, tol, n_newton, block):
    """The Newton fits of ``per_digit`` in blocks of ``block`` lanes, sample-major inputs (WINDOW, n)."""
    n = t0_in.shape[0]
    width = ycT.shape[0]
    t_out = np.empty(n)
    ok_out = np.zeros(n, np.bool_)
    amp_out = np.zeros(n)
    q_out = np.zeros(n)
    w0, w1, w2 = np.empty(block), np.empty(block), np.empty(block)
    v0, v1, v2, v3, v4 = np.empty(block), np.empty(block), np.empty(block), np.empty(block), np.empty(block)
    tau, t0, state = np.empty(block), np.empty(block), np.empty(block)  # state 0 running, 1 converged, 2 failed
    lo, hi = np.empty(block), np.empty(block)
    before, after = np.empty(block), np.empty(block)  # samples at or before the start: moments' and now
    scale, expo, qual = np.empty(block), np.empty(block), np.empty(block)  # amplitude = scale exp(expo)
    tp = 2.0 * decay
    inv_decay = 1.0 / decay
    for s0 in range(0, n, block):
        nb = min(block, n - s0)
        for b in range(nb):
            tau[b] = t0[b] = t0_in[s0 + b]
            lo[b] = t0[b] - half_range[s0 + b]
            hi[b] = t0[b] + half_range[s0 + b]
            state[b] = 0.0
            w0[b] = w1[b] = w2[b] = v0[b] = v1[b] = v2[b] = v3[b] = v4[b] = 0.0
        for j in range(width):
            _lane_moments(ycT[j, s0:s0 + nb], ccT[j, s0:s0 + nb], kpT[j, s0:s0 + nb], tau, w0, w1, w2, v0, v1, v2,
                          v3, v4, nb)
        for b in range(nb):
            before[b] = 0.0
        for j in range(width):
            kj = kpT[j, s0:s0 + nb]
            for b in range(nb):
                before[b] += 1.0 if kj[b] - tau[b] <= 0.0 else 0.0
        for _ in range(n_newton):
            for b in range(nb):  # one step of every running lane, as _newton_t0's step from the moments
                s = t0[b] - tau[b]
                s2 = s * s
                s3 = s2 * s
                a0 = w0[b]
                a1 = w1[b] - s * w0[b]
                a2 = w2[b] - 2.0 * s * w1[b] + s2 * w0[b]
                b2 = v2[b] - 2.0 * s * v1[b] + s2 * v0[b]
                b3 = v3[b] - 3.0 * s * v2[b] + 3.0 * s2 * v1[b] - s3 * v0[b]
                b4 = v4[b] - 4.0 * s * v3[b] + 6.0 * s2 * v2[b] - 4.0 * s3 * v1[b] + s2 * s2 * v0[b]
                h = -4.0 * a1 * b4 + 4.0 * a2 * b3
                hp = 4.0 * a0 * b4 + 8.0 * a1 * b3 - 12.0 * a2 * b2
                step = -h / hp
                bad = (a2 <= 0.0) | (b4 <= 0.0) | (hp >= 0.0)
                conv = abs(step) < tol
                running = state[b] == 0.0
                nt = t0[b] + step
                new = 2.0 if bad else (1.0 if conv else (2.0 if (nt < lo[b]) | (nt > hi[b]) else 0.0))
                r1 = a1 / a2
                r3 = b3 / b4
                ln1 = -2.0 * r1 + 4.0 * r3 - inv_decay
                ln2 = 2.0 * a0 / a2 - (2.0 * r1) ** 2 - 12.0 * b2 / b4 + (4.0 * r3) ** 2
                take = running & conv
                scale[b] = a2 * tp * tp / b4 if take else scale[b]
                expo[b] = (-t0[b] * inv_decay + step * ln1 + 0.5 * step * step * ln2) if take else expo[b]
                qual[b] = (a2 * a2 / b4 - 0.5 * a2 * h * h / (b4 * b4 * hp)) if take else qual[b]
                state[b] = new if running else state[b]
                t0[b] = nt if running & ~bad else t0[b]
            left = 0.0
            for b in range(nb):
                left += 1.0 if state[b] == 0.0 else 0.0
            if left == 0.0:
                break
            for b in range(nb):
                after[b] = 0.0
            for j in range(width):
                kj = kpT[j, s0:s0 + nb]
                for b in range(nb):
                    after[b] += 1.0 if kj[b] - t0[b] <= 0.0 else 0.0
            for b in range(nb):  # a step moved a sample across the start: that lane's moments again
                if state[b] == 0.0 and after[b] != before[b]:
                    tau[b] = t0[b]
                    w0[b], w1[b], w2[b], v0[b], v1[b], v2[b], v3[b], v4[b] = _moments(
                        ycT[:, s0 + b], ccT[:, s0 + b], kpT[:, s0 + b], tau[b])
                    before[b] = after[b]
        for b in range(nb):
            ok = (state[b] == 1.0) & (t0[b] >= lo[b]) & (t0[b] <= hi[b])
            t_out[s0 + b] = t0[b]
            ok_out[s0 + b] = ok
            amp_out[s0 + b] = scale[b] * math.exp(expo[b]) if ok else 0.0
            q_out[s0 + b] = qual[b] if ok else 0.0
    return t_out, ok_out, amp_out, q_out


def _cpu(f, *args) -> float:
    c = time.process_time()
    f(*args)
    return time.process_time() - c


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--file", required=True)
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--batch", type=int, default=128, help="lanes per block of the batched fit")
    args = ap.parse_args()
    _, adc, cond, stacked, kargs = kernel_inputs(args.file, None)
    _, period, decay, half_rise = kargs[0], kargs[2], kargs[3], kargs[4]
    res = W._fit_digits(adc, cond, *stacked, *kargs)
    yc, cc, kp, t0, hr = newton_inputs(adc, res[3], res[4], res[6], period, decay, half_rise)
    ycT, ccT, kpT = (np.ascontiguousarray(a.T) for a in (yc, cc, kp))
    n = len(t0)
    one = (yc, cc, kp, t0, hr, decay)
    many = (ycT, ccT, kpT, t0, hr, decay, W._NEWTON_TOL, W._N_NEWTON, args.batch)
    hist = steps_needed(yc, cc, kp, t0, hr, decay, W._NEWTON_TOL, W._N_NEWTON)
    conv = hist[1:-1]
    print(f"{args.file}: {adc.shape[0]} MSADC digits, {n} fitted without saturation")
    print(f"Newton steps to convergence 1..{W._N_NEWTON}: {conv.tolist()} (mean "
          f"{(np.arange(1, len(conv) + 1) * conv).sum() / max(conv.sum(), 1):.2f}); failed {hist[-1]}, "
          f"not converged {hist[0]} (both: golden-section fallback)")
    a, b = per_digit(*one), batched(*many)
    both = a[1] & b[1]
    with np.errstate(invalid="ignore", divide="ignore"):
        d_amp = np.abs(a[2] - b[2])[both] / np.abs(a[2][both])
    print(f"agreement: convergence differs for {int(np.sum(a[1] != b[1]))} digits; largest |dt| "
          f"{np.abs(a[0] - b[0])[both].max():.2e} ns, relative amplitude {d_amp.max():.2e}")
    t_one, t_many, ratios = [], [], []
    for _ in range(args.repeat):
        x, y = _cpu(per_digit, *one), _cpu(batched, *many)
        t_one.append(x)
        t_many.append(y)
        ratios.append(x / y)
    print(f"per digit : {min(t_one) * 1e3:7.1f} ms CPU, {min(t_one) / n * 1e9:6.1f} ns a digit (minimum of "
          f"{args.repeat})")
    print(f"batched   : {min(t_many) * 1e3:7.1f} ms CPU, {min(t_many) / n * 1e9:6.1f} ns a digit "
          f"(blocks of {args.batch})")
    print(f"speed-up of the batched fit: {min(t_one) / min(t_many):.2f}x at the minima, paired median "
          f"{statistics.median(ratios):.2f}x (rounds {min(ratios):.2f}-{max(ratios):.2f}x)")


if __name__ == "__main__":
    main()
