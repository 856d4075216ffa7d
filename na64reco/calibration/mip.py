"""Channel gains from the MIP peak of muons (beam-muon calibration runs).

For every channel, the amplitudes (ADC counts above pedestal, from the waveform
reconstruction with the base conditions: pedestals, time offsets, status) of its
in-time, unsaturated, pile-up-free digits form a Landau-like spectrum.  Its most
probable value is found by

1. a first mode: the fullest bin of a histogram between the 2nd and 90th percentiles,
2. a binned Poisson likelihood fit of a
   Moyal density ``N/w * moyal((a - mpv) / w)`` (scipy) to the histogram in
   ``[mode - 2 w0, mode + 4 w0]``, ``w0 = mode * mip_width / mip_mpv``, iterated once
   around the fitted MPV.  It is made as least squares whose errors are the square roots
   of the previous fit's expected counts, four times (at the fixed point these are the
   likelihood's equations).  Errors from the counts themselves (before stop 49) pulled the
   MPV of a few hundred entries low (-0.6 sigma at 200 Moyal values, -0.35 at 500) with an
   error 1.2-1.3x too small: the off-centre ECAL cells of the closure read up to 5 sigma low.

The gain is ``expected MPV energy / fitted MPV`` (MeV per ADC count), where the expected
MPV energy is the setup's ``mip_mpv`` of the detector, times, for ECAL sections, the
section's share of the radiation lengths (``sections[].radiation_lengths``: the muon's
ionisation is shared in proportion to the material).  Every PMT of a VETO paddle sees the
paddle's full deposit.  HCAL: each cell of each module has the module's ``mip_mpv``.

Channels with fewer than ``min_entries`` digits keep the base gain and are reported.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.optimize import curve_fit
from scipy.stats import moyal

from na64reco.config import Node
from na64reco.errors import ConfigError
from na64reco.geometry import Calorimeter, Setup
from na64reco.io.raw import release_data_events
from na64reco.reco.calo import digits_of_events
from na64reco.reco.waveform import FLAG_PILEUP, FLAG_SATURATED


def expected_mip(det: Calorimeter) -> np.ndarray:
    """Expected most probable MIP energy (MeV) of each channel of ``det``."""
    if det.kind != "calorimeter" or det.n_sections == 1:
        return np.full(det.n_channels, det.mip_mpv)
    node = Node(det.params, f"setup calorimeter {det.name}")
    x0 = np.array([s.number("radiation_lengths", minimum=0.0) for s in node.nodes("sections")])
    if x0.sum() <= 0:
        raise ConfigError(f"setup calorimeter {det.name}: sections need positive radiation_lengths")
    section, _, _ = det.cell_of_channel(np.arange(det.n_channels))
    return det.mip_mpv * x0[section] / x0.sum()


class AmplitudeCollector:
    """Amplitudes per channel of the MIP-like digits of many events (several files)."""

    def __init__(self, setup: Setup, conditions):
        self.setup, self.conditions = setup, conditions
        self.width = max(d.n_channels for d in setup.calorimeters.values())
        self._parts: list[tuple[np.ndarray, np.ndarray]] = []
        self.n_events = 0

    def add(self, events, source: str = "") -> None:
        # calibration runs are data on a real detector: the mark is lifted for constants, never per-event output
        digits, ev, _ = digits_of_events(release_data_events(events), self.setup, self.conditions, source)
        ok = digits.good & ((digits.flags & (FLAG_PILEUP | FLAG_SATURATED)) == 0)
        det, chan, amp, ev = digits.det[ok], digits.chan[ok], digits.amplitude[ok], ev[ok]
        self.n_events += len(events)
        if not det.size:  # no MIP-like digit in these events (a short run)
            return
        # the muon's cell: keep only the largest digit of each (event, detector, section);
        # neighbours with shower leakage are not MIPs (paddles, counters: every channel)
        group = self._group[det, chan]
        key = (ev * 256 + det) * self.width + group
        order = np.lexsort((amp, key))
        last = np.r_[key[order][1:] != key[order][:-1], True]
        sel = order[last]
        self._parts.append((det[sel] * self.width + chan[sel], amp[sel]))

    @property
    def _group(self) -> np.ndarray:
        table = getattr(self, "_group_table", None)
        if table is None:
            table = np.zeros((256, self.width), np.int64)
            for det in self.setup.calorimeters.values():
                ch = np.arange(det.n_channels)
                if det.kind in ("calorimeter", "modules"):
                    table[det.id, ch] = det.cell_of_channel(ch)[0]
                else:
                    table[det.id, ch] = ch
            self._group_table = table
        return table

    def amplitudes(self) -> dict[int, np.ndarray]:
        """{det_id * width + chan: amplitudes}"""
        if not self._parts:
            return {}
        idx = np.concatenate([p[0] for p in self._parts])
        amp = np.concatenate([p[1] for p in self._parts])
        order = np.argsort(idx, kind="stable")
        idx, amp = idx[order], amp[order]
        keys, starts = np.unique(idx, return_index=True)
        return dict(zip(keys.tolist(), np.split(amp, starts[1:]), strict=True))


def _moyal_model(x, n, mpv, w):
    return n * moyal.pdf((x - mpv) / w) / w


@dataclass(frozen=True)
class PeakFit:
    mpv: float  # ADC
    error: float  # ADC (statistical, from the fit)
    width: float
    entries: int


#: fewest amplitudes :func:`fit_mip_peak` fits a peak to (NaN below)
MIN_FIT_ENTRIES = 20
#: least-squares fits per window, each weighted by the previous fit's expected counts
_REWEIGHTS = 4


def fit_mip_peak(amplitudes: np.ndarray, width_ratio: float) -> PeakFit:
    """Most probable value of a Landau-like spectrum (see the module docstring)."""
    a = np.asarray(amplitudes, dtype=float)
    a = a[np.isfinite(a)]
    if a.size < MIN_FIT_ENTRIES:
        return PeakFit(math.nan, math.nan, math.nan, int(a.size))
    lo, hi = np.percentile(a, [2, 90])
    counts, edges = np.histogram(a, bins=40, range=(lo, hi))
    smooth = np.convolve(counts, [1, 2, 3, 2, 1], mode="same")
    mode = 0.5 * (edges[:-1] + edges[1:])[np.argmax(smooth)]
    mpv, w = mode, max(width_ratio * mode, 1e-3)
    err = math.nan
    for _ in range(2):
        w0 = max(width_ratio * mpv, 1e-3)
        lo, hi = mpv - 2 * w0, mpv + 4 * w0
        counts, edges = np.histogram(a, bins=30, range=(lo, hi))
        x = 0.5 * (edges[:-1] + edges[1:])
        if counts.sum() < 10:
            break
        p = (a.size * (edges[1] - edges[0]), mpv, w0)
        sigma = np.sqrt(np.maximum(counts, 1.0))
        try:
            # Poisson errors from the model, not the counts: least squares re-weighted until the weights
            # follow the fit is the binned Poisson likelihood's fit (the counts' own errors pull a peak of
            # a few hundred entries low, -0.6 sigma at 200, and make its error 1.3x too small)
            for _ in range(_REWEIGHTS):
                p, cov = curve_fit(_moyal_model, x, counts, p0=p, sigma=sigma, absolute_sigma=True, maxfev=4000)
                sigma = np.sqrt(np.maximum(_moyal_model(x, *p), 1e-3))
        except (RuntimeError, ValueError):
            break
        if not (lo < p[1] < hi) or p[2] <= 0:
            break
        mpv, w, err = float(p[1]), float(abs(p[2])), float(np.sqrt(cov[1, 1]))
    return PeakFit(mpv, err, w, int(a.size))


def mip_gains(collector: AmplitudeCollector, min_entries: int = 200,
              threshold_margin: float = 3.0) -> dict[str, dict[str, np.ndarray]]:
    """Per detector: ``gain`` (MeV/ADC; NaN where not derived), ``gain_error``, ``mpv_adc``,
    ``entries``, ``reason`` (why a channel was not calibrated, "" if it was) and ``near_threshold``
    (channels not calibrated whatever the number of muons, see below).

    A channel whose expected MIP peak (with its base gain) lies below ``threshold_margin``
    times the zero-suppression threshold is not calibrated: the threshold cuts into its
    spectrum (e.g. the ECAL preshower: ~10 ADC for a 40 MeV MIP share).
    """
    amps = collector.amplitudes()
    threshold = collector.setup.msadc.zero_suppression
    out = {}
    for name, det in collector.setup.calorimeters.items():
        expected = expected_mip(det)
        base_gain = collector.conditions.calo[name].gain
        reason = np.full(det.n_channels, "", dtype=object)
        ratio = det.mip_width / det.mip_mpv if det.mip_mpv > 0 else 0.1
        gain = np.full(det.n_channels, np.nan)
        gerr = np.full(det.n_channels, np.nan)
        mpv = np.full(det.n_channels, np.nan)
        entries = np.zeros(det.n_channels, np.int64)
        near = np.zeros(det.n_channels, bool)
        for ch in range(det.n_channels):
            a = amps.get(det.id * collector.width + ch)
            if a is None:
                continue
            entries[ch] = a.size
        for ch in range(det.n_channels):
            if expected[ch] / base_gain[ch] < threshold_margin * threshold:
                reason[ch] = (f"MIP peak ~{expected[ch] / base_gain[ch]:.0f} ADC too close to the "
                              f"{threshold:g} ADC zero suppression")
                near[ch] = True
                continue
            if entries[ch] < max(min_entries, MIN_FIT_ENTRIES):
                reason[ch] = f"{entries[ch]} MIP entries < {max(min_entries, MIN_FIT_ENTRIES)}"
                continue
            fit = fit_mip_peak(amps[det.id * collector.width + ch], ratio)
            if np.isfinite(fit.mpv) and fit.mpv > 0:
                mpv[ch] = fit.mpv
                gain[ch] = expected[ch] / fit.mpv
                gerr[ch] = gain[ch] * fit.error / fit.mpv
            else:
                reason[ch] = "MIP peak fit failed"
        out[name] = {"gain": gain, "gain_error": gerr, "mpv_adc": mpv, "entries": entries, "reason": reason,
                     "near_threshold": near}
    return out
