"""Effective field integral of each magnet from beam runs at a known beam energy.

The bend-view fit of a station measures the deflection ``kappa = K BL / p`` of each track
(``K`` = :data:`na64reco.constants.MOMENTUM_PER_TESLA_METRE`).  With the beam momentum
``p = E0 (1 + delta)`` (``delta`` Gaussian of the setup's relative spread ``s``) minus the
energy ``L`` the muon left in the calorimeters upstream of the magnet (measured event by
event: ECAL, VETO, VHCAL for MS2 of na64mu; nothing for the beam station),
``E[1 / p] = 1 / (E0 - L) * (1 + s^2 E0^2 / (E0 - L)^2)`` to second order, so

    ``BL = sum_t kappa_t / (K sum_t E[1 / p_t])``

over the tracks (one candidate in the view; kappa outliers beyond 5 robust sigma
dropped, iterated; events that left more than :data:`MAX_LOSS_GEV` upstream dropped
on their calorimeter energy, not on kappa, so no bias).  Its statistical error is
``std(kappa) / sqrt(N) / (K mean E[1/p])``; the beam energy itself is taken as known.
The measured BL is *effective*: it absorbs the kink weak mode of the alignment
(:mod:`na64reco.calibration.alignment`), i.e. it is the field integral in the frame of
the reference planes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from hepunits import GeV, m, tesla

from na64reco.calibration.beam_tracks import BeamRun, reconstruct_views
from na64reco.conditions import RunConditions, tracker_content
from na64reco.constants import MOMENTUM_PER_TESLA_METRE
from na64reco.errors import NA64Error
from na64reco.geometry import Setup
from na64reco.io.raw import release_data_events
from na64reco.reco.calo import reconstruct_calo
from na64reco.stats.robust import robust_sigma
from na64reco.units import MRAD_PER_RAD

#: events whose calorimeters upstream of the magnet measured more are not used (GeV): the
#: radiative tail, where E[1/p] is not the second-order formula
MAX_LOSS_GEV = 3.0
CLIP_SIGMAS = 5.0
MIN_TRACKS = 100


@dataclass
class MagnetScale:
    magnet: str
    field_integral_tm: float
    error_tm: float
    previous_tm: float
    n_tracks: int
    mean_loss_gev: float


def upstream_loss(calo: dict, setup: Setup, z: float) -> np.ndarray:
    """Energy (GeV) measured per event in the calorimeters and paddles upstream of ``z``."""
    n = len(next(iter(calo.values())))
    loss = np.zeros(n)
    for name, det in setup.calorimeters.items():
        key = f"{name.lower()}_energy"
        if det.kind in ("calorimeter", "modules", "paddles") and det.z < z and key in calo:
            loss += np.nan_to_num(np.asarray(calo[key], dtype=float))
    return loss


def expected_inverse_momentum(e0: float, loss, spread: float):
    """E[1 / p] (1/GeV) of a beam particle of energy ``e0`` (GeV, relative Gaussian spread ``spread``)
    that left ``loss`` (GeV) upstream: ``1 / (e0 - L) * (1 + spread^2 e0^2 / (e0 - L)^2)`` (module doc)."""
    e = e0 - np.asarray(loss, float)
    return (1.0 + spread * spread * e0 * e0 / (e * e)) / e


def clipped(kappa: np.ndarray) -> np.ndarray:
    """Mask of ``kappa`` within CLIP_SIGMAS robust sigma of the median (iterated)."""
    ok = np.isfinite(kappa)
    for _ in range(5):
        if not ok.any():  # no track: the caller's count says so (no median of nothing)
            break
        med = np.median(kappa[ok])
        sig = robust_sigma(kappa[ok], centre=med)
        new = np.isfinite(kappa) & (np.abs(kappa - med) <= CLIP_SIGMAS * sig)
        if np.array_equal(new, ok):
            break
        ok = new
    return ok


def measure_scales(runs: list[BeamRun], setup: Setup, base: RunConditions) -> list[MagnetScale]:
    """Effective field integral of each magnet with a bend view (module doc)."""
    kap: dict[str, list] = {}
    inv: dict[str, list] = {}
    loss_all: dict[str, list] = {}
    s = setup.beam.momentum_spread
    for run in runs:
        _, vts, _ = reconstruct_views(run, setup, base)
        calo = reconstruct_calo(release_data_events(run.events), setup, base, str(run.path))  # constants only
        e0 = run.beam_energy_gev
        for vt in vts:
            if not vt.view.bend:
                continue
            name = vt.view.station
            loss = upstream_loss(calo, setup, setup.magnets[name].center_z)[vt.event]
            ok = (vt.n_tracks == 1) & (loss < MAX_LOSS_GEV)
            kap.setdefault(name, []).append(vt.par[ok, 2] / MRAD_PER_RAD)  # rad
            inv.setdefault(name, []).append(expected_inverse_momentum(e0, loss[ok], s) / GeV)  # 1/MeV
            loss_all.setdefault(name, []).append(loss[ok])
    out = []
    for name in kap:
        kappa, expect, loss = (np.concatenate(d[name]) for d in (kap, inv, loss_all))
        ok = clipped(kappa)
        if ok.sum() < MIN_TRACKS:
            raise NA64Error(f"momentum-scale: magnet {name} has {int(ok.sum())} beam tracks (< {MIN_TRACKS}): "
                            "give more beam events")
        unit = MOMENTUM_PER_TESLA_METRE * tesla * m
        k = kappa[ok]
        bl = k.sum() / (unit * expect[ok].sum())
        err = k.std(ddof=1) / np.sqrt(k.size) / (unit * expect[ok].mean())
        out.append(MagnetScale(name, float(bl), float(err), base.magnet(setup, name).field_integral / (tesla * m),
                               int(k.size), float(loss[ok].mean())))
    return out


def summary(scales: list[MagnetScale], n_events: int) -> str:
    lines = [f"momentum-scale: {n_events} events"]
    for sc in scales:
        rel = sc.field_integral_tm / sc.previous_tm - 1
        lines.append(f"  {sc.magnet}: field integral {sc.field_integral_tm:.5f} +- {sc.error_tm:.5f} T m "
                     f"({1e2 * sc.error_tm / sc.field_integral_tm:.3f} %), {1e2 * rel:+.3f} % vs the base "
                     f"{sc.previous_tm:.5f} T m; {sc.n_tracks} tracks, mean upstream loss {sc.mean_loss_gev:.3f} GeV")
    return "\n".join(lines)


def scale_content(setup: Setup, base: RunConditions, scales: list[MagnetScale]) -> dict:
    """The new ``tracker`` payload body: the base's with the measured field integrals."""
    body = tracker_content(setup, base)
    mags = body.setdefault("magnets", {})
    for sc in scales:
        mags[sc.magnet] = {"field_integral_tm": float(f"{sc.field_integral_tm:.7g}")}
    return body
