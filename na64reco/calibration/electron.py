"""ECAL shower response from electron-beam runs (the EM energy scale and its linearity).

Why: the DAQ never writes a channel whose amplitude is below ``msadc.zero_suppression``
(8 ADC x 25 MeV/ADC = 200 MeV per NA64e ECAL cell), so the outer cells of a shower are
lost: a few % of a 100 GeV shower, ~10 % at 10 GeV, more in the preshower (4 X0 with the
shower still narrow in depth but spread laterally).  The per-cell MIP gains cannot see
this.  As in a real test-beam calibration, full-energy beam electrons of known energy fix
the response of each section.

For every beam energy E_b (one or more runs; written with ``simulate --trigger
calibration --beam-energy E``, or real calibration-trigger runs):

1. per event the uncorrected section sums ``S_k`` (GeV) of the ECAL (reconstructed with
   the base conditions, without any previous response table);
2. a two-parameter fit ``E_b = sum_k a_k S_k`` (linear least squares over the events of
   the core: within ``core_sigmas`` robust sigmas -- 1.4826 x median absolute deviation --
   of the median of the corrected sum, iterated; tails from leakage, hadrons and pile-up
   drop out).  The section weights come from the event-to-event fluctuations of the
   preshower/main split;
3. the scales are normalised so that the *peak* (mean of the corrected sum within
   +-2 sigma, iterated) is exactly ``E_b``; the point is placed at the peak of the
   uncorrected sum.

The table (uncorrected peak energies, scales) is written as ``response_energy_gev`` /
``response_scale`` of the ECAL in a new calorimeter payload; the reconstruction
interpolates the scales linearly in 1/E of the event's uncorrected energy E, constant
outside the table (the energy lost below the threshold, ~1-1.5 GeV from 10 to 100 GeV in
the simulation, varies slowly, so scale - 1 goes roughly as 1/E).  One point below the
scan, at ``calibration.electron.unity_below`` of the setup (1 GeV), has scale 1:
MIP-like deposits (one cell per section, nothing below the zero suppression to recover)
keep the MIP scale of the gains.  Showers between that point and
the lowest scan energy are therefore only partly corrected: scan down to the lowest
energy that matters (the NA64e signal box is E_ECAL < 50 GeV).

The calibration is to the beam energy: lateral and rear leakage (0.2-0.8 % of the
deposit in the simulation) are included in the scale, as in data.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import awkward as ak
import numpy as np
from hepunits import GeV

from na64reco.constants import ECAL_ELECTRON_RESPONSE_RANGE, ECAL_SECTION_SCALE_RANGE
from na64reco.errors import NA64Error
from na64reco.geometry import Setup
from na64reco.io.raw import TRIGGER_BITS, release_data_events
from na64reco.setup_document import setup_document
from na64reco.stats.robust import median_and_sigma

#: defaults of the ``calibration.electron`` section of a setup YAML
DEFAULTS = {"core_sigmas": 2.5, "unity_below_gev": 1.0, "min_events": 300}


def electron_params(setup: Setup) -> dict:
    """``calibration.electron`` of the setup YAML (core_sigmas, unity_below_gev, min_events)."""
    root = setup_document(setup.source)
    out = dict(DEFAULTS)
    if root.has("calibration") and root.node("calibration").has("electron"):
        n = root.node("calibration").node("electron")
        out["core_sigmas"] = n.number("core_sigmas", DEFAULTS["core_sigmas"], minimum=1.0)
        out["unity_below_gev"] = n.quantity("unity_below", "energy", DEFAULTS["unity_below_gev"] * GeV,
                                            minimum=0.0) / GeV
        out["min_events"] = n.integer("min_events", DEFAULTS["min_events"], minimum=10)
    return out


def without_response(conditions):
    """``conditions`` with the ECAL response table removed (uncorrected section sums)."""
    if "ECAL" not in conditions.calo:
        return conditions
    c = conditions.calo["ECAL"]
    bare = dataclasses.replace(c, response_energy=np.zeros(0), response_scale=np.zeros((0, 1)))
    return dataclasses.replace(conditions, calo={**conditions.calo, "ECAL": bare})


class SectionSums:
    """Uncorrected ECAL section sums (GeV) of the events of electron runs, per beam energy."""

    def __init__(self, setup: Setup, conditions):
        if "ECAL" not in setup.calorimeters:
            raise NA64Error(f"setup {setup.name} has no ECAL")
        self.setup, self.conditions = setup, without_response(conditions)
        self.det = setup.calorimeters["ECAL"]
        self.parts: dict[float, list[np.ndarray]] = {}
        self.sources: dict[float, list[str]] = {}  # beam energy -> files

    def add(self, events, beam_energy_gev: float, source: str = "") -> int:
        """Add the events of one file taken at ``beam_energy_gev``; returns how many were used.

        Random triggers are skipped; everything else enters (the fit's core selection
        removes non-electrons)."""
        from na64reco.reco.calo import digits_of_events

        if "trigger" in events.fields:
            keep = (ak.to_numpy(events["trigger"]).astype(np.int64) & TRIGGER_BITS["random"]) == 0
            events = events[keep]
        n = len(events)
        # calibration runs are data on a real detector: the mark is lifted here; what this returns
        # (per-event section sums, :meth:`sums`) is meant for electron-beam runs (docs/unblinding.md)
        digits, ev, _ = digits_of_events(release_data_events(events), self.setup, self.conditions, source)
        sel = digits.good & (digits.det == self.det.id)
        section = self.det.cell_of_channel(digits.chan[sel])[0]
        idx = ev[sel] * self.det.n_sections + section
        s = np.bincount(idx, weights=digits.energy[sel], minlength=n * self.det.n_sections)
        s = s.reshape(n, self.det.n_sections) / GeV
        self.parts.setdefault(float(beam_energy_gev), []).append(s)
        self.sources.setdefault(float(beam_energy_gev), []).append(source)
        return n

    def energies(self) -> list[float]:
        return sorted(self.parts)

    def sums(self, beam_energy_gev: float) -> np.ndarray:
        return np.concatenate(self.parts[beam_energy_gev])


@dataclass(frozen=True)
class ResponsePoint:
    beam_energy: float  # GeV
    raw_peak: float  # GeV, peak of the uncorrected sum
    scale: np.ndarray  # per section
    scale_error: np.ndarray  # per section (statistical, from the fit)
    resolution: float  # sigma/E of the corrected sum (core)
    n_events: int
    n_core: int


def peak(x: np.ndarray, n_sigma: float = 2.0, iterations: int = 5) -> tuple[float, float]:
    """(peak, sigma): mean and r.m.s. within +-n_sigma (iterated from the median and MAD)."""
    mu, sig = median_and_sigma(x)
    for _ in range(iterations):
        core = np.abs(x - mu) < n_sigma * max(sig, 1e-12)
        if core.sum() < 3:
            break
        mu, sig = float(x[core].mean()), float(x[core].std())
    return mu, sig


def fit_response_point(sums: np.ndarray, beam_energy: float, core_sigmas: float = 2.5,
                       iterations: int = 6) -> ResponsePoint:
    """Section scales at one beam energy (see the module docstring); ``sums`` (n, n_sections) GeV."""
    sums = np.asarray(sums, float)
    n, n_sec = sums.shape
    use = sums.sum(axis=1) > 0
    x = sums[use]
    scale = np.ones(n_sec)
    core = np.ones(len(x), bool)
    for _ in range(iterations):
        e = x @ scale
        med, sig = median_and_sigma(e)
        core = np.abs(e - med) < core_sigmas * max(sig, 1e-12)
        a = x[core]
        # sections with (almost) no energy cannot be fitted: keep their previous scale
        live = a.sum(axis=0) > 1e-6 * a.sum()
        sol, *_ = np.linalg.lstsq(a[:, live], np.full(len(a), float(beam_energy)), rcond=None)
        scale = scale.copy()
        scale[live] = sol
    pk, sig = peak(x @ scale)
    scale = scale * beam_energy / pk
    a = x[core]
    resid = a @ scale - beam_energy
    err = np.full(n_sec, math.nan)
    live = a.sum(axis=0) > 1e-6 * a.sum()
    if core.sum() > n_sec + 1:
        cov = np.linalg.pinv(a[:, live].T @ a[:, live]) * resid.var()
        err[live] = np.sqrt(np.diag(cov))
    raw_pk, _ = peak(x.sum(axis=1))
    return ResponsePoint(float(beam_energy), raw_pk, scale, err, sig / pk, int(n), int(core.sum()))


def check_response_point(p: ResponsePoint, sources=()) -> None:
    """Refuse a response or section scale outside the plausible ranges
    (``ECAL_ELECTRON_RESPONSE_RANGE``, ``ECAL_SECTION_SCALE_RANGE`` of :mod:`na64reco.constants`):
    the runs were not electrons of ``p.beam_energy`` (another particle, a wrong beam energy, wrong gains)."""
    where = f"{', '.join(map(str, sources)) or 'the runs'} at {p.beam_energy:g} GeV"
    hint = "not electron-beam runs of that energy? check --beam-energy, the beam particle and the gains"
    lo, hi = ECAL_ELECTRON_RESPONSE_RANGE
    response = p.raw_peak / p.beam_energy
    if not lo <= response <= hi:
        raise NA64Error(f"electron calibration: {where}: the uncorrected ECAL peak is {p.raw_peak:.4g} GeV, a "
                        f"response of {response:.3g}; expected {lo:g}-{hi:g} of the beam energy "
                        f"(na64reco.constants.ECAL_ELECTRON_RESPONSE_RANGE): {hint}")
    lo, hi = ECAL_SECTION_SCALE_RANGE
    for k, scale in enumerate(p.scale):
        if not lo <= scale <= hi:
            raise NA64Error(f"electron calibration: {where}: ECAL section {k} scale {scale:.4g}; expected "
                            f"{lo:g}-{hi:g} (na64reco.constants.ECAL_SECTION_SCALE_RANGE): {hint}")


def response_table(points: list[ResponsePoint], unity_below_gev: float) -> tuple[np.ndarray, np.ndarray]:
    """(energies GeV, scales (n_points, n_sections)) sorted by the uncorrected peak, with the
    unit-scale point at ``unity_below_gev`` if it lies below the lowest peak."""
    pts = sorted(points, key=lambda p: p.raw_peak)
    energy = [p.raw_peak for p in pts]
    scale = [p.scale for p in pts]
    if pts and 0 < unity_below_gev < energy[0]:
        energy.insert(0, unity_below_gev)
        scale.insert(0, np.ones_like(pts[0].scale))
    if np.any(np.diff(energy) <= 0):
        seen = ", ".join(f"{p.beam_energy:g} GeV -> {p.raw_peak:.3f}" for p in pts)
        raise NA64Error("electron calibration: the peaks of the uncorrected ECAL sum do not increase "
                        f"with the beam energy ({seen})")
    return np.asarray(energy), np.asarray(scale)
