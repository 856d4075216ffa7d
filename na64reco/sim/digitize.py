"""From true deposits and crossings to raw digits (MSADC waveforms, APV samples, straw TDCs).

MSADC (calorimeters, counters)
    For each channel hit in an event: the deposits of each in-time component (the
    triggering particle, a pile-up particle at its own time) give a pulse of peak
    E / gain (:func:`na64reco.pulse.msadc_shape`) starting at
    ``signal_time + time_offset[channel] + jitter + t_component``; samples every
    ``sample_period``; pedestal per sample parity (even/odd) and Gaussian noise per
    sample from the conditions (the N(0, 1) numbers read from the pre-drawn pool of
    :mod:`na64reco.sim.noise`, a window at a random offset per channel); rounded,
    clipped to [0, max_adc] (saturation), int16.
    Dead channels (status 1) get no signal.  Zero suppression: a calorimeter channel is
    written only if its true peak amplitude (sum of its components' E/gain) exceeds
    ``msadc.zero_suppression`` ADC counts; counter and veto channels are written
    whenever hit; a random (pedestal) trigger writes every channel, and so does an
    injected noisy channel (``CaloTables.forced``, :mod:`na64reco.sim.faults`).
APV25 (MM, GEM)
    True crossing -> plane frame ``u = global - center - alignment``, smeared by the
    plane resolution (avalanche position); dropped with probability 1 - efficiency.
    Noise clusters: Poisson(noise_hits) per plane and event at uniform positions and at
    times uniform in the readout window ``apv_noise_window`` (setup, relative to the trigger:
    out-of-time clusters have late or decayed samples and a reconstructed time off the
    track's; the window ends where a cluster no longer has a sample above threshold).
    (Efficiency and noise from the conditions where they set them, else the setup.)
    Hot strips (conditions): a noise cluster centred on the strip in a fraction
    :data:`HOT_STRIP_OCCUPANCY` of the events.
    Cluster charge Q ~ Moyal(cluster_charge_mpv, cluster_charge_width); strip k gets
    Q x [Phi((k + 1/2 - c)/s) - Phi((k - 1/2 - c)/s)] (Gaussian spread s =
    ``cluster_spread`` strips around the strip coordinate c); dead strips get nothing.
    Samples a_j = charge x apv_gain x apv_shape(first_sample_time + j spacing - phase - t)
    + N(0, apv_noise), with a clock phase uniform in [0, spacing) per event (the noise of
    the channels of one plane and event: consecutive numbers of the pool of
    :mod:`na64reco.sim.noise` from a random offset).  MM strips
    are summed per APV channel through the multiplexing map (``mm_channel_of_strip``),
    GEM strips are channels.  A channel is written if max(a0, a1, a2) exceeds
    ``threshold_sigma x apv_noise``.  Channels without signal are not simulated (their
    noise-only over-threshold rate is left out: assumed removed by the on-line
    common-mode and threshold logic).
Straws
    tube = floor(u / pitch + n/2); TDC = (drift distance / drift velocity + t) / lsb with
    the distance to the tube axis smeared by the resolution; noise hits uniform in tube
    and drift distance, at times uniform in ``straw_noise_window`` (the TDC window).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numba
import numpy as np
from numba.cpython.unsafe.numbers import trailing_zeros
from scipy.special import erf, ndtr

from na64reco.conditions import STATUS_DEAD, RunConditions
from na64reco.geometry import Setup
from na64reco.io.raw import ValueRanges
from na64reco.pulse import msadc_shape
from na64reco.sim import interactions as phys
from na64reco.sim.forced_noise import ForcedRegion
from na64reco.sim.forced_noise import apply as force_noise
from na64reco.sim.noise import POOL_SIZE, gaussian_pool, window_starts
from na64reco.sim.params import SimParams
from na64reco.sim.prefetch import prefetch
from na64reco.sim.randoms import standard_normal

_DET_SHIFT = 256  # channel numbers < 256
_EV_SHIFT = 256 * 256


# ---- MSADC -------------------------------------------------------------------------------
@dataclass(frozen=True)
class CaloTables:
    """Conditions as dense [det_id, channel] tables (the true constants of the simulation)."""

    ped_even: np.ndarray
    ped_odd: np.ndarray
    noise: np.ndarray
    gain: np.ndarray
    time_offset: np.ndarray
    dead: np.ndarray
    always_written: np.ndarray  # [det_id] bool: counters and veto paddles
    all_channels: tuple[np.ndarray, np.ndarray]  # (det_id, chan) of every channel
    #: [det_id, channel] bool: channels written in every event (an injected noisy channel,
    #: :mod:`na64reco.sim.faults`); None: none
    forced: np.ndarray | None = None

    @staticmethod
    def of(setup: Setup, cond: RunConditions) -> CaloTables:
        status = cond.calo_table(setup, "status")
        always = np.zeros(256, bool)
        dets, chans = [], []
        for det in setup.calorimeters.values():
            always[det.id] = det.kind in ("counter", "paddles")
            dets.append(np.full(det.n_channels, det.id, np.int16))
            chans.append(np.arange(det.n_channels, dtype=np.int16))
        order = np.lexsort((np.concatenate(chans), np.concatenate(dets)))
        return CaloTables(
            np.nan_to_num(cond.calo_table(setup, "pedestal_even")),
            np.nan_to_num(cond.calo_table(setup, "pedestal_odd")),
            np.nan_to_num(cond.calo_table(setup, "noise_adc")),
            np.nan_to_num(cond.calo_table(setup, "gain"), nan=1.0),
            np.nan_to_num(cond.calo_table(setup, "time_offset")),
            status == STATUS_DEAD,
            always,
            (np.concatenate(dets)[order], np.concatenate(chans)[order]),
        )


def _readonly(a: np.ndarray) -> np.ndarray:
    """A read-only view of ``a`` (no copy): numba compiles a kernel once for read-only and once
    for writable arrays of a type, and the noise pool (read-only) and fresh noise or the tests'
    arrays (writable) would otherwise compile the MSADC and APV kernels twice each (issue 11)."""
    if not a.flags.writeable:
        return a
    v = a.view()
    v.flags.writeable = False
    return v


def aggregate(ev, det, chan, energy, t):
    """Sum deposits of the same (event, detector, channel, time).

    Returns ``(key, t, energy)`` sorted by key then time; ``key = (ev*256 + det)*256 + chan``.
    """
    ev = np.asarray(ev, np.int64)
    key = (ev * _DET_SHIFT + det) * _DET_SHIFT + chan
    order = event_lexsort(ev, (key, t))  # = np.lexsort((t, key)): the event is key's leading part
    key, t, energy = key[order], np.asarray(t)[order], np.asarray(energy)[order]
    if key.size == 0:
        return key, t, energy
    start = np.flatnonzero(np.concatenate([[True], (key[1:] != key[:-1]) | (t[1:] != t[:-1])]))
    return key[start], t[start], np.add.reduceat(energy, start)


#: events of more entries than this make :func:`event_lexsort` use ``np.lexsort`` (the
#: insertion sort inside an event is quadratic; ~10-60 entries per event are typical, and the
#: calorimeter deposits of a calibration run's spill have a few events of 65-90: at 64 every
#: spill's deposits went to ``np.lexsort`` after the kernel, 1.4 ms of a spill; 512 entries sort
#: in ~0.1 ms, issue 11, eighth pass)
_INSERTION_MAX = 512


#: integer keys of :func:`event_lexsort` below this are exact as float64
_EXACT_INT = 2**53


def event_lexsort(ev, keys) -> np.ndarray:
    """``np.lexsort((*reversed(keys), ev))``, the same permutation (a stable sort by event,
    then by ``keys[0]``, ``keys[1]``, ...), for event indices ``ev >= 0``: a counting sort by
    event and an insertion sort of the few entries of each event (O(n) instead of the
    O(n log n) merge sorts of ``np.lexsort``, one per key; issue 11, fourth pass).  Falls
    back to ``np.lexsort`` with NaN keys, negative events or an event of more than
    :data:`_INSERTION_MAX` entries."""
    ev = np.asarray(ev, np.int64)
    cols = [np.asarray(k) for k in keys]
    if ev.size == 0 or ev.min() < 0 or len(cols) > 3:
        return np.lexsort((*reversed(cols), ev))
    floats = [c for c in cols if c.dtype.kind == "f"]
    if any(np.isnan(c).any() for c in floats):
        return np.lexsort((*reversed(cols), ev))
    if any(c.dtype.kind not in "fiub" or (c.dtype.kind in "iu" and max(-int(c.min()), int(c.max())) >= _EXACT_INT)
           for c in cols):
        return np.lexsort((*reversed(cols), ev))
    # every key as float64 (integers exact below 2^53, same order): one compiled
    # specialisation of the kernel instead of one per combination of key types (issue 11)
    k = [c.astype(np.float64, copy=False) for c in cols]  # float64 keys as they are (read only)
    while len(k) < 3:
        k.append(np.zeros(ev.size))
    order = _event_insertion_sort(ev, int(ev.max()) + 1, k[0], k[1], k[2], _INSERTION_MAX)
    if order is None or order.size != ev.size:  # pragma: no cover - numba returns an array
        return np.lexsort((*reversed(cols), ev))
    if order.size and order[0] < 0:  # an event too large for the insertion sort
        return np.lexsort((*reversed(cols), ev))
    return order


@numba.njit(cache=True, nogil=True)
def _event_insertion_sort(ev, n_events, k0, k1, k2, max_run):
    n = ev.size
    start = np.zeros(n_events + 1, np.int64)
    for i in range(n):
        start[ev[i] + 1] += 1
    for e in range(n_events):
        if start[e + 1] > max_run:
            out = np.empty(n, np.int64)
            out[:1] = -1  # too large: the caller falls back
            return out
        start[e + 1] += start[e]
    order = np.empty(n, np.int64)
    pos = start[:-1].copy()
    for i in range(n):
        order[pos[ev[i]]] = i
        pos[ev[i]] += 1
    for e in range(n_events):
        a = start[e]
        for x in range(a + 1, start[e + 1]):
            o = order[x]
            y = x - 1
            while y >= a:
                q = order[y]
                if k0[q] > k0[o] or (k0[q] == k0[o] and (k1[q] > k1[o] or (k1[q] == k1[o] and k2[q] > k2[o]))):
                    order[y + 1] = q
                    y -= 1
                else:
                    break
            order[y + 1] = o
    return order


def event_counts(ev, n_events: int) -> np.ndarray:
    """``np.bincount(ev, minlength=n_events)`` (int64) of event indices ``ev`` in ``[0, n_events)``,
    counted by runs of equal values: the digits come sorted by event, and ``np.bincount``'s
    increments of one counter per digit form a chain of dependent stores (~1.3 ms for the 570k
    APV digits of a spill, ~0.3 ms by runs; issue 11, eighth pass).  Falls back to ``np.bincount``
    for other integer types or values out of range."""
    ev = np.asarray(ev)
    if ev.dtype == np.int64 and ev.ndim == 1:
        counts, ok = _event_counts(ev, int(n_events))
        if ok:
            return counts
    return np.bincount(ev, minlength=n_events)


@numba.njit(cache=True, nogil=True)
def _event_counts(ev, n_events):
    counts = np.zeros(n_events, np.int64)
    n = ev.size
    i = 0
    while i < n:
        e = ev[i]
        if e < 0 or e >= n_events:
            return counts, False
        j = i + 1
        while j < n and ev[j] == e:
            j += 1
        counts[e] += j - i
        i = j
    return counts, True


def msadc_digits(
    rng: np.random.Generator,
    setup: Setup,
    tables: CaloTables,
    n_events: int,
    key,
    t,
    energy,
    *,
    every_channel: bool = False,
    pool: bool = True,
):
    """MSADC digits of ``n_events`` events from aggregated components (see :func:`aggregate`).

    ``pool=False`` draws fresh Gaussian noise for every sample instead of reading it from the
    pool of :mod:`na64reco.sim.noise` (the reference of the noise model; slower).
    Returns ``(ev, det_id, chan, adc)`` sorted by event, ``adc`` of shape (n, n_samples) int16.
    """
    a = setup.msadc
    width = tables.gain.shape[1]  # [det_id, channel] tables, read by flat index det_id * width + channel
    amp = _msadc_amplitudes(key, np.asarray(energy, float), tables.dead.reshape(-1), tables.gain.reshape(-1), width)
    if every_channel:  # random trigger: every channel of every event, no signal added
        key, t, amp = _in_every_event(key, t, amp, *tables.all_channels, n_events)
    if tables.forced is not None and not every_channel:  # injected noisy channels: in every event
        key, t, amp = _in_every_event(key, t, amp, *np.nonzero(tables.forced), n_events)
    if key.size == 0:
        return (
            np.zeros(0, np.int64),
            np.zeros(0, np.int16),
            np.zeros(0, np.int16),
            np.zeros((0, a.n_samples), np.int16),
        )
    forced = tables.forced if tables.forced is not None else np.zeros(tables.gain.shape, bool)
    chan_key, chan_first, comp = _msadc_select(key, amp, tables.always_written, forced, float(a.zero_suppression),
                                               every_channel)
    n = chan_key.size
    jitter = a.time_jitter * standard_normal(rng, n)  # = rng.standard_normal(n), drawn in numba
    ev, det, ch, t0, ped_even, ped_odd, sigma = _msadc_channel_tables(
        chan_key, width, float(a.signal_time), jitter, tables.time_offset.reshape(-1), tables.ped_even.reshape(-1),
        tables.ped_odd.reshape(-1), tables.noise.reshape(-1))
    noise, noise_start = _msadc_noise(rng, n, a.n_samples, pool)
    adc = msadc_waveforms(
        chan_first,
        amp[comp],
        t[comp],
        t0,
        ped_even,
        ped_odd,
        sigma,
        noise,
        a.sample_period,
        a.pulse_rise,
        a.pulse_decay,
        a.max_adc,
        noise_start=noise_start,
        n_samples=a.n_samples,
    )
    return ev, det, ch, adc


@numba.njit(cache=True, nogil=True)
def _msadc_amplitudes(key, energy, dead, gain, width):
    """Amplitude (ADC counts) of each component: ``energy / gain`` of its channel, 0 if the
    channel is dead (flat [det_id, channel] tables, key = (event, det_id, channel))."""
    amp = np.empty(key.size)
    for i in range(key.size):
        f = ((key[i] // _DET_SHIFT) % _DET_SHIFT) * width + key[i] % _DET_SHIFT
        amp[i] = 0.0 if dead[f] else energy[i] / gain[f]
    return amp


@numba.njit(cache=True, nogil=True)
def _msadc_channel_tables(chan_key, width, signal_time, jitter, time_offset, ped_even, ped_odd, noise):
    """Per written channel, in one pass: event, det_id and channel (int16), start time
    ``signal_time + time_offset + jitter`` and the pedestals and noise of its flat table entry."""
    n = chan_key.size
    ev = np.empty(n, np.int64)
    det = np.empty(n, np.int16)
    ch = np.empty(n, np.int16)
    t0, pe, po, sg = np.empty(n), np.empty(n), np.empty(n), np.empty(n)
    for i in range(n):
        k = chan_key[i]
        d = (k // _DET_SHIFT) % _DET_SHIFT
        c = k % _DET_SHIFT
        f = d * width + c
        ev[i] = k // _EV_SHIFT
        det[i] = d
        ch[i] = c
        t0[i] = signal_time + time_offset[f] + jitter[i]
        pe[i] = ped_even[f]
        po[i] = ped_odd[f]
        sg[i] = noise[f]
    return ev, det, ch, t0, pe, po, sg


def msadc_waveforms(
    chan_first,
    amp,
    t,
    t0,
    ped_even,
    ped_odd,
    noise_sigma,
    noise,
    period,
    rise,
    decay,
    max_adc,
    *,
    noise_start=None,
    n_samples: int | None = None,
    reference: bool = False,
):
    """Waveforms (n, n_samples) int16 of n channels from their pulse components.

    Channel i owns components ``chan_first[i]:chan_first[i+1]`` (amplitude ``amp`` in ADC
    counts, time ``t`` relative to the channel start time ``t0``).  Sample s is
    ``ped(parity of s) + noise_sigma * z[i, s] + Sum amp * msadc_shape(s*period - t0 - t)``,
    rounded and clipped to [0, max_adc].  The unit noise ``z[i, s]`` is ``noise[i, s]``
    (``noise`` of shape (n, n_samples)) or, with ``noise_start`` and ``n_samples``,
    ``noise[noise_start[i] + s]`` (``noise`` a flat pool, e.g.
    :func:`na64reco.sim.noise.gaussian_pool`).
    ``reference=True`` runs the numpy twin.
    """
    noise = np.asarray(noise, np.float32)
    n = len(chan_first) - 1
    if noise_start is None:
        n_samples = noise.shape[1]
        noise_start = np.arange(n, dtype=np.int64) * n_samples
        noise = noise.reshape(-1)
    elif n_samples is None:
        raise ValueError("msadc_waveforms: n_samples is needed with noise_start")
    noise = _readonly(noise)
    noise_start = np.asarray(noise_start, np.int64)
    if n and (noise_start.min() < 0 or noise_start.max() + n_samples > noise.size):
        raise ValueError(f"noise windows [{noise_start.min()}, {noise_start.max() + n_samples}) "
                         f"outside the {noise.size} noise numbers")
    args = (
        np.asarray(chan_first, np.int64),
        np.asarray(amp, float),
        np.asarray(t, float),
        np.asarray(t0, float),
        np.asarray(ped_even, float),
        np.asarray(ped_odd, float),
        np.asarray(noise_sigma, float),
        noise,
        noise_start,
        int(n_samples),
        float(period),
        float(rise),
        float(decay),
        int(max_adc),
    )
    return (_msadc_reference if reference else _msadc_kernel)(*args)


@numba.njit(cache=True, nogil=True)
def _msadc_select(key, amp, always_written, forced, zero_suppression, every_channel):
    """The written channels of components sorted by ``key`` (event, detector, channel).

    A channel (its components' amplitudes ``amp`` summed) is written if the sum exceeds
    ``zero_suppression``, or if it is hit (a component with amp > 0) on an always-written
    detector, or if it is ``forced[det, chan]``, or always with ``every_channel``.
    Returns ``(chan_key, chan_first, comp)``: the written channels' keys, their components
    ``comp[chan_first[i]:chan_first[i + 1]]`` (indices into the inputs).
    """
    n = key.size
    chan_key = np.empty(n, np.int64)
    chan_first = np.empty(n + 1, np.int64)
    comp = np.empty(n, np.int64)
    k = 0
    m = 0
    i = 0
    while i < n:
        total = 0.0
        hit = False
        j = i
        while j < n and key[j] == key[i]:
            total += amp[j]
            hit = hit or amp[j] > 0
            j += 1
        det = (key[i] // 256) % 256
        ch = key[i] % 256
        if every_channel or total > zero_suppression or (always_written[det] and hit) or forced[det, ch]:
            chan_key[k] = key[i]
            chan_first[k] = m
            for c in range(i, j):
                comp[m] = c
                m += 1
            k += 1
        i = j
    chan_first[k] = m
    return chan_key[:k], chan_first[: k + 1], comp[:m]


def _msadc_noise(rng: np.random.Generator, n: int, n_samples: int, pool: bool):
    """Unit noise of ``n`` channels for :func:`msadc_waveforms`: ``(noise, noise_start)``,
    windows of the pool (``pool=True``) or fresh draws of shape (n, n_samples) and None."""
    if pool:
        return gaussian_pool(), window_starts(rng, n, n_samples)
    return rng.standard_normal((n, n_samples), dtype=np.float32), None


def _in_every_event(key, t, amp, det, ch, n_events: int):
    """Add channels ``(det, ch)`` to every event with no signal (amplitude 0), keeping the
    components sorted by key (event, detector, channel)."""
    ev = np.repeat(np.arange(n_events, dtype=np.int64), det.size)
    extra = (ev * _DET_SHIFT + np.tile(det, n_events)) * _DET_SHIFT + np.tile(ch, n_events)
    key = np.concatenate([key, extra])
    t = np.concatenate([t, np.zeros(extra.size)])
    amp = np.concatenate([amp, np.zeros(extra.size)])
    order = np.argsort(key, kind="stable")
    return key[order], t[order], amp[order]


def _msadc_reference(chan_first, amp, t, t0, ped_even, ped_odd, noise_sigma, noise, noise_start, ns, period, rise,
                     decay, max_adc):
    n = len(chan_first) - 1
    ts = np.arange(ns) * period
    z = noise[noise_start[:, None] + np.arange(ns)[None, :]].astype(float)
    wave = np.where(np.arange(ns) % 2 == 1, ped_odd[:, None], ped_even[:, None]) + noise_sigma[:, None] * z
    counts = np.diff(chan_first)
    owner = np.repeat(np.arange(n), counts)
    if owner.size:
        rows = amp[:, None] * msadc_shape(ts[None, :] - (t0[owner] + t)[:, None], rise, decay)
        np.add.at(wave, owner, rows)
    return np.clip(np.rint(wave), 0, max_adc).astype(np.int16)


@numba.njit(cache=True, nogil=True)
def _msadc_kernel(chan_first, amp, t, t0, ped_even, ped_odd, noise_sigma, noise, noise_start, ns, period, rise, decay,
                  max_adc):
    n = len(chan_first) - 1
    out = np.empty((n, ns), np.int16)
    wave = np.empty(ns)
    tp = 2.0 * decay  # pulse.msadc_shape: (x/tp)^2 exp(-(x - tp)/decay), peak 1 at x = tp
    step = math.exp(-period / decay)  # the exponential factor between two samples
    # its powers: the factor m samples after a pulse's first one, from a table instead of a
    # product carried from sample to sample (a chain of dependent multiplications, the
    # components' cost; issue 11, seventh pass: the same digits on every --digest run)
    powers = np.empty(ns)
    powers[0] = 1.0
    for m in range(1, ns):
        powers[m] = powers[m - 1] * step
    # unsigned indices below (issue 11, eighth pass): numba wraps a negative signed index around the
    # array, which keeps LLVM from seeing consecutive addresses, so the noise was read by gather
    # instructions and the components' loop was not vectorised; the same arithmetic, 1.5x faster
    for i in range(n):
        z0 = np.uint64(noise_start[i])
        pe = ped_even[i]
        po = ped_odd[i]
        sg = noise_sigma[i]
        for s in range(ns):
            wave[s] = (po if s % 2 == 1 else pe) + sg * np.float64(noise[z0 + np.uint64(s)])
        for c in range(chan_first[i], chan_first[i + 1]):
            start = t0[i] + t[c]
            s1 = max(0, int(math.floor(start / period)) + 1)  # first sample strictly after the start
            while s1 < ns and s1 * period - start <= 0.0:
                s1 += 1
            if s1 >= ns:
                continue
            e = amp[c] * math.exp(-(s1 * period - start - tp) / decay)
            for s in range(s1, ns):
                x = s * period - start
                wave[np.uint64(s)] += e * powers[np.uint64(s - s1)] * (x / tp) ** 2
        for s in range(ns):
            r = np.rint(wave[s])
            if r < 0.0:
                r = 0.0
            elif r > max_adc:
                r = max_adc
            out[i, s] = np.int16(r)
    return out


# ---- trackers ----------------------------------------------------------------------------
#: fraction of the events in which a hot strip fires (assumed: a strip with a broken
#: threshold or a pick-up line, far above the ~1e-3 occupancy of a strip from noise)
HOT_STRIP_OCCUPANCY = 0.2


@dataclass(frozen=True)
class PlaneTables:
    type: np.ndarray  # 0 MM, 1 GEM, 2 straw
    center: np.ndarray
    alignment: np.ndarray
    resolution: np.ndarray
    efficiency: np.ndarray
    noise_hits: np.ndarray
    n_strips: np.ndarray
    pitch: np.ndarray
    dead: np.ndarray  # (planes, max strips) bool
    hot_plane: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # one entry per hot strip
    hot_strip: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    #: per plane: the window (ns, relative to the trigger) of the noise clusters' times
    noise_t_first: np.ndarray = field(default_factory=lambda: np.zeros(0))
    noise_t_last: np.ndarray = field(default_factory=lambda: np.zeros(0))

    @staticmethod
    def of(setup: Setup, cond: RunConditions) -> PlaneTables:
        planes = setup.planes
        width = max(p.n_strips for p in planes)
        dead = np.zeros((len(planes), width + 1), bool)
        for p in planes:
            ds = cond.planes[p.name].dead_strips
            dead[p.index, ds[(ds >= 0) & (ds < p.n_strips)]] = True
        return PlaneTables(
            np.array([("MM", "GEM", "straw").index(p.type) for p in planes]),
            np.array([p.center for p in planes]),
            np.array([cond.planes[p.name].alignment for p in planes]),
            np.array([p.resolution for p in planes]),
            np.array([cond.plane_efficiency(p) for p in planes]),
            np.array([cond.plane_noise_hits(p) for p in planes]),
            np.array([p.n_strips for p in planes]),
            np.array([p.pitch for p in planes]),
            dead,
            np.array([p.index for p in planes for _ in cond.planes[p.name].hot_strips], np.int64),
            np.array([s for p in planes for s in cond.planes[p.name].hot_strips], np.int64),
            *(np.array([(setup.readout.straw_noise_window if p.type == "straw" else setup.readout.apv_noise_window)[k]
                        for p in planes]) for k in (0, 1)),
        )


def tracker_points(rng: np.random.Generator, tables: PlaneTables, n_events: int, ev, plane, coord, t,
                   forced: ForcedRegion | None = None):
    """Local positions of efficient true crossings plus noise clusters.

    ``forced``: exactly ``forced.count`` noise clusters per event inside its region instead
    of the nominal ones there (:mod:`na64reco.sim.forced_noise`); None: nominal noise.
    Returns ``(ev, plane, u, t)`` with u in the plane frame (mm).
    """
    ev, plane, u, t = _efficient_points(rng, np.asarray(ev, np.int64), np.asarray(plane, np.int64),
                                        np.asarray(coord, float), np.asarray(t, float), tables.efficiency,
                                        tables.center, tables.alignment, tables.resolution)
    n_noise = rng.poisson(tables.noise_hits * n_events)
    nz_plane = np.repeat(np.arange(len(n_noise)), n_noise)
    width = tables.n_strips * tables.pitch
    nz_u = (rng.random(nz_plane.size) - 0.5) * width[nz_plane]
    nz_ev = rng.integers(0, max(n_events, 1), nz_plane.size)
    nz_t = np.zeros(nz_plane.size)
    if np.any(tables.noise_t_last > tables.noise_t_first):  # random times in the planes' readout windows
        lo, hi = tables.noise_t_first[nz_plane], tables.noise_t_last[nz_plane]
        nz_t = lo + (hi - lo) * rng.random(nz_plane.size)
    if forced is not None:
        nz_plane, nz_u, nz_ev, nz_t = force_noise(rng, forced, n_events, width, nz_plane, nz_u, nz_ev, nz_t)
    if tables.hot_plane.size:  # hot strips: a cluster on the strip in a fraction of the events
        fires = rng.random((max(n_events, 1), tables.hot_plane.size)) < HOT_STRIP_OCCUPANCY
        h_ev, h_k = np.nonzero(fires[:n_events])
        hp = tables.hot_plane[h_k]
        h_u = (tables.hot_strip[h_k] + 0.5) * tables.pitch[hp] - 0.5 * width[hp]
        nz_plane, nz_u = np.concatenate([nz_plane, hp]), np.concatenate([nz_u, h_u])
        nz_ev = np.concatenate([nz_ev, h_ev])
        nz_t = np.concatenate([nz_t, np.zeros(h_ev.size)])  # a hot strip fires with the trigger
    return (
        np.concatenate([ev, nz_ev]),
        np.concatenate([plane, nz_plane]).astype(np.int64, copy=False),
        np.concatenate([u, nz_u]),
        np.concatenate([t, nz_t]),
    )


@numba.njit(cache=True, nogil=True)
def _efficient_points(rng, ev, plane, coord, t, efficiency, center, alignment, resolution):
    """The crossings kept by the plane efficiency and their smeared local coordinate, in one
    pass each: the numbers of ``keep = rng.random(n) < efficiency[plane]`` and then
    ``u = coord - center[plane] - alignment[plane] + resolution[plane] * rng.standard_normal(n_kept)``
    of the kept crossings, from the same random stream (numba runs numpy's algorithms on the
    generator: same numbers, same state after; issue 11, fourth pass)."""
    n = ev.size
    keep = np.empty(n, np.bool_)
    k = 0
    for i in range(n):
        keep[i] = rng.random() < efficiency[plane[i]]
        k += keep[i]
    o_ev = np.empty(k, np.int64)
    o_pl = np.empty(k, np.int64)
    o_u = np.empty(k)
    o_t = np.empty(k)
    j = 0
    for i in range(n):
        if keep[i]:
            p = plane[i]
            o_ev[j] = ev[i]
            o_pl[j] = p
            o_t[j] = t[i]
            o_u[j] = coord[i] - center[p] - alignment[p] + resolution[p] * rng.standard_normal()
            j += 1
    return o_ev, o_pl, o_u, o_t


#: strips on each side of the cluster centre that receive charge (5 strips at 0.6-strip spread:
#: the next one would get < 1e-3 of the charge)
APV_HALF_WIDTH = 2

#: erf tabulated for the APV strip fractions: ``erf(x)`` for x in [-_ERF_RANGE, _ERF_RANGE] in
#: steps of 1/_ERF_PER_UNIT, linearly interpolated (error < h^2/8 max|erf''| = 7e-9), +-1 beyond
#: (1 - erf(4.5) = 2e-10); 4x faster than ``math.erf`` in the kernel (issue 11)
_ERF_RANGE = 4.5
_ERF_PER_UNIT = 4096
_ERF_TABLE = erf(np.arange(-int(_ERF_RANGE * _ERF_PER_UNIT), int(_ERF_RANGE * _ERF_PER_UNIT) + 2) / _ERF_PER_UNIT)


@numba.njit(cache=True, nogil=True, inline="always")
def _erf(x, table):
    """``erf(x)`` from ``table`` = :data:`_ERF_TABLE` (see there), an argument: numba freezes a
    global array into the compiled code as a constant (the APV kernel's cache file 734 ->
    145 kB without it; its compile time did not change measurably, issue 11, fifth pass)."""
    if x >= _ERF_RANGE:
        return 1.0
    if x <= -_ERF_RANGE:
        return -1.0
    f = (x + _ERF_RANGE) * _ERF_PER_UNIT
    i = int(f)
    iu = np.uint64(i)  # >= 0: an unsigned index spares numba's wrap-around of negative ones (issue 11)
    return table[iu] + (f - i) * (table[iu + np.uint64(1)] - table[iu])


def apv_digits(
    rng: np.random.Generator,
    setup: Setup,
    params: SimParams,
    tables: PlaneTables,
    n_events: int,
    ev,
    plane,
    u,
    t,
    *,
    pool: bool = True,
    reference: bool = False,
):
    """APV digits of MM/GEM planes from local points.  Returns (ev, plane, chan, a0, a1, a2).

    ``pool=False`` draws fresh Gaussian noise for every touched channel instead of reading
    it from the pool of :mod:`na64reco.sim.noise` (the reference of the noise model).
    """
    ro = setup.readout
    is_apv = tables.type != 2
    nc = int(np.count_nonzero(is_apv[plane]))
    q = np.clip(phys.moyal(rng, params.apv_charge_mpv, params.apv_charge_width, nc), 0.0, None)
    phase = rng.uniform(0.0, ro.apv_sample_spacing, max(n_events, 1))
    pulse = (float(ro.apv_gain), float(params.apv_first_sample), float(ro.apv_sample_spacing),
             float(ro.apv_peaking_time))
    pitch = np.asarray(tables.pitch, float)
    noise, noise_start = _apv_noise(rng, nc, APV_HALF_WIDTH, pool)
    noise = _readonly(noise)
    mm_chan = ro.mm_channel_of_strip(np.arange(tables.dead.shape[1]) % (ro.mm_channels * len(ro.mm_multiplex_steps)))
    readout = (
        tables.n_strips,
        tables.type == 0,
        tables.dead,
        mm_chan.astype(np.int64),
        max(ro.cluster_spread, 1e-3),
        APV_HALF_WIDTH,
        noise,
        noise_start,
        float(ro.apv_noise),
        float(params.apv_threshold_sigma * ro.apv_noise),
    )
    points = (np.asarray(ev, np.int64), np.asarray(plane, np.int64), np.asarray(u, float), np.asarray(t, float), is_apv,
              q, phase, max(n_events, 1), tables.n_strips, pitch, *pulse)
    ok = False
    if not reference:
        o_ev, o_pl, o_ch, a, ok = _apv_points_kernel(*points, *readout[1:], _ERF_TABLE)
    if not ok:  # the numpy reference, or (not expected) events or planes out of range
        m = is_apv[plane]
        ev, plane, u, t = ev[m], plane[m], u[m], t[m]
        dest = _group_positions(ev, plane, max(n_events, 1), tables.n_strips.size)  # clusters by (event, plane)
        rows = _apv_cluster_inputs(dest, ev, plane, u, t, q, phase, tables.n_strips, pitch, *pulse)
        if reference:
            o_ev, o_pl, o_ch, a = _apv_reference(*_apv_columns(rows), *readout)
        else:
            o_ev, o_pl, o_ch, a = _apv_rows_kernel(rows, *readout, _ERF_TABLE)
        a = a.T
    # the ADC's range (trackers.apv_max_adc): a pulse above it saturates; the readers refuse a sample outside it
    np.clip(a, -ro.apv_max_adc, ro.apv_max_adc, out=a)
    return o_ev, o_pl.astype(np.int16, copy=False), o_ch.astype(np.int16, copy=False), a[0], a[1], a[2]


def _apv_noise(rng: np.random.Generator, n_clusters: int, half: int, pool: bool) -> tuple[np.ndarray, np.ndarray]:
    """Unit noise for :func:`_apv_kernel`: ``(noise, noise_start)``, the (event, plane) whose
    first cluster is i reading from ``noise_start[i]`` on; a group of k clusters touches at
    most k (2 half + 1) channels, 3 numbers each, so the ranges of the groups are disjoint
    (in a block of :data:`na64reco.sim.noise.BLOCK` clusters for the pool, everywhere for
    fresh draws, ``pool=False``)."""
    per_cluster = 3 * (2 * half + 1)
    if pool:
        return gaussian_pool()[:POOL_SIZE], window_starts(rng, n_clusters, per_cluster)
    noise = rng.standard_normal(max(n_clusters, 1) * per_cluster, dtype=np.float32)
    return noise, np.arange(n_clusters, dtype=np.int64) * per_cluster


def _group_positions(ev, plane, n_events: int, n_planes: int) -> np.ndarray:
    """Position of each cluster in the order of (event, plane), ties in input order: the
    inverse of ``np.argsort(ev * n_planes + plane, kind="stable")``, by a counting sort
    (keys below ``n_events * n_planes``: O(n + keys) instead of O(n log n); issue 11)."""
    ev = np.asarray(ev, np.int64)
    plane = np.asarray(plane, np.int64)
    if ev.size and (ev.min() < 0 or ev.max() >= n_events or plane.min() < 0 or plane.max() >= n_planes):
        order = np.argsort(ev * n_planes + plane, kind="stable")  # not expected: keys out of range
        dest = np.empty(ev.size, np.int64)
        dest[order] = np.arange(ev.size)
        return dest
    return _counting_positions(ev, plane, n_events, n_planes)


@numba.njit(cache=True, nogil=True)
def _counting_positions(ev, plane, n_events, n_planes):
    start = np.zeros(n_events * n_planes + 1, np.int64)
    for i in range(ev.size):
        start[ev[i] * n_planes + plane[i] + 1] += 1
    for k in range(1, start.size):
        start[k] += start[k - 1]
    dest = np.empty(ev.size, np.int64)
    for i in range(ev.size):
        key = ev[i] * n_planes + plane[i]
        dest[i] = start[key]
        start[key] += 1
    return dest


@numba.njit(cache=True, nogil=True)
def _apv_cluster_inputs(dest, ev, plane, u, t, q, phase, n_strips, pitch, gain, first_sample, spacing, peaking):
    """The clusters moved to the positions ``dest`` (:func:`_group_positions`), one row of
    :data:`_APV_ROW` each: event, plane, strip coordinate ``c = u / pitch + n_strips / 2 -
    1/2``, amplitude ``q x gain`` and the samples ``apv_shape(first_sample + j spacing -
    phase[ev] - t)``, j = 0, 1, 2 (:func:`na64reco.pulse.apv_shape`; ``exp(1 - x / peaking)``
    once per cluster, then times ``exp(-spacing / peaking)``), in one pass instead of five
    gathers and a temporary array each.  The inputs are read in their order and the results
    scattered (25 % faster than gathering through the inverse permutation); one row of 56
    bytes per cluster, so that each scattered cluster touches one cache line instead of
    five arrays (issue 11, fourth pass: 6 -> 3 ms per 10k-MOT spill).  Event and plane are
    stored as floats (exact below 2^53)."""
    n = dest.size
    rows = np.empty((n, 7))
    step = math.exp(-spacing / peaking)  # exp(1 - x / peaking) from one sample to the next
    for o in range(n):
        _apv_row(rows, dest[o], ev[o], plane[o], u[o], t[o], q[o], phase, n_strips, pitch, gain, first_sample,
                 spacing, peaking, step)
    return rows


#: clusters of the per-cluster inputs computed ahead in :func:`_apv_points_kernel` (whole events; the
#: buffers grow to the largest event if needed), and how many clusters ahead its gathers are prefetched
_APV_BLOCK = 512
_APV_PREFETCH = 24


@numba.njit(cache=True, nogil=True)
def _apv_points_kernel(ev, plane, u, t, is_apv, q, phase, n_events, n_strips, pitch, gain, first_sample, spacing,
                       peaking, is_mm, dead, mm_chan, spread, half, noise, noise_start, noise_sigma, threshold,
                       erf_table):
    """:func:`_apv_rows_kernel` of the rows that :func:`_apv_cluster_inputs` would make from the
    crossings on APV planes (``is_apv[plane]``; ``q`` their charges in input order), without
    the rows, the same digits bit for bit (the same arithmetic, summation order and noise
    positions).  Returns ``(ev, plane, chan, a, ok)``; ``ok`` False (and no digits) if an event or
    plane is out of range (or more than 2^31 points: the permutation is int32).

    * The clusters in (event, plane) order by a stable counting sort by event (a table of
      n_events entries, cache-resident: counting over (event, plane) keys strode through a
      1.3 MB table, ~10 % of the kernel) and a stable insertion sort by plane inside each event
      (the crossings are recorded plane by plane, so only the pile-up and noise clusters
      appended after them move).
    * Per block of whole events, each cluster's strip coordinate, amplitude and pulse shape
      (``_apv_row``'s arithmetic) in one tight loop, its gathers through the permutation
      prefetched :data:`_APV_PREFETCH` clusters ahead (:func:`na64reco.sim.prefetch.prefetch`:
      the arrays are read in a transposed order, a cache miss per line otherwise); the event and
      plane are the group's, not gathered.
    * Per (event, plane) group, the charge sharing into a per-channel buffer as before, the
      touched channels marked in a bit set (64 channels per word) and visited in channel order
      by their set bits (instead of a list sorted by insertion), each with the next three noise
      numbers, rounded, kept above the threshold.  The first noise line of a group a few groups
      ahead is prefetched.

    ~1.55x faster than the seventh pass's kernel on one spill's inputs (32.5 -> ~21 ms; issue 11, eighth pass).
    """
    n_planes = n_strips.size
    est = np.zeros(n_events + 1, np.int64)  # counting sort by event: est[e] = first cluster of event e
    for i in range(ev.size):
        p = plane[i]
        if p < 0 or p >= n_planes or ev[i] < 0 or ev[i] >= n_events or ev.size > 2147483647:
            z = np.empty(0, np.int64)
            return z, np.empty(0, np.int16), np.empty(0, np.int16), np.empty((3, 0), np.int16), False
        if is_apv[p]:
            est[ev[i] + 1] += 1
    block = _APV_BLOCK
    for e in range(n_events):
        block = max(block, est[e + 1])
        est[e + 1] += est[e]
    n = est[n_events]
    pos = est[:-1].copy()
    perm = np.empty(n, np.int32)  # sorted position -> input index
    qperm = np.empty(n, np.int32)  # sorted position -> index of the charge (APV points in input order)
    pkey = np.empty(n, np.int16)  # sorted position -> plane
    o = 0
    for i in range(ev.size):
        p = plane[i]
        if is_apv[p]:
            e = ev[i]
            j = pos[e]
            perm[j] = i
            qperm[j] = o
            pkey[j] = p
            pos[e] = j + 1
            o += 1
    for e in range(n_events):  # stable insertion sort by plane inside each event
        a0 = est[e]
        for x in range(a0 + 1, est[e + 1]):
            kp = pkey[x]
            if pkey[x - 1] <= kp:
                continue
            ps = perm[x]
            qs = qperm[x]
            y = x - 1
            while y >= a0 and pkey[y] > kp:
                pkey[y + 1] = pkey[y]
                perm[y + 1] = perm[y]
                qperm[y + 1] = qperm[y]
                y -= 1
            pkey[y + 1] = kp
            perm[y + 1] = ps
            qperm[y + 1] = qs
    cap = n * (2 * half + 1)
    o_ev = np.empty(cap, np.int64)
    o_pl = np.empty(cap, np.int16)
    o_ch = np.empty(cap, np.int16)
    o_a = np.empty((3, cap), np.int16)  # three contiguous sample columns (the file's branches)
    width = dead.shape[1]
    n_words = (width + 63) // 64
    buf = np.zeros((n_words * 64, 3))
    bits = np.zeros(n_words, np.uint64)  # the touched channels of the group
    n_noise = noise.size
    step = math.exp(-spacing / peaking)
    inv = 1.0 / (spread * math.sqrt(2.0))
    b_cc = np.empty(block)  # the block's clusters: strip coordinate, amplitude, pulse shape
    b_amp = np.empty(block)
    b_sh = np.empty((block, 3))
    ahead = _APV_PREFETCH
    k = 0
    e = 0
    while e < n_events:
        c0 = est[e]
        e_stop = e + 1
        while e_stop < n_events and est[e_stop + 1] - c0 <= block:
            e_stop += 1
        for cl in range(c0, est[e_stop]):
            if cl + ahead < n:
                prefetch(u, perm[cl + ahead])
                prefetch(t, perm[cl + ahead])
                prefetch(q, qperm[cl + ahead])
            src = perm[cl]
            p = np.int64(pkey[cl])
            b = cl - c0
            b_cc[b] = (u[src] + 0.5 * n_strips[p] * pitch[p]) / pitch[p] - 0.5
            b_amp[b] = q[qperm[cl]] * gain
        for ee in range(e, e_stop):
            tt0 = first_sample - phase[ee]
            for cl in range(est[ee], est[ee + 1]):
                b = cl - c0
                tt = tt0 - t[perm[cl]]  # = first_sample - phase - t, as _apv_row
                x_exp = -1.0  # exp(1 - x / peaking) of the previous positive sample, -1 before the first
                for j in range(3):
                    x = tt + j * spacing
                    v = 0.0
                    if x > 0:
                        x_exp = math.exp(1.0 - x / peaking) if x_exp < 0 else x_exp * step
                        v = (x / peaking) * x_exp
                    b_sh[b, j] = v
        for ee in range(e, e_stop):
            i0 = est[ee]
            e_end = est[ee + 1]
            while i0 < e_end:  # the (event, plane) groups of the event
                p = np.int64(pkey[i0])
                i1 = i0 + 1
                while i1 < e_end and pkey[i1] == p:
                    i1 += 1
                if i0 + ahead < n:
                    prefetch(noise, min(noise_start[i0 + ahead], n_noise - 1))
                lo_w = n_words
                hi_w = -1
                mm = is_mm[p]
                n_s = n_strips[p]
                for cl in range(i0, i1):  # from here as in _apv_rows_kernel: charge sharing,
                    b = cl - c0
                    cc = b_cc[b]
                    amp = b_amp[b]
                    sh0 = b_sh[b, 0]
                    sh1 = b_sh[b, 1]
                    sh2 = b_sh[b, 2]
                    s0 = np.int64(np.rint(cc))
                    lower = _erf((s0 - half - 0.5 - cc) * inv, erf_table)
                    for off in range(-half, half + 1):
                        s = s0 + off
                        upper = _erf((s + 0.5 - cc) * inv, erf_table)
                        frac = 0.5 * (upper - lower)
                        lower = upper
                        if s < 0 or s >= n_s or dead[p, s]:
                            continue
                        ch = mm_chan[s] if mm else s
                        cu = np.uint64(ch)  # unsigned indices: no wrap-around code (numba) in the inner loops
                        buf[cu, 0] += amp * frac * sh0
                        buf[cu, 1] += amp * frac * sh1
                        buf[cu, 2] += amp * frac * sh2
                        w = ch >> 6
                        bits[w] |= np.uint64(1) << np.uint64(ch & 63)
                        lo_w = min(lo_w, w)
                        hi_w = max(hi_w, w)
                r = noise_start[i0] % n_noise  # the touched channels in channel order: noise, threshold, output
                for w in range(lo_w, hi_w + 1):
                    m = bits[w]
                    bits[w] = 0
                    while m != 0:
                        ch = w * 64 + np.int64(trailing_zeros(m))
                        cu = np.uint64(ch)
                        m &= m - np.uint64(1)
                        z0 = r  # the next three noise numbers (wrapping around the pool's end); the
                        # samples in registers (not through buf: 5 % of the kernel)
                        z1 = r + 1
                        z2 = r + 2
                        if z2 >= n_noise:
                            z1 = z1 - n_noise if z1 >= n_noise else z1
                            z2 = z2 - n_noise
                        v0 = buf[cu, 0] + noise_sigma * np.float64(noise[np.uint64(z0)])
                        v1 = buf[cu, 1] + noise_sigma * np.float64(noise[np.uint64(z1)])
                        v2 = buf[cu, 2] + noise_sigma * np.float64(noise[np.uint64(z2)])
                        buf[cu, 0] = 0.0
                        buf[cu, 1] = 0.0
                        buf[cu, 2] = 0.0
                        big = max(v0, max(v1, v2))
                        r += 3
                        if r >= n_noise:
                            r -= n_noise
                        o_ev[k] = ee
                        o_pl[k] = p
                        o_ch[k] = ch
                        ku = np.uint64(k)
                        o_a[0, ku] = np.int16(min(max(np.rint(v0), -32768.0), 32767.0))
                        o_a[1, ku] = np.int16(min(max(np.rint(v1), -32768.0), 32767.0))
                        o_a[2, ku] = np.int16(min(max(np.rint(v2), -32768.0), 32767.0))
                        k += 1 if big > threshold else 0
                i0 = i1
        e = e_stop
    return o_ev[:k], o_pl[:k], o_ch[:k], o_a[:, :k], True


@numba.njit(cache=True, nogil=True, inline="always")
def _apv_row(rows, i, e, p, u, t, q, phase, n_strips, pitch, gain, first_sample, spacing, peaking, step):
    """Row ``i`` of :func:`_apv_cluster_inputs` for one cluster."""
    rows[i, 0] = e
    rows[i, 1] = p
    rows[i, 2] = (u + 0.5 * n_strips[p] * pitch[p]) / pitch[p] - 0.5
    rows[i, 3] = q * gain
    tt = first_sample - phase[e] - t
    x_exp = -1.0  # exp(1 - x / peaking) of the previous positive sample, -1 before the first
    for j in range(3):
        x = tt + j * spacing
        if x > 0:
            x_exp = math.exp(1.0 - x / peaking) if x_exp < 0 else x_exp * step
            rows[i, 4 + j] = (x / peaking) * x_exp
        else:
            rows[i, 4 + j] = 0.0


#: the columns of a row of :func:`_apv_cluster_inputs`
_APV_ROW = ("event", "plane", "c", "amp", "shape0", "shape1", "shape2")


def _apv_columns(rows):
    """(ev, plane, c, amp, shape3) of rows of :func:`_apv_cluster_inputs`."""
    return rows[:, 0].astype(np.int64), rows[:, 1].astype(np.int64), rows[:, 2], rows[:, 3], rows[:, 4:7]


def _apv_reference(
    ev, plane, c, amp, shape3, n_strips, is_mm, dead, mm_chan, spread, half, noise, noise_start, noise_sigma, threshold
):
    """Numpy twin of :func:`_apv_kernel`.

    Clusters sorted by (event, plane).  Charges are summed per (event, plane, channel);
    the q-th touched channel (in channel order) of the (event, plane) whose first cluster
    is i gets the noise ``noise[(noise_start[i] + 3 q + j) % noise.size]``, j = 0, 1, 2;
    channels with max sample > ``threshold`` are returned, rounded to int16.
    """
    offs = np.arange(-half, half + 1)
    strips = np.rint(c).astype(np.int64)[:, None] + offs[None, :]
    ok = (strips >= 0) & (strips < n_strips[plane][:, None])
    ok &= ~dead[plane[:, None], np.clip(strips, 0, dead.shape[1] - 1)]
    frac = ndtr((strips + 0.5 - c[:, None]) / spread) - ndtr((strips - 0.5 - c[:, None]) / spread)
    k, j = np.nonzero(ok)
    s = strips[k, j]
    chan = np.where(is_mm[plane[k]], mm_chan[s], s)
    samples = (amp[k] * frac[k, j])[:, None] * shape3[k]
    key = (ev[k] * 64 + plane[k]) * 1024 + chan
    order = np.argsort(key, kind="stable")
    key, samples = key[order], samples[order]
    if key.size == 0:
        z = np.zeros(0, np.int64)
        return z, z, z, np.zeros((0, 3), np.int16)
    start = np.flatnonzero(np.concatenate([[True], key[1:] != key[:-1]]))
    key = key[start]
    group_key = ev * 64 + plane  # (event, plane) of each cluster, sorted
    group_first = np.searchsorted(group_key, key // 1024, side="left")  # first cluster of the channel's group
    new_group = np.concatenate([[True], group_first[1:] != group_first[:-1]])
    rank = np.arange(key.size) - np.maximum.accumulate(np.where(new_group, np.arange(key.size), 0))
    where = (noise_start[group_first] + 3 * rank)[:, None] + np.arange(3)[None, :]
    samples = np.add.reduceat(samples, start, axis=0) + noise_sigma * noise[where % noise.size].astype(float)
    keep = samples.max(axis=1) > threshold
    key = key[keep]
    a = np.clip(np.rint(samples[keep]), -32768, 32767).astype(np.int16)
    return key // (64 * 1024), (key // 1024) % 64, key % 1024, a


def _apv_kernel(ev, plane, c, amp, shape3, n_strips, is_mm, dead, mm_chan, spread, half, noise, noise_start,
                noise_sigma, threshold):
    """:func:`_apv_rows_kernel` of clusters given as columns (the arguments of
    :func:`_apv_reference`)."""
    rows = np.column_stack([np.asarray(ev, float), np.asarray(plane, float), c, amp,
                            np.asarray(shape3, float).reshape(-1, 3)])
    return _apv_rows_kernel(rows, n_strips, is_mm, dead, mm_chan, spread, half, _readonly(np.asarray(noise)),
                            noise_start, noise_sigma, threshold, _ERF_TABLE)


@numba.njit(cache=True, nogil=True)
def _apv_rows_kernel(rows, n_strips, is_mm, dead, mm_chan, spread, half, noise, noise_start, noise_sigma, threshold,
                     erf_table):
    # rows: _APV_ROW of the clusters sorted by (event, plane); noise: >= 3 numbers, read
    # cyclically (see _apv_reference)
    n = rows.shape[0]
    n_noise = noise.size
    cap = n * (2 * half + 1)
    o_ev = np.empty(cap, np.int64)
    o_pl = np.empty(cap, np.int16)  # the int16 of the raw format: < 64 planes, < 1024 channels
    o_ch = np.empty(cap, np.int16)
    o_a = np.empty((cap, 3), np.int16)
    width = dead.shape[1]
    buf = np.zeros((width, 3))
    touched = np.zeros(width, np.bool_)
    tl = np.empty(width, np.int64)  # the touched channels of one (event, plane), each once
    k = 0
    i = 0
    inv = 1.0 / (spread * math.sqrt(2.0))
    while i < n:
        j = i
        while j < n and rows[j, 0] == rows[i, 0] and rows[j, 1] == rows[i, 1]:
            j += 1
        p = np.int64(rows[i, 1])
        nt = 0
        for cl in range(i, j):
            cc = rows[cl, 2]
            s0 = np.int64(np.rint(cc))
            lower = _erf((s0 - half - 0.5 - cc) * inv, erf_table)  # strip edges are shared: 2 half + 2 erf
            for o in range(-half, half + 1):
                s = s0 + o
                upper = _erf((s + 0.5 - cc) * inv, erf_table)
                frac = 0.5 * (upper - lower)
                lower = upper
                if s < 0 or s >= n_strips[p] or dead[p, s]:
                    continue
                ch = mm_chan[s] if is_mm[p] else s
                for a in range(3):
                    buf[ch, a] += rows[cl, 3] * frac * rows[cl, 4 + a]
                if not touched[ch]:
                    touched[ch] = True
                    tl[nt] = ch
                    nt += 1
        for a in range(1, nt):  # insertion sort of the few touched channels
            key = tl[a]
            b = a - 1
            while b >= 0 and tl[b] > key:
                tl[b + 1] = tl[b]
                b -= 1
            tl[b + 1] = key
        r = noise_start[i] % n_noise
        for q in range(nt):
            ch = tl[q]
            big = -1e300
            for a in range(3):
                z = r + a
                if z >= n_noise:  # wrap around the end of the noise numbers
                    z -= n_noise
                v = buf[ch, a] + noise_sigma * np.float64(noise[z])
                buf[ch, a] = v
                if v > big:
                    big = v
            r += 3
            if r >= n_noise:
                r -= n_noise
            o_ev[k] = np.int64(rows[i, 0])  # written in any case, kept (k advanced) if above the threshold: no
            o_pl[k] = p  # unpredictable branch (~2/3 of the touched channels pass; issue 11)
            o_ch[k] = ch
            for a in range(3):
                v = np.rint(buf[ch, a])
                o_a[k, a] = np.int16(min(max(v, -32768.0), 32767.0))
            k += 1 if big > threshold else 0
            for a in range(3):
                buf[ch, a] = 0.0
            touched[ch] = False
        i = j
    return o_ev[:k], o_pl[:k], o_ch[:k], o_a[:k]


def straw_digits(rng: np.random.Generator, setup: Setup, tables: PlaneTables, n_events: int, ev, plane, u, t):
    """Straw digits from local points (true crossings and noise).  Returns (ev, plane, tube, tdc)."""
    ro = setup.readout
    m = tables.type[plane] == 2
    ev, plane, u, t = ev[m], plane[m], u[m], t[m]
    n = tables.n_strips[plane]
    pitch = tables.pitch[plane]
    tube = np.floor(u / pitch + n / 2).astype(np.int64)
    ok = (tube >= 0) & (tube < n)
    ok &= ~tables.dead[plane, np.clip(tube, 0, tables.dead.shape[1] - 1)]
    axis = (tube + 0.5) * pitch - n * pitch / 2
    dist = np.clip(np.abs(u - axis), 0.0, pitch / 2)
    tdc_time = dist / ro.straw_drift_velocity + t
    last = ro.straw_noise_window[1]
    if last > ro.straw_noise_window[0]:  # the TDC counts from the trigger to the window's end plus a drift time:
        ok &= (tdc_time >= 0.0) & (tdc_time <= last + 0.5 * pitch / ro.straw_drift_velocity)  # pile-up muons
        # crossing before the trigger or long after it are not read
    tdc = np.rint(tdc_time / ro.straw_tdc_lsb).astype(np.int64)
    ok &= (tdc >= 0) & (tdc <= ValueRanges.of(setup).straw_tdc_max)  # what the format allows (the readers' bound;
    # the window's cut above already keeps to it: this matters for a setup without a window)
    ev, plane, tube, tdc = ev[ok], plane[ok], tube[ok], tdc[ok]
    order = event_lexsort(ev, (plane, tube, tdc))  # = np.lexsort((tdc, tube, plane, ev))
    return ev[order], plane[order].astype(np.int16), tube[order].astype(np.int16), tdc[order].astype(np.int32)
