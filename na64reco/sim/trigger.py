"""Trigger decision from true deposits, following ``Setup.trigger``.

Terms are ANDed.  A counter term ``NAME`` fires when the largest true deposit in one of
its channels exceeds ``counter_threshold`` x its MIP most probable value; ``!NAME`` is
the veto (it must not fire).  Energy terms ``DET[.section] > Q`` / ``< Q`` compare the
true energy summed over the detector (or section).  The hardware discriminates analog
sums; using true energies neglects the read-out noise (a few MeV), documented choice.

Calibration trigger (``simulate(..., trigger="calibration")``): only the setup's counter
terms of the *beam* counters and vetoes (detectors upstream of the target ECAL), without
its energy terms and without the deflected-muon counters behind the target (NA64mu S4,
Smu), so that every beam particle seen by the beam counters is written -- e.g.
full-energy electrons for the ECAL response calibration, which the NA64e physics trigger
(``ECAL < 95 GeV``) rejects, or unscattered 160 GeV muons for the momentum
mis-reconstruction study, which the NA64mu physics trigger (deflected muons) rejects.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from na64reco.geometry import Setup, Trigger

TRIGGERS = ("physics", "calibration")


def calibration_trigger(trigger: Trigger, setup: Setup | None = None) -> Trigger:
    """``trigger`` without its energy terms; with ``setup``, also without the counters placed
    beside the beam for deflected muons (``deflected`` in the setup): the beam counters and
    vetoes stay.  The DAQ dead time and thresholds are those of ``trigger``."""
    terms = tuple(t for t in trigger.terms if t.minimum is None and t.maximum is None)
    if setup is not None:
        terms = tuple(t for t in terms if not setup.detector(t.detector).deflected_magnet)
    return dataclasses.replace(trigger, terms=terms)


def detector_sums(setup: Setup, n_events: int, ev, det_id, chan, energy, name: str,
                  section: str | None = None) -> np.ndarray:
    """Per-event true energy (MeV) in detector ``name`` (optionally one section)."""
    det = setup.detector(name)
    m = det_id == det.id
    if section is not None:
        sec = det.cell_of_channel(chan[m])[0]
        m2 = sec == det.section_names.index(section)
        return np.bincount(ev[m][m2], weights=energy[m][m2], minlength=n_events)
    return np.bincount(ev[m], weights=energy[m], minlength=n_events)


def counter_max(setup: Setup, n_events: int, ev, det_id, energy, name: str) -> np.ndarray:
    """Per-event largest single-channel deposit (MeV) of detector ``name``."""
    det = setup.detector(name)
    m = det_id == det.id
    out = np.zeros(n_events)
    np.maximum.at(out, ev[m], energy[m])
    return out


def trigger_mask(setup: Setup, n_events: int, ev, det_id, chan, energy) -> np.ndarray:
    """Boolean array over the events: True where every trigger term is satisfied.

    ``ev, det_id, chan, energy`` are the (aggregated or raw) true deposits of the spill.
    """
    ok = np.ones(n_events, bool)
    trig = setup.trigger
    for term in trig.terms:
        det = setup.detector(term.detector)
        if term.minimum is None and term.maximum is None:
            fired = (
                counter_max(setup, n_events, ev, det_id, energy, term.detector) > trig.counter_threshold * det.mip_mpv
            )
            ok &= ~fired if term.veto else fired
        else:
            e = detector_sums(setup, n_events, ev, det_id, chan, energy, term.detector, term.section)
            if term.minimum is not None:
                ok &= e > term.minimum
            if term.maximum is not None:
                ok &= e < term.maximum
    return ok
