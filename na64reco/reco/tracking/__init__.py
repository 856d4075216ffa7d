"""Tracking: APV/straw digits -> hits -> tracks -> momenta.

Layers (each module imports only those above it in this list):

``_jit``       numba disk cache keyed on the sources of every module a kernel compiles in
``apv``        APV25 samples -> strip amplitude and time
``demux``      micromegas de-multiplexing of fired channels into strip clusters
``clusters``   digits -> hits in global coordinates (alignment applied)
``tracks``     track search and kick/straight fits per station projection
``resolution`` analytic expected momentum resolution of the configured geometry
``stage``      :func:`reconstruct_tracks` (the stage function) and :func:`event_display`
"""

from na64reco.reco.tracking.stage import event_display, reconstruct_tracks

__all__ = ["reconstruct_tracks", "event_display"]
