"""Channel time offsets of the MSADC read-out from beam runs (``calibrate --kind timing``).

The MSADC window is started by the trigger, so an in-time particle's pulse reaches its
half maximum at ``msadc.signal_time + half_rise`` (the waveform configuration's
``nominal_time``) plus the channel's own delay (cable, PMT transit, electronics): its time
offset.  The reconstruction subtracts the conditions' offset from every fitted time and
counts a digit only within ``msadc.timing_window`` of the event's master time (the median
time of the counters and ECAL); a channel whose offset is wrong by more than the window
loses its energy (an HCAL module whose cable is 40 ns longer than the tag says makes a muon
look like missing energy), and one wrong by a few ns shifts the master time.

For every channel, the digits of the beam runs that carry a clean pulse (not masked, not
saturated, not pile-up, a finite fitted time, an amplitude of at least
:data:`MIN_SIGNIFICANCE` times the channel's noise) give residuals ``time - nominal_time``,
with the base conditions' offset removed.  The trigger is the reference: no master time
enters, so channels with wrong offsets cannot pull each other.  The channel's offset
correction is the median of its residuals (robust against pile-up particles at other times,
whose pulses are single and clean too), its statistical error from the order statistics
around it (:func:`median_shift`).  The new offset is the base's plus the correction.
Channels with fewer than ``min_entries`` residuals keep the base offset and are reported.

Smaller pulses are left out because their fitted times are biased late (a simulated muon run,
ECAL preshower MIPs of ~12 ADC at 2.5 ADC noise: +1.1 ns median at 8-12 ADC, +0.25 ns at 12-16,
<= 0.1 ns from 25 ADC on, 0.00 +- 0.01 ns above 40).  The mechanism is not established (the
simulator suppresses on the true amplitude, so it is not the zero suppression; the fitted
amplitude and time are correlated, and a cut on the one selects the other); cells off the beam
with 50-500 pulses, most of them small, still read 0.1-0.9 ns late.  Two more known biases, both
far below the 25 ns window: a channel whose true offset is ~50-60 ns early puts its pulse's
leading edge in the pedestal samples, and it reads up to ~1 ns late (pulls +1.3 on average at
-50 ns; at -100 ns, with the conditions' pedestals on every pulse, it closes).

Digits from the whole window are used, in time or not: the offset being measured is what
decides whether they are in time.
"""

from __future__ import annotations

import numpy as np

from na64reco.geometry import Setup
from na64reco.io.raw import release_data_events
from na64reco.reco.calo import digits_of_events
from na64reco.reco.waveform import FLAG_BELOW_THRESHOLD, FLAG_MASKED, FLAG_PILEUP, FLAG_SATURATED, waveform_config

#: default fewest residuals per channel (``--min-entries``): the median of 50 residuals of a
#: ~2 ns spread is known to ~0.35 ns, far below the 25 ns timing window
DEFAULT_MIN_ENTRIES = 50
#: Gaussian sigma per median absolute deviation
_SIGMA_PER_MAD = 1.4826
_CLEAN_FLAGS = FLAG_BELOW_THRESHOLD | FLAG_MASKED | FLAG_PILEUP | FLAG_SATURATED
#: fewest noise sigmas (the base conditions' ``noise_adc``) of a pulse whose time is used (see above)
MIN_SIGNIFICANCE = 10.0


class TimeCollector:
    """Time residuals per channel of the clean digits of many events (several files)."""

    def __init__(self, setup: Setup, conditions):
        self.setup, self.conditions = setup, conditions
        self.width = max(d.n_channels for d in setup.calorimeters.values())
        self.nominal_time = waveform_config(setup).nominal_time
        self._noise = np.full((256, self.width), np.inf)  # ADC per [detector id, channel]
        for name, det in setup.calorimeters.items():
            self._noise[det.id, :det.n_channels] = conditions.calo[name].noise_adc
        self._parts: list[tuple[np.ndarray, np.ndarray]] = []
        self.n_events = 0

    def add(self, events, source: str = "") -> None:
        # calibration runs are data on a real detector: the mark is lifted for constants, never per-event output
        digits, _, _ = digits_of_events(release_data_events(events), self.setup, self.conditions, source)
        self.n_events += len(events)
        det, chan = digits.det.astype(np.int64), digits.chan.astype(np.int64)
        ok = ((digits.flags & _CLEAN_FLAGS) == 0) & np.isfinite(digits.time) & \
            (digits.amplitude >= MIN_SIGNIFICANCE * self._noise[det, chan])
        key = det[ok] * self.width + chan[ok]
        self._parts.append((key, digits.time[ok] - self.nominal_time))

    def residuals(self) -> dict[int, np.ndarray]:
        """{det_id * width + chan: time residuals (ns)}"""
        if not self._parts:
            return {}
        key = np.concatenate([p[0] for p in self._parts])
        res = np.concatenate([p[1] for p in self._parts])
        order = np.argsort(key, kind="stable")
        key, res = key[order], res[order]
        keys, starts = np.unique(key, return_index=True)
        return dict(zip(keys.tolist(), np.split(res, starts[1:]), strict=True))


def median_shift(residuals: np.ndarray) -> tuple[float, float, float]:
    """(median, its statistical error, the robust spread 1.4826 MAD) of ``residuals`` (ns).

    The error is half the distance between the order statistics at ranks ``(n - 1)/2 -+ sqrt(n)/2``
    (the median's rank has a binomial spread of ``sqrt(n)/2``), interpolated between ranks.  It is
    distribution-free: residuals of pulses of many sizes are a mixture of resolutions, peaked like a
    Laplace distribution, for which the MAD-based ``1.2533 sigma / sqrt(n)`` is 1.29x the toys'
    scatter (this: 1.05x; Gaussian residuals: both right).  Whole ranks (floor and ceil) made it 1.29x
    at the default 50 entries (stop 49 review)."""
    r = np.sort(np.asarray(residuals, dtype=float))
    n = r.size
    med = float(np.median(r))
    spread = _SIGMA_PER_MAD * float(np.median(np.abs(r - med)))
    mid, half, ranks = (n - 1) / 2, 0.5 * np.sqrt(n), np.arange(n)
    return med, 0.5 * float(np.interp(mid + half, ranks, r) - np.interp(mid - half, ranks, r)), spread


def time_offsets(collector: TimeCollector, min_entries: int = DEFAULT_MIN_ENTRIES) -> dict[str, dict[str, np.ndarray]]:
    """Per detector: ``time_offset`` (ns; NaN where not derived), ``error``, ``shift`` (the new minus the
    base offset), ``spread`` (the residuals' robust sigma), ``entries`` and ``reason`` (why a channel was
    not calibrated, "" if it was)."""
    res = collector.residuals()
    out = {}
    for name, det in collector.setup.calorimeters.items():
        base = np.asarray(collector.conditions.calo[name].time_offset, dtype=float)
        n = det.n_channels
        d = {"time_offset": np.full(n, np.nan), "error": np.full(n, np.nan), "shift": np.full(n, np.nan),
             "spread": np.full(n, np.nan), "entries": np.zeros(n, np.int64),
             "reason": np.full(n, "", dtype=object)}
        for ch in range(n):
            r = res.get(det.id * collector.width + ch)
            d["entries"][ch] = 0 if r is None else r.size
            if d["entries"][ch] < max(min_entries, 1):
                d["reason"][ch] = f"{d['entries'][ch]} clean pulses < {min_entries}"
                continue
            shift, err, spread = median_shift(r)
            d["shift"][ch], d["error"][ch], d["spread"][ch] = shift, err, spread
            d["time_offset"][ch] = base[ch] + shift
        out[name] = d
    return out
