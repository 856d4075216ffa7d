"""Per-event calorimeter, veto and counter quantities from MSADC digits.

Stage function: :func:`reconstruct_calo` (events as returned by
:meth:`na64reco.io.raw.RawFile.events`).  The per-digit work is done by
:func:`na64reco.reco.waveform.reconstruct_digits` (numba kernel); the per-event sums
are scatter-adds (``np.bincount`` on ``event * n_channels + channel``), with no
per-event Python loop.

Which digits count
    A digit counts if it is above the zero-suppression threshold, its channel status is
    good, and its time is within ``msadc.timing_window`` of the event master time: the
    median time of the ECAL and counter digits above threshold (the nominal in-time
    half-maximum time if there are none).

Output (one entry per event; energies in GeV, times in ns, positions in mm).  Detectors
a setup lacks give NaN (same keys and shapes for every setup, except the counters,
which are named after the setup's counters):

=========================== ============================================================
``ecal_preshower_energy``   sum of the ECAL sections named ``preshower``
``ecal_main_energy``        sum of the other ECAL sections
``ecal_energy``             total ECAL energy
``ecal_max_cell_ix/iy``     cell (summed over sections) with most energy, -1 if no energy
``ecal_cog_x``, ``_y``      energy-weighted mean of the cell centres (global coordinates)
``ecal_shower_chi2``        shower-shape chi2/ndf of the 3x3 cells around the maximum,
                            see :func:`shower_chi2`; NaN without ECAL energy
``hcal_module_energy``      (n, n_modules) energy per HCAL module (sum of its cells)
``hcal_energy``             total HCAL energy
``vhcal_energy``            total VHCAL energy
``veto_paddle_energy``      (n, n_paddles) mean of the paddle's good PMTs, each
                            calibrated to energy (a zero-suppressed PMT counts as 0);
                            NaN if both PMTs are masked
``veto_energy``             sum over paddles
``srd_module_energy``       (n, n_modules) SRD module energies (NaN x 3 without SRD)
``srd_energy``              sum over SRD modules
``counter_<NAME>_energy``   counter energy (sum of its in-time digits)
``counter_<NAME>_time``     time of its largest in-time digit (NaN if none)
``event_time``              the master time (ns)
``n_saturated``             digits (above threshold) with a saturated sample
``n_pileup``                digits flagged as pile-up
``n_pedestal_fallback``     digits whose pedestal came from the conditions
=========================== ============================================================

Expected EM shower profile (for ``ecal_shower_chi2``): a lateral energy density
``rho(r) ~ exp(-r / b)`` with ``b`` chosen so that a fraction ``shower_containment``
(setup YAML) of the energy lies within one Moliere radius:
``1 - (1 + R_M/b) exp(-R_M/b) = containment``.  Its cell fractions are tabulated for
impact points on a grid over the central cell; each event's chi2 is the minimum over
the grid of ``sum_i (f_i - F_i)^2 / sigma_i^2`` with
``sigma_i^2 = s^2 F_i (1 - F_i) / E[GeV] + floor^2`` (``s`` the stochastic resolution
term, ``floor`` = ``shower_fraction_floor``), divided by ndf = (cells used) - 3.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import numba
import numpy as np
from hepunits import GeV

from na64reco.errors import ConfigError
from na64reco.geometry import Calorimeter, Setup
from na64reco.io.raw import collection_arrays, refuse_data_events
from na64reco.reco import waveform
from na64reco.reco.inputs import check_belong
from na64reco.reco.tracking._jit import INLINED, NO_NRT, njit_cached_with
from na64reco.reco.waveform import (
    FLAG_BELOW_THRESHOLD,
    FLAG_MASKED,
    FLAG_OUT_OF_TIME,
    FLAG_PEDESTAL_FALLBACK,
    FLAG_PILEUP,
    FLAG_SATURATED,
    Digits,
    master_time,
    reconstruct_digits,
    waveform_config,
)

#: Width of ``srd_module_energy`` for setups without an SRD (the NA64e SRD has 3
#: modules); a schema choice so that outputs of both setups have the same shapes.
ABSENT_SRD_MODULES = 3
_u = np.uint64


def module_widths(setup: Setup) -> dict[str, int]:
    """The number of values per event of each per-module variable of the reco record for ``setup``
    (what a selection's ``modules:`` may index): the HCAL's and the SRD's modules, the VETO's paddles."""
    cal = setup.calorimeters
    return {"hcal_module_energy": cal["HCAL"].n_sections if "HCAL" in cal else 1,
            "srd_module_energy": cal["SRD"].n_sections if "SRD" in cal else ABSENT_SRD_MODULES,
            "veto_paddle_energy": cal["VETO"].n_sections if "VETO" in cal else 1}

#: Impact-point grid (per axis) over the central cell for the shower-shape fit.
PROFILE_GRID = 9


def flat_digits(events) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(counts per event, det, chan, samples (n_digits, 32)) from awkward events; events of a data
    file are refused (the flat digits feed the public :func:`reconstruct_digits`)."""
    refuse_data_events(events, "flat_digits()")
    offsets, flat = collection_arrays(events["calo"], ("det", "chan", "adc"))
    return np.diff(offsets), flat["det"], flat["chan"], flat["adc"]


def digits_of_events(events, setup: Setup, conditions, source: str = "") -> tuple[Digits, np.ndarray, np.ndarray]:
    """Reconstruct all digits of ``events``; returns (digits, event index per digit, master time).

    Applies the timing window (sets ``FLAG_OUT_OF_TIME``).  Events of a data file are refused.
    """
    refuse_data_events(events, "digits_of_events()")
    counts, det, chan, adc = flat_digits(events)
    ev = np.repeat(np.arange(len(counts)), counts)
    describe = _describer(events, counts, det, chan)
    digits = reconstruct_digits(det, chan, adc, setup, conditions, source=source, describe=describe)
    cfg = waveform_config(setup)
    ref_ids = [d.id for d in setup.calorimeters.values() if d.kind == "counter" or d.name == "ECAL"]
    ok = (digits.flags & (FLAG_BELOW_THRESHOLD | FLAG_MASKED | FLAG_PILEUP)) == 0
    use = ok & np.isin(digits.det, ref_ids)
    offsets = np.concatenate([[0], np.cumsum(counts)])
    t_master = master_time(offsets, digits.time, use, cfg.nominal_time)
    late = ~(np.abs(digits.time - t_master[ev]) <= cfg.timing_window)  # NaN time -> out
    flags = digits.flags | np.where(late & ((digits.flags & FLAG_BELOW_THRESHOLD) == 0),
                                    np.uint8(FLAG_OUT_OF_TIME), np.uint8(0))
    digits = Digits(digits.det, digits.chan, digits.amplitude, digits.time, digits.energy,
                    digits.ped_even, digits.ped_odd, digits.chi2ndf, flags.astype(np.uint8))
    return digits, ev, t_master


def channel_sums(digits: Digits, ev: np.ndarray, n_events: int, det: Calorimeter,
                 mask: np.ndarray | None = None) -> np.ndarray:
    """(n_events, n_channels) sum of the counted digit energies (MeV) of ``det``."""
    sel = digits.good & (digits.det == det.id)
    if mask is not None:
        sel &= mask
    idx = ev[sel] * det.n_channels + digits.chan[sel]
    return np.bincount(idx, weights=digits.energy[sel], minlength=n_events * det.n_channels).reshape(
        n_events, det.n_channels)


def _veto_quantities(cal, conditions, sums, n: int) -> dict[str, np.ndarray]:
    """VETO per paddle (mean of its good PMTs, GeV) and total, from per-channel sums (MeV)."""
    if sums is None:
        return {"veto_paddle_energy": np.full((n, 1), np.nan), "veto_energy": np.full(n, np.nan)}
    det = cal["VETO"]
    e = sums.reshape(n, det.n_sections, 2) / GeV
    n_good = (conditions.calo["VETO"].status == 0).reshape(det.n_sections, 2).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        paddle = np.where(n_good > 0, e.sum(axis=2) / np.maximum(n_good, 1), np.nan)
    return {"veto_paddle_energy": paddle, "veto_energy": paddle.sum(axis=1)}


def _absent_ecal(n: int) -> dict[str, np.ndarray]:
    """ECAL fields of a setup without an ECAL: NaN energies, cell -1."""
    out = {k: np.full(n, np.nan) for k in ("ecal_preshower_energy", "ecal_main_energy", "ecal_energy",
                                            "ecal_cog_x", "ecal_cog_y", "ecal_shower_chi2")}
    out["ecal_max_cell_ix"] = np.full(n, -1)
    out["ecal_max_cell_iy"] = np.full(n, -1)
    return out


def reconstruct_calo_reference(events, setup: Setup, conditions, source: str = "") -> dict[str, np.ndarray]:
    """Slow twin of :func:`reconstruct_calo`: digits as arrays, then numpy scatter-adds
    (``np.bincount``) per detector and sort-based counter times."""
    n = len(events)
    digits, ev, t_master = digits_of_events(events, setup, conditions, source)
    cal = setup.calorimeters
    out: dict[str, np.ndarray] = {}

    # --- ECAL
    if "ECAL" in cal:
        out.update(_ecal_quantities_reference(setup, cal["ECAL"], channel_sums(digits, ev, n, cal["ECAL"]),
                                              conditions.calo["ECAL"]))
    else:
        out.update(_absent_ecal(n))

    # --- module calorimeters
    for name, key, width in (("HCAL", "hcal", None), ("SRD", "srd", ABSENT_SRD_MODULES)):
        if name in cal:
            det = cal[name]
            e = channel_sums(digits, ev, n, det).reshape(n, det.n_sections, -1).sum(axis=2) / GeV
        else:
            e = np.full((n, width or 1), np.nan)
        out[f"{key}_module_energy"] = e
        out[f"{key}_energy"] = e.sum(axis=1)
    out["vhcal_energy"] = (channel_sums(digits, ev, n, cal["VHCAL"]).sum(axis=1) / GeV
                           if "VHCAL" in cal else np.full(n, np.nan))

    # --- VETO paddles: mean of the good PMTs of each paddle
    veto_sums = channel_sums(digits, ev, n, cal["VETO"]) if "VETO" in cal else None
    out.update(_veto_quantities(cal, conditions, veto_sums, n))

    # --- counters
    for name, det in cal.items():
        if det.kind != "counter":
            continue
        sel = digits.good & (digits.det == det.id)
        out[f"counter_{name}_energy"] = np.bincount(ev[sel], weights=digits.energy[sel], minlength=n) / GeV
        t = np.full(n, np.nan)
        if sel.any():
            e_sel, ev_sel, t_sel = digits.energy[sel], ev[sel], digits.time[sel]
            order = np.lexsort((e_sel, ev_sel))
            last = np.r_[ev_sel[order][1:] != ev_sel[order][:-1], True]
            t[ev_sel[order][last]] = t_sel[order][last]
        out[f"counter_{name}_time"] = t

    # --- flags
    above = (digits.flags & FLAG_BELOW_THRESHOLD) == 0
    out["event_time"] = t_master
    for key, bit in (("n_saturated", FLAG_SATURATED), ("n_pileup", FLAG_PILEUP),
                     ("n_pedestal_fallback", FLAG_PEDESTAL_FALLBACK)):
        out[key] = np.bincount(ev[above & ((digits.flags & bit) != 0)], minlength=n).astype(np.int32)
    return out


# ----------------------------------------------------------------------------------------
# fast path: the waveform kernel over all digits, then one numba pass over the events
@dataclasses.dataclass(frozen=True)
class _Layout:
    """Where each [detector id, channel] goes in the per-event sums (cached per setup)."""

    column: np.ndarray  # (256, width) int64: column of the sums table, -1 if none
    reference: np.ndarray  # (256,) bool: detectors whose times define the master time
    counter_slot: np.ndarray  # (256,) int64: counter index for the counter times, -1 if none
    n_columns: int
    offsets: dict  # detector name -> first column
    counters: tuple  # counter names in slot order


_LAYOUTS: dict[int, tuple[Setup, _Layout]] = {}


def _layout(setup: Setup) -> _Layout:
    """The :class:`_Layout` of ``setup`` (cached by identity: setups are immutable)."""
    hit = _LAYOUTS.get(id(setup))
    if hit is not None and hit[0] is setup:
        return hit[1]
    if len(_LAYOUTS) > 16:
        _LAYOUTS.clear()
    lay = _make_layout(setup)
    _LAYOUTS[id(setup)] = (setup, lay)
    return lay


def _make_layout(setup: Setup) -> _Layout:
    width = max(d.n_channels for d in setup.calorimeters.values())
    column = np.full((256, width), -1, np.int64)
    reference = np.zeros(256, np.bool_)
    slot = np.full(256, -1, np.int64)
    offsets, counters, n_col = {}, [], 0
    for name, det in setup.calorimeters.items():
        ch = np.arange(det.n_channels)
        offsets[name] = n_col
        if name in ("HCAL", "SRD"):  # modules: one column per module (section)
            column[det.id, ch] = n_col + det.cell_of_channel(ch)[0]
            n_col += det.n_sections
        elif name == "VHCAL" or det.kind == "counter":  # one column
            column[det.id, ch] = n_col
            n_col += 1
        else:  # ECAL cells, VETO PMTs: one column per channel
            column[det.id, ch] = n_col + ch
            n_col += det.n_channels
        if det.kind == "counter":
            slot[det.id] = len(counters)
            counters.append(name)
        reference[det.id] = det.kind == "counter" or name == "ECAL"
    return _Layout(column, reference, slot, n_col, offsets, tuple(counters))


# (keyed on waveform.py too: the FLAG_* it reads are compiled in)
@njit_cached_with(waveform, nogil=True, **NO_NRT)  # see _event_kernel
def _event_loop(offsets, det, chan, time, energy, flags, column, reference, counter_slot, n_columns, nominal,
                window, ecal_lo, ecal_hi, ecal, work, sums, row, t_master, c_energy, c_time, n_flag, buf, e_out,
                e_cell, shower):
    """The event loop of :func:`_event_kernel` (its arrays, outputs and work arrays; ``work`` =
    (grid, obs, inside, scale) of :func:`_ecal_event`, None without an ECAL)."""
    n = len(offsets) - 1
    n_ecal = ecal_hi - ecal_lo
    not_ref = FLAG_BELOW_THRESHOLD | FLAG_MASKED | FLAG_PILEUP
    not_good = FLAG_BELOW_THRESHOLD | FLAG_MASKED | FLAG_OUT_OF_TIME
    if ecal is not None:
        e_unit, e_sec, e_nx, e_ny, e_pre, e_cx, e_cy, e_resp_e, e_resp_s, e_table, e_pvar, e_stoch, e_floor = ecal
        grid, obs, inside, scale = work
    for e in range(n):
        lo = offsets[e]
        hi = offsets[e + 1]
        m = 0
        for j in range(lo, hi):
            if (flags[j] & not_ref) == 0 and reference[det[j]]:
                # insertion sort into buf[:m]
                t = time[j]
                q = m
                while q > 0 and buf[q - 1] > t:
                    buf[q] = buf[q - 1]
                    q -= 1
                buf[q] = t
                m += 1
        if m == 0:
            tm = nominal
        elif m % 2 == 1:
            tm = buf[m // 2]
        else:
            tm = 0.5 * (buf[m // 2 - 1] + buf[m // 2])
        t_master[e] = tm
        for c in range(n_columns):
            row[0, c] = 0.0
        for j in range(lo, hi):
            f = flags[j]
            if (f & FLAG_BELOW_THRESHOLD) != 0:
                continue
            if not (abs(time[j] - tm) <= window):  # NaN time -> out of time
                f |= FLAG_OUT_OF_TIME
                flags[j] = f
            if (f & FLAG_SATURATED) != 0:
                n_flag[0, e] += 1
            if (f & FLAG_PILEUP) != 0:
                n_flag[1, e] += 1
            if (f & FLAG_PEDESTAL_FALLBACK) != 0:
                n_flag[2, e] += 1
            if (f & not_good) != 0:
                continue
            row[0, column[det[j], chan[j]]] += energy[j]
            s = counter_slot[det[j]]
            if s >= 0 and energy[j] >= c_energy[e, s]:
                c_energy[e, s] = energy[j]
                c_time[e, s] = time[j]
        for c in range(ecal_lo):
            sums[e, c] = row[0, c]
        for c in range(ecal_hi, n_columns):
            sums[e, c - n_ecal] = row[0, c]
        if ecal is not None:
            _ecal_event(row, np.int64(0), ecal_lo, e, e_unit, e_sec, e_nx, e_ny, e_pre, e_cx, e_cy, e_resp_e, e_resp_s,
                        e_table, e_pvar, e_stoch, e_floor, grid, obs, inside, scale, e_out, e_cell, shower)


@njit_cached_with(waveform, nogil=True)  # (compiles _event_loop in)
def _event_kernel(offsets, det, chan, time, energy, flags, column, reference, counter_slot,
                  n_columns, n_counters, nominal, window, longest, ecal_lo, ecal_hi, ecal, shower):
    """Per event: master time (median time of the usable reference digits), timing window
    (sets FLAG_OUT_OF_TIME in ``flags``), energy sums per column of the counted digits,
    time of each counter's largest counted digit, flag counts of the digits above threshold.

    The sums of one event are made in a row of ``n_columns`` and used at once: the ECAL
    columns ``ecal_lo:ecal_hi`` give the ECAL quantities (:func:`_ecal_event`, ``ecal`` its
    parameters, None without an ECAL; ``shower``: with the shower chi2), the others are returned, ECAL columns left out
    (``sums`` (n, n_columns - (ecal_hi - ecal_lo))).  The same additions in the same order
    as a whole (n, n_columns) table followed by :func:`_ecal_kernel` (the same bits), without
    that table: 30 MB per 50k events zeroed and read back (issue 11, sixth pass)."""
    n = len(offsets) - 1
    n_ecal = ecal_hi - ecal_lo
    sums = np.empty((n, n_columns - n_ecal))
    row = np.zeros((1, n_columns))
    t_master = np.empty(n)
    c_energy = np.full((n, max(n_counters, 1)), -np.inf)
    c_time = np.full((n, max(n_counters, 1)), np.nan)
    n_flag = np.zeros((3, n), np.int32)
    buf = np.empty(max(longest, 1))
    if ecal is not None:
        e_nx, e_ny = ecal[2], ecal[3]
        e_out = np.empty((6, n))
        e_cell = np.empty((2, n), np.int64)
        work = (np.empty((e_nx, e_ny)), np.empty((3, 3)), np.empty((3, 3), dtype=np.bool_), np.ones(ecal[1]))
    else:
        e_out = np.empty((6, 0))
        e_cell = np.empty((2, 0), np.int64)
        work = None
    # the event loop is _event_loop, compiled without numba's reference counting (it allocates
    # nothing), which _ecal_event is inlined into: no call per event with ~15 counted arrays
    _event_loop(offsets, det, chan, time, energy, flags, column, reference, counter_slot, n_columns, nominal,
                window, ecal_lo, ecal_hi, ecal, work, sums, row, t_master, c_energy, c_time, n_flag, buf, e_out,
                e_cell, shower)
    return sums, t_master, c_time, n_flag, e_out, e_cell


def reconstruct_calo(events, setup: Setup, conditions, source: str = "", *,
                     shower_chi2: bool = True) -> dict[str, np.ndarray]:
    """Calorimeter, veto and counter quantities of ``events`` (see the module docstring).
    ``shower_chi2=False`` leaves ``ecal_shower_chi2`` out (not computed: for analyses that do not
    read it, :data:`na64reco.reco.event.OPTIONAL_FIELDS`).  Events of a data file are refused (see
    :func:`na64reco.reco.event.reconstruct`)."""
    refuse_data_events(events, "reconstruct_calo()")
    check_belong(events, setup, conditions, source, "reconstruct_calo()")
    n = len(events)
    counts, det, chan, adc = flat_digits(events)
    offsets = np.zeros(n + 1, np.int64)
    np.cumsum(counts, out=offsets[1:])
    describe = _describer(events, counts, det, chan)
    digits = reconstruct_digits(det, chan, adc, setup, conditions, source=source, describe=describe)
    cfg = waveform_config(setup)
    lay = _layout(setup)
    flags = digits.flags.copy()
    cal = setup.calorimeters
    if "ECAL" in cal:
        ecal = cal["ECAL"]
        ecal_lo, ecal_hi = lay.offsets["ECAL"], lay.offsets["ECAL"] + ecal.n_channels
        ecal_args = _ecal_args(ecal, conditions.calo["ECAL"])
    else:
        ecal_lo = ecal_hi = 0
        ecal_args = None
    sums, t_master, c_time, n_flag, e_out, e_cell = _event_kernel(
        offsets, digits.det, digits.chan, digits.time, digits.energy, flags, lay.column, lay.reference,
        lay.counter_slot, lay.n_columns, len(lay.counters), float(cfg.nominal_time), float(cfg.timing_window),
        int(counts.max()) if n else 0, ecal_lo, ecal_hi, ecal_args, bool(shower_chi2))
    out: dict[str, np.ndarray] = {}

    def cols(name, width):  # the columns of a detector in ``sums`` (the ECAL columns left out)
        start = lay.offsets[name] - (ecal_hi - ecal_lo if lay.offsets[name] >= ecal_hi else 0)
        return sums[:, start: start + width]

    if "ECAL" in cal:
        out.update(_ecal_outputs(e_out, e_cell))
    else:
        out.update(_absent_ecal(n))
    if not shower_chi2:
        del out["ecal_shower_chi2"]
    for name, key, width in (("HCAL", "hcal", None), ("SRD", "srd", ABSENT_SRD_MODULES)):
        if name in cal:
            e = cols(name, cal[name].n_sections) / GeV
        else:
            e = np.full((n, width or 1), np.nan)
        out[f"{key}_module_energy"] = e
        out[f"{key}_energy"] = e.sum(axis=1)
    out["vhcal_energy"] = cols("VHCAL", 1)[:, 0] / GeV if "VHCAL" in cal else np.full(n, np.nan)
    out.update(_veto_quantities(cal, conditions, cols("VETO", cal["VETO"].n_channels) if "VETO" in cal else None, n))
    for i, name in enumerate(lay.counters):
        out[f"counter_{name}_energy"] = cols(name, 1)[:, 0] / GeV
        out[f"counter_{name}_time"] = c_time[:, i].copy()
    out["event_time"] = t_master
    out["n_saturated"], out["n_pileup"], out["n_pedestal_fallback"] = n_flag
    return out


def _describer(events, counts, det, chan):
    """``describe(i)``: names the event of digit ``i`` in error messages, by its run and event
    number (an index into ``events``, a chunk of a file, would not be the file's entry)."""
    fields = events.fields

    def describe(i):
        e = int(np.searchsorted(np.cumsum(counts), i, side="right"))
        if "run" in fields and "event" in fields:
            return (f"run {int(events['run'][e])} event {int(events['event'][e])} "
                    f"(detector id {det[i]} channel {chan[i]})")
        return f"event {e} of those given (digit {i}; they carry no run and event numbers)"

    return describe


# ----------------------------------------------------------------------------------------
def _response(cond, n_sections: int) -> tuple[np.ndarray, np.ndarray]:
    """ECAL response table as (1/E in 1/GeV, increasing; scales (n_points, n_sections)),
    empty if none.  The scales are interpolated linearly in 1/E of the uncorrected energy
    (the energy lost below the zero suppression varies slowly with E, so scale - 1 ~ 1/E),
    constant outside the table."""
    e = getattr(cond, "response_energy", None)
    if e is None or len(e) == 0:
        return np.zeros(0), np.ones((0, n_sections))
    inv = GeV / np.asarray(e, float)[::-1]
    scale = np.asarray(cond.response_scale, float).reshape(len(e), n_sections)[::-1]
    return np.ascontiguousarray(inv), np.ascontiguousarray(scale)


def _inverse(raw):
    with np.errstate(divide="ignore"):
        return np.where(raw > 0, 1.0 / np.where(raw > 0, raw, 1.0), np.inf)


def _ecal_quantities_reference(setup: Setup, det: Calorimeter, chan_e: np.ndarray, cond=None) -> dict[str, np.ndarray]:
    """ECAL quantities from (n, n_channels) cell energies (MeV), numpy (slow twin of
    :func:`_ecal_kernel`).  The response scales (if any) multiply each section's cells by
    the scale interpolated at the event's uncorrected ECAL energy."""
    n = chan_e.shape[0]
    cells = chan_e.reshape(n, det.n_sections, det.nx, det.ny) / GeV
    resp_u, resp_s = _response(cond, det.n_sections)
    if len(resp_u):
        u = _inverse(cells.sum(axis=(1, 2, 3)))
        scale = np.stack([np.interp(u, resp_u, resp_s[:, k]) for k in range(det.n_sections)], axis=1)
        with np.errstate(invalid="ignore"):  # a non-finite scale times an empty cell: NaN, as the kernel gives
            cells = cells * scale[:, :, None, None]
    pre = np.array([s == "preshower" for s in det.section_names])
    out = {
        "ecal_preshower_energy": cells[:, pre].sum(axis=(1, 2, 3)),
        "ecal_main_energy": cells[:, ~pre].sum(axis=(1, 2, 3)),
    }
    out["ecal_energy"] = out["ecal_preshower_energy"] + out["ecal_main_energy"]
    grid = cells.sum(axis=1)  # (n, nx, ny)
    total = grid.sum(axis=(1, 2))
    has = total > 0
    imax = grid.reshape(n, -1).argmax(axis=1)
    out["ecal_max_cell_ix"] = np.where(has, imax // det.ny, -1)
    out["ecal_max_cell_iy"] = np.where(has, imax % det.ny, -1)
    ix, iy = np.meshgrid(np.arange(det.nx), np.arange(det.ny), indexing="ij")
    cx, cy = det.cell_center(ix, iy)
    with np.errstate(invalid="ignore", divide="ignore"):
        out["ecal_cog_x"] = np.where(has, (grid * cx).sum(axis=(1, 2)) / total, np.nan)
        out["ecal_cog_y"] = np.where(has, (grid * cy).sum(axis=(1, 2)) / total, np.nan)
    out["ecal_shower_chi2"] = shower_chi2(grid, det)
    return out


def _ecal_args(det: Calorimeter, cond=None) -> tuple:
    """The parameters of :func:`_ecal_event` for ``det`` and its conditions ``cond`` (kept on
    ``cond`` for the next call with the same ``det``: ~0.4 ms per call otherwise, the kernel
    only reads them)."""
    cached = getattr(cond, "_na64reco_ecal_args", None)
    if cached is not None and cached[0] is det:
        return cached[1]
    args = _make_ecal_args(det, cond)
    if cond is not None:
        try:
            object.__setattr__(cond, "_na64reco_ecal_args", (det, args))
        except (AttributeError, TypeError):
            pass
    return args


def _make_ecal_args(det: Calorimeter, cond) -> tuple:
    b, stochastic, floor, _ = _profile_params(det)
    table = profile_table(det.cell_size[0], det.cell_size[1], b)
    ix, iy = np.meshgrid(np.arange(det.nx), np.arange(det.ny), indexing="ij")
    cx, cy = det.cell_center(ix, iy)
    pre = np.array([s == "preshower" for s in det.section_names], np.bool_)
    resp_e, resp_s = _response(cond, det.n_sections)
    return (float(GeV), det.n_sections, det.nx, det.ny, pre, np.ascontiguousarray(cx, np.float64),
            np.ascontiguousarray(cy, np.float64), resp_e, np.ascontiguousarray(resp_s), table,
            _profile_variance(table, stochastic), stochastic, floor)


def _ecal_outputs(e_out, e_cell) -> dict[str, np.ndarray]:
    """The ECAL fields from the (6, n) and (2, n) outputs of :func:`_ecal_event`."""
    ps, main, tot, cog_x, cog_y, chi2 = e_out
    return {"ecal_preshower_energy": ps, "ecal_main_energy": main, "ecal_energy": tot,
            "ecal_max_cell_ix": e_cell[0], "ecal_max_cell_iy": e_cell[1], "ecal_cog_x": cog_x, "ecal_cog_y": cog_y,
            "ecal_shower_chi2": chi2}


def _ecal_quantities(setup: Setup, det: Calorimeter, chan_e: np.ndarray, cond=None) -> dict[str, np.ndarray]:
    """Fast version of :func:`_ecal_quantities_reference` (one numba pass over a table of
    cell energies; :func:`reconstruct_calo` computes the same per event, without the table)."""
    return _ecal_outputs(*_ecal_kernel(np.asarray(chan_e, np.float64), *_ecal_args(det, cond)))


@numba.njit(cache=True, nogil=True, inline="always")
def _interp(x, xp, fp, k):
    """np.interp(x, xp, fp[:, k]) for a scalar x (constant outside the table)."""
    m = len(xp)
    if x <= xp[0]:
        return fp[0, k]
    if x >= xp[m - 1]:
        return fp[m - 1, k]
    j = 1
    while xp[j] < x:
        j += 1
    w = (x - xp[j - 1]) / (xp[j] - xp[j - 1])
    return fp[j - 1, k] + w * (fp[j, k] - fp[j - 1, k])


@numba.njit(cache=True, nogil=True)
def _ecal_kernel(chan_e, unit, n_sec, nx, ny, pre, cx, cy, resp_e, resp_s, table, pvar, stochastic, floor):
    n = chan_e.shape[0]
    e_out = np.empty((6, n))
    e_cell = np.empty((2, n), np.int64)
    grid = np.empty((nx, ny))
    obs = np.empty((3, 3))
    inside = np.empty((3, 3), dtype=np.bool_)
    scale = np.ones(n_sec)
    # with the shower chi2, as a bool typed from the start, not the literal True: _ecal_event would be
    # compiled twice (see "Literal integers" in tracking/_jit.py)
    shower = np.bool_(n >= 0)
    for e in range(n):
        _ecal_event(chan_e, e, np.int64(0), e, unit, n_sec, nx, ny, pre, cx, cy, resp_e, resp_s, table, pvar,
                    stochastic, floor, grid, obs, inside, scale, e_out, e_cell, shower)
    return e_out, e_cell


@numba.njit(cache=True, nogil=True, **INLINED, **NO_NRT)
def _ecal_event(cells, r, base, e, unit, n_sec, nx, ny, pre, cx, cy, resp_e, resp_s, table, pvar, stochastic, floor,
                grid, obs, inside, scale, e_out, e_cell, shower):
    """ECAL quantities of event ``e`` from its cell energies ``cells[r, base:base + n_sec * nx * ny]``
    (MeV): ``e_out[:, e]`` = preshower, main and total energy, centre of gravity x and y, shower
    chi2 (:func:`_ecal_outputs`), ``e_cell[:, e]`` = the cell with most energy (-1 if none).
    ``grid``, ``obs``, ``inside``, ``scale``: work arrays (``scale`` all ones without a response
    table).  ``shower`` False: no shower chi2 (NaN; the scan over impact points is ~half of the
    calorimeter event loop).  Allocates nothing; inlined by LLVM (``forceinline``: see "Inlining" in
    tracking/_jit.py) into :func:`_event_loop`, which is compiled without numba's reference counting
    (an inlined call into a function with it counts the arrays bound to its arguments, the reason
    :func:`_event_loop` is split out)."""
    # Empty cells (most of them) are skipped: their term is +-0, which leaves each sum as it is (a
    # sum that starts at +0 and adds finite numbers is never -0, the one value +0 would change),
    # unless the unit is 0 or NaN or the section's scale is not finite (then 0 / unit * scale is NaN)
    n_cell = nx * ny
    unit_ok = abs(unit) > 0.0
    if len(resp_e) > 0:
        raw = 0.0
        for c in range(n_sec * n_cell):
            x = cells[r, base + c]
            if x == 0.0 and unit_ok:
                continue
            raw += x / unit
        u = 1.0 / raw if raw > 0.0 else np.inf
        for k in range(n_sec):
            scale[k] = _interp(u, resp_e, resp_s, k)
    for i in range(nx):
        for j in range(ny):
            grid[i, j] = 0.0
    ps = 0.0
    main = 0.0
    for k in range(n_sec):
        sec = 0.0
        sk = scale[k]
        skip = unit_ok and abs(sk) < np.inf
        for i in range(nx):
            for j in range(ny):
                x = cells[r, base + (k * nx + i) * ny + j]
                if x == 0.0 and skip:
                    continue
                v = x / unit * sk
                sec += v
                grid[i, j] += v
        if pre[k]:
            ps += sec
        else:
            main += sec
    e_out[0, e] = ps
    e_out[1, e] = main
    e_out[2, e] = ps + main
    tot = 0.0
    sx = 0.0
    sy = 0.0
    best = -np.inf
    # int64 from the start, not literal integers: _chi2_around would be compiled twice (see "Literal
    # integers" in tracking/_jit.py)
    bi = np.int64(0)
    bj = np.int64(0)
    for i in range(nx):
        for j in range(ny):
            g = grid[i, j]
            tot += g
            sx += g * cx[i, j]
            sy += g * cy[i, j]
            if g > best:
                best = g
                bi = i
                bj = j
    if tot > 0.0:
        e_cell[0, e] = bi
        e_cell[1, e] = bj
        e_out[3, e] = sx / tot
        e_out[4, e] = sy / tot
    else:
        e_cell[0, e] = -1
        e_cell[1, e] = -1
        e_out[3, e] = np.nan
        e_out[4, e] = np.nan
    if not shower:
        e_out[5, e] = np.nan
    elif abs(tot) < np.inf:  # every cell finite: (bi, bj) is _chi2_one's first maximum
        e_out[5, e] = _chi2_around(grid, bi, bj, table, pvar, stochastic, floor, obs, inside)
    else:  # a cell not finite: _chi2_one finds its maximum by comparisons alone
        e_out[5, e] = _chi2_one(grid, table, pvar, stochastic, floor, obs, inside)


def _profile_params(det: Calorimeter) -> tuple[float, float, float, float]:
    """(b, stochastic term, floor, moliere radius) of the ECAL's expected lateral profile."""
    from na64reco.config import Node

    node = Node(det.params, f"setup calorimeter {det.name}")
    rm = node.quantity("moliere_radius", "length", minimum=0.0)
    containment = node.number("shower_containment", minimum=0.05, maximum=0.999)
    floor = node.number("shower_fraction_floor", minimum=1e-4)
    stochastic = node.number("resolution_stochastic", minimum=0.0)
    if rm <= 0:
        raise ConfigError(f"setup calorimeter {det.name}: moliere_radius must be positive")
    u = _containment_radius(containment)
    return rm / u, stochastic, floor, rm


def _containment_radius(containment: float) -> float:
    """``u`` with ``(1 + u) exp(-u) = 1 - containment``: the radius, in units of the profile's
    ``b``, that holds the fraction ``containment`` of ``exp(-r / b)``.  Bisection to the last bit
    (the left side falls monotonically for u > 0); not scipy's root finder, which would put
    scipy.optimize (~50 MB) into every dask worker for this one number."""
    lo, hi = 1e-6, 100.0
    target = 1.0 - containment
    while True:
        mid = 0.5 * (lo + hi)
        if mid in (lo, hi):
            return mid
        if (1.0 + mid) * math.exp(-mid) > target:
            lo = mid
        else:
            hi = mid


@functools.lru_cache(maxsize=8)
def profile_table(cell_w: float, cell_h: float, b: float, grid: int = PROFILE_GRID, sub: int = 24) -> np.ndarray:
    """Expected energy fractions of the 3x3 cells (PROFILE_GRID^2, 3, 3).

    Row ``g = gx * grid + gy`` is an impact point at ``((gx + 0.5)/grid - 0.5) * cell_w``,
    ``((gy + 0.5)/grid - 0.5) * cell_h`` from the centre of the central cell; fractions are
    of the energy deposited in the 3x3 block (density ``exp(-r/b)``, midpoint rule with
    ``sub`` x ``sub`` points per cell).
    """
    u = ((np.arange(3 * sub) + 0.5) / sub - 1.5)  # in cell units, -1.5..1.5
    px, py = np.meshgrid(u * cell_w, u * cell_h, indexing="ij")
    g = ((np.arange(grid) + 0.5) / grid - 0.5)
    table = np.empty((grid * grid, 3, 3))
    for gx in range(grid):
        for gy in range(grid):
            r = np.hypot(px - g[gx] * cell_w, py - g[gy] * cell_h)
            dens = np.exp(-r / b).reshape(3, sub, 3, sub).sum(axis=(1, 3))
            table[gx * grid + gy] = dens / dens.sum()
    return table


def _profile_variance(table: np.ndarray, stochastic: float) -> np.ndarray:
    """``s^2 F (1 - F)`` per impact point and cell of a :func:`profile_table` (the stochastic
    part of the fraction variance times the energy; same operations, same order as the
    kernel's general path)."""
    return stochastic * stochastic * table * (1.0 - table)


@numba.njit(cache=True, nogil=True, **NO_NRT)
def _chi2_one(g2, table, pvar, stochastic, floor, obs, inside):
    """Shower-shape chi2/ndf of one event's (nx, ny) cell energies (GeV); ``obs``,
    ``inside``: (3, 3) work arrays; ``pvar`` = :func:`_profile_variance` of ``table``.  The 3x3
    block is centred on the first cell with most energy; see :func:`_chi2_around`."""
    nx, ny = g2.shape
    best_i = np.int64(0)  # not literal integers (see _ecal_event)
    best_j = np.int64(0)
    for i in range(nx):
        for j in range(ny):
            if g2[i, j] > g2[best_i, best_j]:
                best_i = i
                best_j = j
    return _chi2_around(g2, best_i, best_j, table, pvar, stochastic, floor, obs, inside)


@numba.njit(cache=True, nogil=True, **INLINED, **NO_NRT)
def _chi2_around(g2, best_i, best_j, table, pvar, stochastic, floor, obs, inside):
    """:func:`_chi2_one` of the 3x3 block around cell (best_i, best_j).  A grid point stops being
    summed as soon as its partial chi2 exceeds the best so far (terms are >= 0: the minimum is
    unchanged).  For a full 3x3 block (fractions need no renormalisation) the variance terms come
    from ``pvar``, the same products as the general path in the same order (identical results,
    one division per cell fewer)."""
    nx, ny = g2.shape
    ng = table.shape[0]
    tot = 0.0
    ncell = 0
    for a in range(3):
        for c in range(3):
            i = best_i + a - 1
            j = best_j + c - 1
            inside[a, c] = 0 <= i < nx and 0 <= j < ny
            obs[a, c] = g2[i, j] if inside[a, c] else 0.0
            if inside[a, c]:
                tot += obs[a, c]
                ncell += 1
    if tot <= 0.0 or ncell <= 3:
        return np.nan
    best = np.inf
    inv_tot = 1.0 / tot
    ff = floor * floor
    # grid points from the central one on (g = ng // 2, ..., ng - 1, 0, ..., ng // 2 - 1: a good
    # bound early), counted unsigned (no negative-index test per table access) and wrapped by a
    # subtraction, not a modulo (an integer division per point)
    n_g = _u(ng)
    half = n_g // _u(2)
    if ncell == 9:  # the usual full block: fractions and variance terms from the tables
        for a in range(3):
            for c in range(3):
                obs[a, c] *= inv_tot  # observed fractions
        for q in range(n_g):
            g = q + half
            if g >= n_g:
                g -= n_g
            # the central cell's term alone is a lower bound of the sum below (its terms are
            # >= 0, and a rounded sum of non-negative numbers is >= each of them): a point whose
            # central term reaches the best so far cannot lower it and is skipped.  Same value
            # (same expression) as its term in the sum, where it is reused: the minimum and its
            # bits are unchanged; the row-wise stop alone summed ~500 of the 729 terms per event,
            # the central cell dominating the chi2 near the minimum (fifth pass, issue 11)
            d = obs[1, 1] - table[g, 1, 1]
            t11 = d * d / (pvar[g, 1, 1] * inv_tot + ff)
            if t11 >= best:
                continue
            chi2 = 0.0
            for a in range(3):
                for c in range(3):
                    if a == 1 and c == 1:
                        chi2 += t11
                    else:
                        d = obs[a, c] - table[g, a, c]
                        chi2 += d * d / (pvar[g, a, c] * inv_tot + ff)
                    if chi2 > best:
                        break
                if chi2 > best:
                    break
            if chi2 < best:
                best = chi2
        return best / (ncell - 3)
    for q in range(n_g):
        g = q + half
        if g >= n_g:
            g -= n_g
        norm = 0.0  # the fractions are renormalised to the cells inside
        for a in range(3):
            for c in range(3):
                if inside[a, c]:
                    norm += table[g, a, c]
        chi2 = 0.0
        for a in range(3):
            for c in range(3):
                if inside[a, c]:
                    fe = table[g, a, c] / norm
                    var = stochastic * stochastic * fe * (1.0 - fe) * inv_tot + ff
                    d = obs[a, c] * inv_tot - fe
                    chi2 += d * d / var
            if chi2 > best:
                break
        if chi2 < best:
            best = chi2
    return best / (ncell - 3)


@numba.njit(cache=True, nogil=True)
def _shower_chi2_kernel(grid_e, table, pvar, stochastic, floor):
    n = grid_e.shape[0]
    out = np.full(n, np.nan)
    obs = np.empty((3, 3))
    inside = np.empty((3, 3), dtype=np.bool_)
    for e in range(n):
        out[e] = _chi2_one(grid_e[e], table, pvar, stochastic, floor, obs, inside)
    return out


def shower_chi2(grid_e: np.ndarray, det: Calorimeter) -> np.ndarray:
    """Shower-shape chi2/ndf per event from (n, nx, ny) cell energies in GeV (see module doc)."""
    b, stochastic, floor, _ = _profile_params(det)
    table = profile_table(det.cell_size[0], det.cell_size[1], b)
    return _shower_chi2_kernel(np.ascontiguousarray(grid_e, dtype=np.float64), table,
                               _profile_variance(table, stochastic), stochastic, floor)


def shower_chi2_reference(grid_e: np.ndarray, det: Calorimeter) -> np.ndarray:
    """Slow twin of :func:`shower_chi2` (numpy per event)."""
    b, stochastic, floor, _ = _profile_params(det)
    table = profile_table(det.cell_size[0], det.cell_size[1], b)
    out = []
    for g in np.asarray(grid_e, dtype=float):
        i, j = np.unravel_index(np.argmax(g), g.shape)
        padded = np.pad(g, 1, constant_values=np.nan)
        block = padded[i: i + 3, j: j + 3]
        inside = np.isfinite(block)
        tot = np.nansum(block)
        if tot <= 0 or inside.sum() <= 3:
            out.append(np.nan)
            continue
        expected = np.where(inside, table, 0.0)
        expected = expected / expected.sum(axis=(1, 2), keepdims=True)
        var = stochastic**2 * expected * (1 - expected) / tot + floor**2
        chi2 = np.where(inside, (np.nan_to_num(block) / tot - expected) ** 2 / var, 0.0).sum(axis=(1, 2))
        out.append(chi2.min() / (inside.sum() - 3))
    return np.asarray(out)
