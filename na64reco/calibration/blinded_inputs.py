"""The events of a data run that a calibration may use: none from inside the signal box.

A calibration publishes constants fitted to the events it reads, and prints what it fitted.
Read on a physics-trigger data run rich in box events, a momentum-scale fit of the outgoing
muons *is* their mean momentum (blinding review, stop 48: a data-like signal run gave a field
integral of 5.2 T m for 1.4, i.e. the box events' mean p_out of ~43 GeV).  So, of a *data*
file, the events that carry the physics trigger (the analysis sample: every selection's
first cut) are reconstructed first, with the calibration's base conditions and with the
reference inputs (:func:`na64reco.selection.blinding.reference_protected`), and those not
provably outside the protected region are withheld, as the reco export withholds them.

Events of the calibration and random triggers are used whole: a beam run's box region holds
no physics-trigger event, and withholding there would bias the constants (a tag-and-probe
efficiency loses the events whose missing probe plane left the outgoing track unmeasured).
Simulated files are used whole.
"""

from __future__ import annotations

import awkward as ak
import numpy as np

from na64reco.io.raw import TRIGGER_BITS, is_data_events, release_data_events
from na64reco.reco.event import reconstruct
from na64reco.selection.blinding import protected_mask, reference_protected


def physics_trigger(events) -> np.ndarray:
    """Events whose trigger word has the physics bit."""
    return (ak.to_numpy(events["trigger"]).astype(np.int64) & TRIGGER_BITS["physics"]) != 0


def calibration_events(events, setup, conditions, source: str = ""):
    """``(events a calibration may use, how many were withheld)``: all of a simulated file; of a
    data file all but its physics-trigger events inside the protected region of ``setup`` (by
    the reconstruction with ``conditions`` or with the reference inputs; not measured counts as
    inside).  The events kept still carry the data mark."""
    if not is_data_events(events) or len(events) == 0:
        return events, 0
    physics = np.flatnonzero(physics_trigger(events))
    if physics.size == 0:
        return events, 0
    released = release_data_events(events[physics])

    def reco(ev, s, c, stages=None):
        return reconstruct(ev, s, c, source=source, stages=stages)

    own = reco(released, setup, conditions)
    hidden = np.asarray(protected_mask(own, setup.name), bool)
    reference = reference_protected(released, setup, conditions, reco, reco=own)
    if reference is not None:
        hidden |= reference
    keep = np.ones(len(events), bool)
    keep[physics[hidden]] = False
    return events[keep], int(np.count_nonzero(hidden))
