"""Pedestals and noise from random-trigger (pedestal) runs.

In a random-trigger event every MSADC channel is written and carries no signal.  For
each channel, over all its digits: ``pedestal_even`` / ``pedestal_odd`` = mean of the
even / odd samples; ``noise_adc`` = the r.m.s. of the samples about their parity mean,
with Sheppard's correction for the integer ADC (``sigma^2 = rms^2 - 1/12``), so that it
estimates the Gaussian noise before digitisation (the convention of the conditions).

Digits of events that are not random triggers are ignored (a physics event would bias
the pedestal with its pulses).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import awkward as ak
import numpy as np

from na64reco.geometry import Setup
from na64reco.io.raw import TRIGGER_BITS, release_data_events
from na64reco.reco.calo import flat_digits


@dataclass
class PedestalSums:
    """Running sums per [detector id, channel] (dense 256 x width tables)."""

    width: int
    n: np.ndarray = field(init=False)  # digits
    s: np.ndarray = field(init=False)  # (2, 256*width): sum of samples per parity
    ss: np.ndarray = field(init=False)  # sum of squares per parity
    m: np.ndarray = field(init=False)  # samples per parity

    def __post_init__(self):
        size = 256 * self.width
        self.n = np.zeros(size, np.int64)
        self.s = np.zeros((2, size))
        self.ss = np.zeros((2, size))
        self.m = np.zeros((2, size))

    def add(self, events, setup: Setup) -> int:
        """Accumulate the random-trigger events of ``events``; returns how many were used."""
        trig = ak.to_numpy(events["trigger"]).astype(np.int64)
        rand = (trig & TRIGGER_BITS["random"]) != 0
        counts, det, chan, adc = flat_digits(release_data_events(events))  # (a constant per channel, no event's)
        keep = np.repeat(rand, counts)
        det, chan, adc = det[keep].astype(np.int64), chan[keep].astype(np.int64), adc[keep].astype(np.float64)
        ok = (det >= 0) & (det < 256) & (chan >= 0) & (chan < self.width)
        idx = det[ok] * self.width + chan[ok]
        adc = adc[ok]
        size = 256 * self.width
        self.n += np.bincount(idx, minlength=size)
        for p in (0, 1):
            x = adc[:, p::2]
            self.s[p] += np.bincount(idx, weights=x.sum(axis=1), minlength=size)
            self.ss[p] += np.bincount(idx, weights=(x * x).sum(axis=1), minlength=size)
            self.m[p] += np.bincount(idx, weights=np.full(len(idx), x.shape[1], float), minlength=size)
        return int(rand.sum())


def pedestal_constants(sums: PedestalSums, setup: Setup) -> dict[str, dict[str, np.ndarray]]:
    """Per detector: ``pedestal_even``, ``pedestal_odd``, ``noise_adc`` (NaN where no
    digit) and ``entries`` (digits used)."""
    out = {}
    for name, det in setup.calorimeters.items():
        idx = det.id * sums.width + np.arange(det.n_channels)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = sums.s[:, idx] / sums.m[:, idx]
            var = sums.ss[:, idx] / sums.m[:, idx] - mean**2
        noise = np.sqrt(np.clip(var.mean(axis=0) - 1.0 / 12.0, 0.0, None))
        out[name] = {"pedestal_even": mean[0], "pedestal_odd": mean[1], "noise_adc": noise,
                     "entries": sums.n[idx]}
    return out
